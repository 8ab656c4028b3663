"""playbooks/backup.yml (role cap_backup) against the real sandbox: OpenBao, SeaweedFS, CAP source.

One successful backup (module fixture `first_backup`, with a Pushgateway) is checked from
every side: the archive and its sidecars, decryption through Vault Transit, every file
against the manifest, the signature, no secret inside, both S3 buckets, latest.json,
metrics, audit and the lock. The other tests force one failure each (second S3
destination, Vault or S3 down, a held lock, a missing source) or back up while a writer
keeps inserting into the registry. Every run writes into its own output directory, so
retention in one run never removes another test's backup.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ansible.module_utils import cap_lock, cap_sign
from sandbox import ports as sandbox_ports
from tests.integration import backup_checks as bc
from tests.integration.playbook_runner import output_of, run_playbook

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

BACKUP = "playbooks/backup.yml"


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_backup(sandbox, output_dir, timestamp=None, **extra):
    """Back up into output_dir; extra are more extra vars. Returns (proc, seconds)."""
    extra_vars = {"cap_backup_output_dir": str(output_dir)}
    if timestamp:
        extra_vars["cap_backup_timestamp"] = timestamp
    extra_vars.update(extra)
    started = time.monotonic()
    proc = run_playbook(sandbox.state_dir, BACKUP, extra_vars=extra_vars)
    return proc, time.monotonic() - started


def destinations(sandbox, **second):
    """The inventory's two S3 destinations, with second's keys changed in the second one."""
    common = {"prefix": "backups/", "endpoint_url": sandbox["s3_endpoint"],
              "region": sandbox["s3_region"], "credentials_file": sandbox["s3_credentials_file"],
              "encrypt": False}
    primary = dict(common, name="primary", bucket=sandbox["s3_bucket"])
    replica = dict(common, name="cross-region", bucket=sandbox["s3_replica_bucket"])
    replica.update(second)
    return [primary, replica]


def assert_failed(proc, *messages):
    """The run failed, and its output (Ansible prints errors on either stream) has messages."""
    assert proc.returncode != 0, "the run should have failed:\n" + output_of(proc)
    text = proc.stdout + proc.stderr
    for message in messages:
        assert message in text, "%r not in the output:\n%s" % (message, output_of(proc))


# ---------------------------------------------------------------------------
# Pushgateway

@pytest.fixture(scope="module")
def pushgateway():
    """Debian's prometheus-pushgateway on a free loopback port, without persistence."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (.ci/run installs it)")
    port = sandbox_ports.allocate(["pushgateway"])["pushgateway"]
    url = "http://127.0.0.1:%d" % port
    proc = subprocess.Popen(
        [binary, "--web.listen-address=127.0.0.1:%d" % port, "--persistence.file="],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("pushgateway did not start: %s" % (proc.stderr.read()
                                                                  if proc.poll() is not None else "timeout"))
            time.sleep(0.2)
        yield url
    finally:
        os.kill(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            proc.wait(timeout=10)


def label_set(labels):
    """'{a="1",b="2"}' as a frozenset of its pairs, so label order does not matter."""
    inner = labels.strip("{}")
    return frozenset(inner.split(",")) if inner else frozenset()


def pushed_samples(url):
    """{(name, label pairs): value} of the cap_backup_* samples the Pushgateway serves."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        text = answer.read().decode("utf-8")
    samples = {}
    for line in text.splitlines():
        if line.startswith("cap_backup_"):
            match = bc.SAMPLE_RE.match(line)
            assert match, line
            samples[(match.group(1), label_set(match.group(2) or ""))] = float(match.group(3))
    return samples


# ---------------------------------------------------------------------------
# One successful backup, checked from every side

@pytest.fixture(scope="module")
def first_backup(sandbox, tmp_path_factory, request):
    """A backup with the inventory's settings (Transit encryption, both buckets), no fixed
    timestamp, into a fresh output directory, pushing to a Pushgateway when one exists."""
    out = tmp_path_factory.mktemp("first-backup")
    extra = {}
    gateway = None
    if shutil.which("prometheus-pushgateway"):
        gateway = request.getfixturevalue("pushgateway")
        extra["cap_backup_pushgateway_url"] = gateway
    metrics_before = bc.read_metrics(bc.metrics_path(sandbox))
    audit_before = bc.read_audit(bc.audit_path(sandbox))
    started = time.time()
    proc, _seconds = run_backup(sandbox, out, **extra)
    ended = time.time()
    assert proc.returncode == 0, output_of(proc)
    archives = [n for n in os.listdir(out) if n.endswith(".enc")]
    assert len(archives) == 1, "expected one archive in %s, found %s" % (out, os.listdir(out))
    archive = out / archives[0]
    match = bc.ARCHIVE_RE.match(archive.name)
    backup_id = "backup-" + match.group(1) if match else None
    return {
        "proc": proc, "out": out, "archive": archive, "backup_id": backup_id,
        "started": started, "ended": ended, "gateway": gateway,
        "metrics_before": metrics_before, "metrics_after": bc.read_metrics(bc.metrics_path(sandbox)),
        "audit_before": audit_before, "audit_after": bc.read_audit(bc.audit_path(sandbox)),
        "latest": bc.latest_pointers(sandbox),
        "pushed": pushed_samples(gateway) if gateway else None,
    }


@pytest.fixture(scope="module")
def opened(sandbox, first_backup, tmp_path_factory):
    """The first backup decrypted with the Transit-unwrapped key and extracted."""
    return bc.OpenedBackup(sandbox, first_backup["archive"], tmp_path_factory.mktemp("opened"))


def test_archive_is_named_after_the_run_and_private(first_backup):
    archive = first_backup["archive"]
    match = bc.ARCHIVE_RE.match(archive.name)
    assert match, "%s is not cap-backup-YYYYMMDD-HHMMSS.tar.gz.enc" % archive.name
    stamp = match.group(1)
    assert bc.utc_stamp(first_backup["started"]) <= stamp <= bc.utc_stamp(first_backup["ended"])
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    # Nothing unencrypted, no staging and no lock is left beside it.
    names = set(os.listdir(first_backup["out"]))
    stem = archive.name[:-len(".tar.gz.enc")]
    assert {archive.name, archive.name + ".sha3", stem + ".manifest.json",
            stem + ".manifest.json.sig"} <= names
    assert not any(n.endswith((".tar.gz", ".tar")) for n in names), names
    assert ".cap-backup.lock" not in names
    # The default scratch directory goes with the staging tree inside it.
    assert ".work" not in names, "scratch left behind: %s" % os.listdir(first_backup["out"] / ".work")


def test_sidecar_holds_the_archive_sha3(first_backup):
    archive = first_backup["archive"]
    sidecar = Path(str(archive) + ".sha3").read_text()
    assert sidecar == "%s  %s\n" % (bc.sha3_of_file(archive), archive.name)


def test_manifest_copy_is_valid_and_its_signature_verifies(sandbox, first_backup, opened):
    archive = first_backup["archive"]
    copy = archive.parent / (archive.name[:-len(".tar.gz.enc")] + ".manifest.json")
    manifest = json.loads(copy.read_text())
    assert manifest["version"] == "backup.manifest.v1"
    assert manifest["backup_id"] == first_backup["backup_id"]
    stamp = first_backup["backup_id"][len("backup-"):]
    assert manifest["created_at"] == "%s-%s-%sT%s:%s:%sZ" % (
        stamp[0:4], stamp[4:6], stamp[6:8], stamp[9:11], stamp[11:13], stamp[13:15])
    assert manifest["encryption"] == "aes-256-gcm" and manifest["compression"] == "gzip"
    # The copy is the manifest inside the archive, byte for byte.
    assert copy.read_bytes() == (opened.root / "backup.manifest.json").read_bytes()
    result = cap_sign.verify_file(str(copy), signature_path=str(copy) + ".sig",
                                  trusted_keys_dir=sandbox["backup_trusted_keys_dir"],
                                  kid=sandbox["backup_signing_kid"])
    assert result["verified"] is True
    # The copy's signature is the archive's signature.
    assert Path(str(copy) + ".sig").read_bytes() == (opened.root / "backup.manifest.json.sig").read_bytes()


def test_archive_decrypts_with_the_transit_key_and_matches_its_manifest(sandbox, opened):
    assert opened.header.key_id == "transit:%s/%s" % (sandbox["vault_transit_mount"],
                                                     sandbox["vault_transit_key"])
    assert opened.header.wrapped_key.startswith("vault:v1:")
    assert opened.extracted["compression"] == "gzip"
    problems = bc.check_tree_against_manifest(opened.manifest, opened.root)
    assert not problems, "\n".join(problems)
    paths = {e["path"] for e in opened.manifest["files"]}
    for required in ("registry.sqlite", "policy_store.json", "config/helm/values-prod.yaml",
                     "config/openapi/openapi.yaml", "config/prometheus/alerts.yml"):
        assert required in paths, "%s missing from the manifest: %s" % (required, sorted(paths))
    assert any(p.startswith("keys/metadata") for p in paths)
    # The policy store is the source's file; the registry holds every seeded entry.
    source = Path(sandbox["cap_source_data_dir"])
    assert (opened.root / "policy_store.json").read_bytes() == \
        (source / "build" / "policy_store.json").read_bytes()
    with sqlite3.connect(str(opened.root / "registry.sqlite")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
    assert count == sandbox["cap_source_seed_summary"]["entries"]


def test_archive_holds_no_private_key_log_temp_file_or_secret(sandbox, opened):
    members = opened.extracted["files"]
    assert not [m for m in members if m.endswith(".ed25519")], members
    assert not [m for m in members if m.startswith(("logs/", "tmp/")) or "/logs/" in m
                or "/tmp/" in m], members
    source = Path(sandbox["cap_source_data_dir"])
    # The source does have what must stay out, so the checks above mean something.
    assert (source / "keys" / "company.ed25519").is_file()
    assert any((source / "logs").iterdir()) and any((source / "tmp").iterdir())
    secrets = bc.sandbox_secrets(sandbox)
    assert bc.find_secrets((source / "keys" / "company.ed25519").read_bytes(), secrets) == \
        ["keys/company.ed25519", "vault:cap/keys/company:private_key"]
    found = {}
    for member in members:
        hits = bc.find_secrets((opened.root / member).read_bytes(), secrets)
        if hits:
            found[member] = hits
    assert not found, "secrets in the backup: %s" % found
    assert bc.find_secrets(opened.tar_bytes, secrets) == []


def test_both_buckets_hold_every_object_with_its_hash_and_size(sandbox, first_backup):
    archive = first_backup["archive"]
    stem = archive.name[:-len(".tar.gz.enc")]
    local = [archive, Path(str(archive) + ".sha3"), archive.parent / (stem + ".manifest.json"),
             archive.parent / (stem + ".manifest.json.sig")]
    for bucket in (sandbox["s3_bucket"], sandbox["s3_replica_bucket"]):
        for path in local:
            key = "backups/%s/%s" % (first_backup["backup_id"], path.name)
            body, metadata = bc.s3_object(sandbox, bucket, key)
            assert body is not None, "s3://%s/%s is missing" % (bucket, key)
            assert body == path.read_bytes(), "s3://%s/%s differs from %s" % (bucket, key, path)
            assert metadata.get("sha3-256") == "0x" + bc.sha3_of_file(path), (bucket, key, metadata)
            assert metadata.get("size-bytes") == str(path.stat().st_size), (bucket, key, metadata)


def test_latest_json_names_this_backup_in_both_buckets(first_backup):
    archive = first_backup["archive"]
    for bucket, raw in first_backup["latest"].items():
        assert raw is not None, "no backups/latest.json in %s" % bucket
        latest = json.loads(raw)
        assert latest["backup_id"] == first_backup["backup_id"], (bucket, latest)
        assert latest["archive"] == archive.name
        assert latest["archive_sha3_256"] == "0x" + bc.sha3_of_file(archive)
        assert latest["prefix"] == "backups/%s/" % first_backup["backup_id"]


def test_success_is_counted_in_the_textfile(first_backup, sandbox):
    before, after = first_backup["metrics_before"], first_backup["metrics_after"]
    assert bc.attempts(after, "success") == bc.attempts(before, "success") + 1
    assert bc.attempts(after, "failure") == bc.attempts(before, "failure")
    last = after[("cap_backup_last_success_timestamp", "")]
    assert int(first_backup["started"]) <= last <= first_backup["ended"] + 1
    assert after[("cap_backup_size_bytes", "")] == first_backup["archive"].stat().st_size
    assert 0 < after[("cap_backup_duration_seconds", "")] <= first_backup["ended"] - first_backup["started"]
    check = bc.promtool_check(bc.metrics_path(sandbox))
    assert check.returncode == 0, check.stdout + check.stderr


def test_success_writes_one_audit_line_without_secrets(first_backup, sandbox):
    before, after = first_backup["audit_before"], first_backup["audit_after"]
    assert after[:len(before)] == before
    assert len(after) == len(before) + 1
    line = after[-1]
    assert line["result"] == "success" and line["error"] == ""
    assert line["backup_id"] == first_backup["backup_id"]
    assert line["archive"] == str(first_backup["archive"])
    assert line["archive_sha3_256"] == "0x" + bc.sha3_of_file(first_backup["archive"])
    assert line["encrypted"] is True
    for bucket in (sandbox["s3_bucket"], sandbox["s3_replica_bucket"]):
        assert "s3://%s/backups/%s/%s" % (bucket, first_backup["backup_id"],
                                          first_backup["archive"].name) in line["stored"]
    raw = Path(bc.audit_path(sandbox)).read_bytes()
    assert bc.find_secrets(raw, bc.sandbox_secrets(sandbox)) == []


def test_pushgateway_serves_the_textfile_metrics(first_backup):
    if first_backup["gateway"] is None:
        pytest.skip("prometheus-pushgateway is not installed (.ci/run installs it)")
    grouping = {'instance="localhost"', 'job="cap_backup"'}
    expected = {(name, label_set(labels) | grouping): value
                for (name, labels), value in first_backup["metrics_after"].items()}
    pushed = first_backup["pushed"]
    assert set(pushed) == set(expected), "pushed %s\ntextfile %s" % (sorted(pushed), sorted(expected))
    for key, value in expected.items():
        assert pushed[key] == pytest.approx(value), key
    assert ("cap_backup_last_success_timestamp", frozenset(grouping)) in pushed


def test_lock_is_released_after_the_run(first_backup):
    assert cap_lock.read_holder(str(first_backup["out"] / ".cap-backup.lock")) is None


# ---------------------------------------------------------------------------
# latest.json moves only when every destination succeeded

def test_latest_stays_when_the_second_bucket_does_not_exist(sandbox, first_backup, tmp_path):
    before = bc.latest_pointers(sandbox)
    assert all(before.values()), "a successful backup should have written latest.json"
    stamp = bc.new_timestamp()
    vars_file = tmp_path / "destinations.json"
    vars_file.write_text(json.dumps({"cap_backup_s3_destinations": destinations(
        sandbox, bucket="cap-backups-does-not-exist")}))
    proc = run_playbook(sandbox.state_dir, BACKUP, extra_vars=[
        "@%s" % vars_file, {"cap_backup_output_dir": str(tmp_path), "cap_backup_timestamp": stamp}])
    assert_failed(proc, "S3 destination cross-region", "bucket cap-backups-does-not-exist",
                  "is not reachable")
    assert bc.latest_pointers(sandbox) == before
    assert bc.backup_files(tmp_path) == [], "preflight failed, yet files were written"


def test_latest_stays_when_the_second_upload_fails(sandbox, first_backup, tmp_path):
    """The second destination answers the preflight listing but refuses the upload
    (SeaweedFS has no server-side encryption, so encrypt: true makes every PUT fail):
    the first bucket already holds the objects, and still latest.json does not move."""
    before = bc.latest_pointers(sandbox)
    assert all(before.values())
    stamp = bc.new_timestamp()
    proc, _ = run_backup(sandbox, tmp_path, stamp,
                         cap_backup_s3_destinations=destinations(sandbox, encrypt=True))
    assert_failed(proc, "Upload of cap-backup-%s.tar.gz.enc to s3://%s/backups/backup-%s/ "
                        "(cross-region) failed" % (stamp, sandbox["s3_replica_bucket"], stamp))
    body, _meta = bc.s3_object(sandbox, sandbox["s3_bucket"],
                               "backups/backup-%s/cap-backup-%s.tar.gz.enc" % (stamp, stamp))
    assert body is not None, "the first destination should have received the archive"
    after = bc.latest_pointers(sandbox)
    assert after == before
    for raw in after.values():
        assert json.loads(raw)["backup_id"] != "backup-" + stamp
    assert bc.find_secrets(proc.stdout + proc.stderr, bc.sandbox_secrets(sandbox)) == []


# ---------------------------------------------------------------------------
# A failed run: metrics and audit

def test_failure_is_counted_and_last_success_does_not_move(sandbox, tmp_path):
    metrics_before = bc.read_metrics(bc.metrics_path(sandbox))
    audit_before = bc.read_audit(bc.audit_path(sandbox))
    missing = tmp_path / "app" / "build" / "registry.sqlite"
    proc, _ = run_backup(sandbox, tmp_path, bc.new_timestamp(),
                         cap_backup_registry_path=str(missing))
    assert_failed(proc, "Backup source %s does not exist or is not readable" % missing)
    after = bc.read_metrics(bc.metrics_path(sandbox))
    assert bc.attempts(after, "failure") == bc.attempts(metrics_before, "failure") + 1
    assert bc.attempts(after, "success") == bc.attempts(metrics_before, "success")
    for gauge in ("cap_backup_last_success_timestamp", "cap_backup_size_bytes"):
        assert after.get((gauge, "")) == metrics_before.get((gauge, "")), gauge
    check = bc.promtool_check(bc.metrics_path(sandbox))
    assert check.returncode == 0, check.stdout + check.stderr
    audit = bc.read_audit(bc.audit_path(sandbox))
    assert audit[:len(audit_before)] == audit_before and len(audit) == len(audit_before) + 1
    line = audit[-1]
    assert line["result"] == "failure"
    assert str(missing) in line["error"]
    assert line["archive_sha3_256"] == "" and line["stored"] == []
    raw = Path(bc.audit_path(sandbox)).read_bytes() + Path(bc.metrics_path(sandbox)).read_bytes()
    assert bc.find_secrets(raw, bc.sandbox_secrets(sandbox)) == []


# ---------------------------------------------------------------------------
# Unreachable services fail the preflight, before anything is written

def test_unreachable_vault_fails_in_preflight(sandbox, tmp_path):
    port = closed_port()
    proc, _ = run_backup(sandbox, tmp_path, bc.new_timestamp(),
                         cap_backup_vault_url="http://127.0.0.1:%d" % port)
    assert_failed(proc, "failed at Fail when Vault does not answer",
                  "Vault at http://127.0.0.1:%d is not usable (no answer)" % port)
    assert bc.backup_files(tmp_path) == []
    assert not (tmp_path / ".cap-backup.lock").exists()
    assert bc.find_secrets(proc.stdout + proc.stderr, bc.sandbox_secrets(sandbox)) == []


def test_unreachable_s3_fails_in_preflight_without_showing_credentials(sandbox, tmp_path):
    port = closed_port()
    dests = destinations(sandbox)
    dests[0]["endpoint_url"] = "http://127.0.0.1:%d" % port
    proc, _ = run_backup(sandbox, tmp_path, bc.new_timestamp(), cap_backup_s3_destinations=dests)
    assert_failed(proc, "failed at Fail when an S3 destination is unreachable",
                  "S3 destination primary (http://127.0.0.1:%d, bucket %s) is not reachable"
                  % (port, sandbox["s3_bucket"]))
    assert bc.backup_files(tmp_path) == []
    assert not (tmp_path / ".cap-backup.lock").exists()
    # The failure names the destination; the credentials it was checked with stay hidden.
    assert bc.find_secrets(proc.stdout + proc.stderr, bc.sandbox_secrets(sandbox)) == []


# ---------------------------------------------------------------------------
# The lock

def test_held_lock_fails_fast_and_writes_nothing(sandbox, tmp_path):
    lock = str(tmp_path / ".cap-backup.lock")
    cap_lock.acquire(lock, "backup-20251110-120000#otherrun", info={"host": "elsewhere"})
    try:
        proc, seconds = run_backup(sandbox, tmp_path, bc.new_timestamp(),
                                   cap_backup_s3_destinations=[])
        assert_failed(proc, "is held by backup-20251110-120000#otherrun",
                      "another backup is running")
        assert bc.backup_files(tmp_path) == []
        # The other run's lock is left alone.
        assert cap_lock.read_holder(lock)["owner"] == "backup-20251110-120000#otherrun"
        # No waiting: it fails right after the preflight (a whole backup takes ~30 s).
        assert seconds < 60, "took %.1f s" % seconds
    finally:
        cap_lock.release(lock, "backup-20251110-120000#otherrun")


def test_two_runs_of_the_same_backup_id_do_not_both_take_the_lock(sandbox, tmp_path):
    stamp = bc.new_timestamp()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _i: run_backup(sandbox, tmp_path, stamp,
                                                   cap_backup_s3_destinations=[])[0], range(2)))
    ok = [p for p in runs if p.returncode == 0]
    failed = [p for p in runs if p.returncode != 0]
    assert len(ok) == 1 and len(failed) == 1, "\n\n".join(output_of(p) for p in runs)
    assert_failed(failed[0], "is held by backup-%s#" % stamp)
    archive = tmp_path / ("cap-backup-%s.tar.gz.enc" % stamp)
    assert (tmp_path / (archive.name + ".sha3")).read_text() == \
        "%s  %s\n" % (bc.sha3_of_file(archive), archive.name)
    assert cap_lock.read_holder(str(tmp_path / ".cap-backup.lock")) is None
    work = tmp_path / ".work"
    assert not work.exists() or not os.listdir(work)


# ---------------------------------------------------------------------------
# A backup while the registry is being written

WRITER = r"""
import base64, os, secrets, sqlite3, sys, time
db, stop, ready, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
policy_hash, kid = conn.execute("SELECT policy_hash, kid FROM registry_entries LIMIT 1").fetchone()
done = 0
while not os.path.exists(stop):
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(batch):
        conn.execute(
            "INSERT INTO registry_entries (manifest_hash, proof_hash, policy_hash, kid, signature,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ("0x" + secrets.token_hex(32), "0x" + secrets.token_hex(32), policy_hash, kid,
             base64.b64encode(secrets.token_bytes(64)).decode(), "2026-01-01T00:00:00Z"))
    conn.execute("COMMIT")
    done += 1
    if done == 1:
        open(ready, "w").close()
    time.sleep(0.002)
print(done)
"""
BATCH = 7


def copy_source(sandbox, dest):
    """A copy of the source instance's data directory; the registry copied with SQLite's backup
    API. Other test modules share the session sandbox and compare against the seeded source,
    so the writer inserts into this copy, never into the source itself."""
    source = Path(sandbox["cap_source_data_dir"])
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("registry.sqlite*"))
    src = sqlite3.connect("file:%s?mode=ro" % (source / "build" / "registry.sqlite"), uri=True)
    dst = sqlite3.connect(str(dest / "build" / "registry.sqlite"))
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return dest


def test_backup_under_concurrent_writes_is_a_consistent_snapshot(sandbox, tmp_path):
    app = copy_source(sandbox, tmp_path / "app")
    registry = app / "build" / "registry.sqlite"
    out = tmp_path / "out"
    out.mkdir()
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(registry), str(stop), str(ready),
                               str(BATCH)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert writer.poll() is None, writer.stderr.read()
            assert time.monotonic() < deadline, "the writer never committed"
            time.sleep(0.05)
        proc, _ = run_backup(sandbox, out, bc.new_timestamp(), cap_backup_app_dir=str(app),
                             cap_backup_s3_destinations=[])
        assert writer.poll() is None, "the writer stopped during the backup: " + writer.stderr.read()
    finally:
        stop.touch()
        try:
            stdout, stderr = writer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(writer.pid, 9)
            stdout, stderr = writer.communicate(timeout=10)
    assert writer.returncode == 0, stderr
    assert proc.returncode == 0, output_of(proc)
    assert int(stdout) > 1
    archive = next(out.glob("cap-backup-*.tar.gz.enc"))
    opened = bc.OpenedBackup(sandbox, archive, tmp_path / "opened")
    problems = bc.check_tree_against_manifest(opened.manifest, opened.root)
    assert not problems, "\n".join(problems)
    seeded = sandbox["cap_source_seed_summary"]["entries"]
    with sqlite3.connect(str(opened.root / "registry.sqlite")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        in_backup = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
    with sqlite3.connect(str(registry)) as conn:
        live = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
    # Whole transactions only: every writer transaction inserts BATCH rows.
    assert (in_backup - seeded) % BATCH == 0, (in_backup, seeded)
    # The snapshot was taken while the writer ran: after its first commit, before its last.
    assert seeded + BATCH <= in_backup < live, (seeded, in_backup, live)
