"""The DR drill (playbooks/drill.yml) on the sandbox: a pass, a stale backup, a failed
restore. One backup made here is the latest; the other two backups are built from it.

Stale backup: rather than shrinking the objective (-e cap_drill_rpo_seconds=1, which
only tests a comparison), the test publishes what a stopped backup job leaves behind: a
genuine, signed and Transit-encrypted backup taken two hours ago as latest.json's
backup. The drill must restore it correctly and still fail, because its data is older
than the one-hour RPO. Failed restore: a backup whose registry holds one entry with a
broken signature, otherwise valid and signed; the restore places the private key in the
drill target, then fails at step 7 and rolls back. The drill must report the failure
with its reason, remove the target and leave no key material anywhere.
"""

from __future__ import annotations

import datetime
import html.parser
import json
import shutil
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from ansible.module_utils.cap_report import validate_report
from tests.integration.restore_helpers import (
    BACKUP_PREFIX,
    backup_stamp,
    encrypt_like_backup,
    key_material_below,
    key_temp_files,
    latest_pointer,
    one_report,
    output_of,
    play,
    reseal,
    s3_delete_prefix,
    s3_get,
    s3_put,
    target_dir,
    targets,
    text_of,
    upload_backup,
    utc_now,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def run_drill(sandbox, report_dir, **extra_vars):
    extra = {"cap_drill_report_dir": str(report_dir)}
    extra.update(extra_vars)
    proc = play(sandbox, "playbooks/drill.yml", extra)
    report, path = one_report(report_dir, "drill-*/drill-report.json")
    return proc, report, path


def drill_metrics(sandbox):
    """name{labels} -> value of <state>/metrics/cap_drill.prom."""
    values = {}
    for line in (sandbox.state_dir / "metrics" / "cap_drill.prom").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def assert_nothing_left(sandbox, report, report_dir):
    """No drill target, no target data, no key copy, no decrypted archive or key file."""
    drill_targets = [n for n in targets(sandbox) if n.startswith("cap-drill-")]
    assert drill_targets == [], "drill targets left in endpoints.json: %s" % drill_targets
    assert not target_dir(sandbox, report["target"]["name"]).exists()
    assert not list((sandbox.state_dir / "targets").glob("cap-drill-*"))
    restore_report, _dir = one_report(report_dir, "restore-*/restore-report.json")
    assert key_temp_files(restore_report["restore_id"]) == []
    assert key_material_below(sandbox.state_dir / "drill", report_dir) == []
    assert report["teardown"]["done"] is True and report["teardown"]["key_material_removed"] is True
    return restore_report


@pytest.fixture(scope="module")
def passed_drill(sandbox, backup, tmp_path_factory):
    proc, report, path = run_drill(sandbox, tmp_path_factory.mktemp("drill-pass"))
    assert proc.returncode == 0, output_of(proc)
    return {"proc": proc, "report": report, "dir": path, "metrics": drill_metrics(sandbox)}


def test_drill_passes_with_every_check_green(sandbox, backup, passed_drill):
    report = passed_drill["report"]
    validate_report(report, "drill")
    assert report["result"] == "passed" and report["error"] is None
    assert report["backup"]["backup_id"] == backup.backup_id
    assert report["source"]["url"] == sandbox["cap_source_url"]
    red = {c["id"]: c["detail"] for c in report["checks"] if c["passed"] is not True}
    assert not red, red
    ids = {c["id"] for c in report["checks"]}
    assert {"drill.policies", "drill.registry", "hash.policy_hash", "hash.manifest_hash",
            "smoke.etag"} <= ids
    for key, target in (("rto", 1800), ("rpo", 3600)):
        objective = report["objectives"][key]
        assert objective["met"] is True and objective["target_seconds"] == target
        assert 0 <= objective["measured_seconds"] < target
    assert report["differences_total"] == 0
    assert all(s["status"] == "ok" for s in report["steps"])
    assert passed_drill["metrics"]["cap_drill_last_result"] == 1


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def test_drill_report_is_written_in_four_formats(passed_drill):
    path = passed_drill["dir"]
    names = sorted(p.name for p in path.glob("drill-report.*"))
    assert names == ["drill-report.html", "drill-report.json", "drill-report.md", "drill-report.xml"]

    markdown = (path / "drill-report.md").read_text()
    assert "PASSED" in markdown and "- [x]" in markdown and "- [ ]" not in markdown

    page = (path / "drill-report.html").read_text()
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert "<svg" in page and "svg" in parser.tags and "html" in parser.tags
    assert "<script" not in page

    root = ET.parse(str(path / "drill-report.xml")).getroot()
    assert root.tag == "testsuites"
    assert root.get("failures") == "0" and root.get("errors") == "0"
    suites = root.findall("testsuite")
    assert suites and all(s.get("failures") == "0" for s in suites)
    cases = root.findall(".//testcase")
    assert len(cases) >= len(passed_drill["report"]["checks"])
    assert not root.findall(".//failure")


def test_drill_leaves_no_target_and_no_key_material(sandbox, passed_drill):
    restore_report = assert_nothing_left(sandbox, passed_drill["report"], passed_drill["dir"])
    assert restore_report["result"] == "passed"


class Published:
    """Changes to the backup bucket that a test undoes: latest.json and forged backups."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.original = s3_get(sandbox, BACKUP_PREFIX + "latest.json")
        self.prefixes = []

    def track(self, pointer):
        self.prefixes.append(pointer["prefix"])
        return pointer

    def make_latest(self, pointer):
        s3_put(self.sandbox, BACKUP_PREFIX + "latest.json",
               (json.dumps(pointer, indent=4, sort_keys=True) + "\n").encode())

    def undo(self):
        s3_put(self.sandbox, BACKUP_PREFIX + "latest.json", self.original)
        for prefix in self.prefixes:
            s3_delete_prefix(self.sandbox, prefix)


@pytest.fixture
def bucket(sandbox):
    changes = Published(sandbox)
    yield changes
    changes.undo()


def forged_backup(sandbox, opened, tmp_path, moment, change=None):
    """A backup taken at `moment`, built from the module's backup: optionally changed,
    manifest rebuilt and signed with the backup service's key, encrypted with a fresh
    Transit data key, uploaded with its sidecar. Returns the latest.json pointer."""
    backup_id, created_at = backup_stamp(moment)
    work = tmp_path / backup_id
    shutil.copytree(str(opened), str(work))
    if change is not None:
        change(work)
    reseal(sandbox, work, backup_id=backup_id, created_at=created_at)
    archive = encrypt_like_backup(sandbox, work, tmp_path / ("cap-%s.tar.gz.enc" % backup_id))
    return upload_backup(sandbox, archive, backup_id, created_at)


def test_stale_backup_fails_the_rpo_objective(sandbox, backup, opened, bucket, tmp_path):
    pointer = bucket.track(forged_backup(sandbox, opened, tmp_path, utc_now() - datetime.timedelta(hours=2)))
    bucket.make_latest(pointer)
    assert latest_pointer(sandbox)["backup_id"] == pointer["backup_id"]

    proc, report, path = run_drill(sandbox, tmp_path / "reports")
    assert proc.returncode != 0, output_of(proc)
    assert "RPO objective missed" in text_of(proc), output_of(proc)
    validate_report(report, "drill")
    assert report["result"] == "failed"
    assert report["backup"]["backup_id"] == pointer["backup_id"]
    rpo = report["objectives"]["rpo"]
    assert rpo["met"] is False and rpo["measured_seconds"] >= 7200, rpo
    assert report["objectives"]["rto"]["met"] is True
    assert report["error"].startswith("RPO objective missed: the backup was ") and "under 3600 s" in report["error"]
    # Nothing else was wrong: the two-hour-old backup restored and compared cleanly.
    assert all(c["passed"] is True for c in report["checks"])
    assert report["differences_total"] == 0
    assert_nothing_left(sandbox, report, path)
    metrics = drill_metrics(sandbox)
    assert metrics["cap_drill_last_result"] == 0
    assert metrics['cap_drill_objective_met{objective="rpo"}'] == 0


def break_one_signature(work):
    conn = sqlite3.connect(str(work / "registry.sqlite"))
    with conn:
        conn.execute("UPDATE registry_entries SET proof_hash = ? WHERE id = 42", ("0x" + "7" * 64,))
    conn.close()


def test_failed_restore_is_reported_and_torn_down(sandbox, opened, bucket, tmp_path):
    pointer = bucket.track(forged_backup(sandbox, opened, tmp_path, utc_now() - datetime.timedelta(minutes=1),
                                         change=break_one_signature))

    proc, report, path = run_drill(sandbox, tmp_path / "reports", cap_drill_backup_id=pointer["backup_id"])
    assert proc.returncode != 0, output_of(proc)
    validate_report(report, "drill")
    assert report["result"] == "failed"
    target = report["target"]["name"]
    assert target.startswith("cap-drill-")
    assert "Restore into %s failed" % target in report["error"], report["error"]
    assert "Signatures verify with restored public keys" in report["error"], report["error"]
    assert "DR drill %s failed" % report["drill_id"] in text_of(proc)

    restore_report = assert_nothing_left(sandbox, report, path)
    steps = {s["name"]: s["status"] for s in restore_report["steps"]}
    # The private key was in the target before the failure; the rollback removed it.
    assert steps["restore_private_key"] == "ok" and steps["verify_completeness"] == "failed"
    assert restore_report["teardown"]["done"] is True
    assert restore_report["teardown"]["detail"].startswith("rolled back: target removed")
    failed = [c["id"] for c in report["checks"] if c["passed"] is False]
    assert "signature.verify" in failed
    assert drill_metrics(sandbox)["cap_drill_last_result"] == 0
