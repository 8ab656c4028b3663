"""Restores that must fail, and how: before the target is touched, or with a rollback.

Each bad backup is made so that exactly one of the restore's checks can catch it:
a flipped byte (the sidecar), a key file that is not the archive's, a header whose
wrapped data key Vault unwraps to another key (decryption), a registry swapped in
under a recomputed manifest with the old signature (the signature), Vault on a closed
port (the preflight), a backup id with nothing in S3 (the download). Each of those
must stop with a message naming the problem, before any target exists. A backup that
passes every check but whose policy store the API refuses (409) fails after deploy and
must be rolled back: no target, no data directory, no key copy, logs and differences
kept. The source instance is compared before and after every run.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3

import pytest

from ansible.module_utils import cap_crypt, cap_manifest, cap_sign
from ansible.module_utils.cap_sign import CapSignError
from tests.integration.restore_helpers import (
    closed_port,
    copy_file,
    fingerprint,
    key_material_below,
    key_temp_files,
    one_report,
    output_of,
    pack,
    play,
    reseal,
    source_build,
    target_dir,
    targets,
    text_of,
    transit_data_key,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture
def forge(opened, tmp_path):
    """A private copy of the extracted backup to change."""
    copy = tmp_path / "forged"
    shutil.copytree(str(opened), str(copy))
    return copy


@pytest.fixture
def restore(sandbox, tmp_path):
    """restore(target, **extra_vars) -> (proc, report, report dir); a target the run leaves
    behind is removed afterwards so that one failing test cannot break the next."""
    names = []

    def run(target, **extra_vars):
        names.append(target)
        report_dir = tmp_path / ("reports-" + target)
        extra = {"cap_restore_target": target, "cap_restore_report_dir": str(report_dir)}
        extra.update(extra_vars)
        proc = play(sandbox, "playbooks/restore.yml", extra)
        report, path = one_report(report_dir, "restore-*/restore-report.json")
        return proc, report, path

    yield run
    for name in names:
        if name in targets(sandbox):
            sandbox.cli("target-down", name)


@pytest.fixture
def source_before(sandbox):
    return fingerprint(source_build(sandbox))


def assert_stopped_before_target(sandbox, target, proc, report, source_before, *needles):
    """The play failed naming the problem, and nothing was deployed or changed."""
    assert proc.returncode != 0, output_of(proc)
    text = text_of(proc)
    for needle in needles:
        assert needle in text, "%r not in the play's output\n%s" % (needle, output_of(proc))
        assert needle in " ".join(report["error"].split()), report["error"]
    assert target not in targets(sandbox), "a target was registered in endpoints.json"
    assert not target_dir(sandbox, target).exists(), "a target data directory was written"
    assert fingerprint(source_build(sandbox)) == source_before, "the source instance changed"
    assert report["result"] == "failed"
    assert "deploy" not in [s["name"] for s in report["steps"]]
    assert report["teardown"]["detail"] == "nothing deployed"


def test_tampered_archive_is_refused_by_its_sidecar(sandbox, backup, restore, source_before, tmp_path):
    archive = copy_file(backup.archive, tmp_path / "copy" / backup.archive.name)
    copy_file(backup.sidecar, tmp_path / "copy" / backup.sidecar.name)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))

    target = "rf-tampered"
    proc, report, _ = restore(target, cap_restore_source="local", cap_restore_archive=str(archive))
    assert_stopped_before_target(sandbox, target, proc, report, source_before,
                                 "SHA3-256 of %s is" % archive, "the sidecar %s.sha3 says" % archive,
                                 "the archive is corrupt or incomplete")


def test_archive_under_another_key_file_is_refused(sandbox, forge, restore, source_before, tmp_path):
    right, wrong = cap_crypt.generate_key(), cap_crypt.generate_key()
    archive = pack(forge, tmp_path / "cap-backup-keyfile.tar.gz.enc", key=right)
    key_file = tmp_path / "wrong.key"
    key_file.write_text(base64.b64encode(wrong).decode() + "\n")
    key_file.chmod(0o600)
    # The archive itself is sound: the right key decrypts it.
    cap_crypt.decrypt_file(str(archive), str(tmp_path / "check.tar.gz"), right)
    (tmp_path / "check.tar.gz").unlink()

    target = "rf-wrong-key"
    proc, report, _ = restore(target, cap_restore_source="local", cap_restore_archive=str(archive),
                              cap_restore_decryption_key_source="file",
                              cap_restore_decryption_key_file=str(key_file))
    assert_stopped_before_target(sandbox, target, proc, report, source_before,
                                 "wrong key: archive %s encrypted with key id %s"
                                 % (archive, cap_crypt.derive_key_id(right)))


def test_archive_whose_wrapped_key_was_replaced_is_refused(sandbox, forge, restore, source_before,
                                                            tmp_path):
    """Transit unwraps the header's data key; a header carrying another backup's wrapped
    key yields a key that does not authenticate the first chunk."""
    key, _wrapped = transit_data_key(sandbox)
    _other_key, other_wrapped = transit_data_key(sandbox)
    key_id = "transit:%s/%s" % (sandbox["vault_transit_mount"], sandbox["vault_transit_key"])
    archive = pack(forge, tmp_path / "cap-backup-rewrapped.tar.gz.enc", key=key, key_id=key_id,
                   wrapped_key=other_wrapped)
    cap_crypt.decrypt_file(str(archive), str(tmp_path / "check.tar.gz"), key)
    (tmp_path / "check.tar.gz").unlink()

    target = "rf-rewrapped"
    proc, report, _ = restore(target, cap_restore_source="local", cap_restore_archive=str(archive))
    assert_stopped_before_target(sandbox, target, proc, report, source_before,
                                 "Decryption of %s failed" % archive,
                                 "authentication failed at chunk 0", "wrong key or corrupted data")


def test_manifest_changed_after_signing_is_refused(sandbox, forge, restore, source_before, tmp_path):
    """A registry swapped in under a manifest whose hashes were recomputed: every file
    matches the manifest, only the backup service's signature can tell."""
    conn = sqlite3.connect(str(forge / "registry.sqlite"))
    with conn:
        conn.execute("UPDATE registry_entries SET proof_hash = ? WHERE id = 7", ("0x" + "5" * 64,))
    conn.close()
    old = json.loads((forge / "backup.manifest.json").read_text())
    manifest = cap_manifest.build_manifest(
        str(forge), old["backup_id"], old["created_at"], old["system_version"],
        created_by=old["created_by"], compression=old["compression"], encryption=old["encryption"])
    (forge / "backup.manifest.json").write_bytes(cap_manifest.serialize_manifest(manifest))
    assert cap_manifest.verify_tree(manifest, str(forge))["ok"], "the files must match the manifest"
    with pytest.raises(CapSignError):
        cap_sign.verify_file(str(forge / "backup.manifest.json"),
                             trusted_keys_dir=sandbox["backup_trusted_keys_dir"])
    archive = pack(forge, tmp_path / "cap-backup-resigned.tar.gz")

    target = "rf-bad-signature"
    proc, report, _ = restore(target, cap_restore_source="local", cap_restore_archive=str(archive))
    assert_stopped_before_target(sandbox, target, proc, report, source_before,
                                 "signature does not match", "backup.manifest.json",
                                 "file changed after signing")


def test_unreachable_vault_stops_the_restore(sandbox, restore, source_before):
    port = closed_port()
    target = "rf-no-vault"
    proc, report, _ = restore(target, cap_restore_vault_url="http://127.0.0.1:%d" % port)
    assert_stopped_before_target(sandbox, target, proc, report, source_before,
                                 "Vault at http://127.0.0.1:%d cannot provide secret/cap/keys/company" % port,
                                 "Nothing was changed")


def test_missing_backup_in_s3_stops_the_restore(sandbox, restore, source_before):
    target = "rf-missing"
    proc, report, _ = restore(target, cap_restore_backup_id="backup-19990101-000000")
    assert_stopped_before_target(sandbox, target, proc, report, source_before,
                                 "No backup archive under s3://%s/backups/backup-19990101-000000/"
                                 % sandbox["s3_bucket"])


def test_failure_after_deploy_rolls_the_target_back(sandbox, forge, restore, source_before, tmp_path):
    """A backup that passes every integrity check, signed with the backup service's own
    key, whose policy store holds one policy with a wrong ir_hash: the API answers 409 at
    step 5, after the target was deployed and its registry restored."""
    store = json.loads((forge / "policy_store.json").read_text())
    victim = store["policies"][3]
    victim["ir_hash"] = "0x" + ("0" if victim["ir_hash"][2] != "0" else "1") + victim["ir_hash"][3:]
    (forge / "policy_store.json").write_text(json.dumps(store, sort_keys=True))
    reseal(sandbox, forge)
    cap_sign.verify_file(str(forge / "backup.manifest.json"),
                         trusted_keys_dir=sandbox["backup_trusted_keys_dir"])
    archive = pack(forge, tmp_path / "cap-backup-bad-store.tar.gz")

    target = "rf-rollback"
    proc, report, report_dir = restore(target, cap_restore_source="local", cap_restore_archive=str(archive))
    assert proc.returncode != 0, output_of(proc)
    assert "HTTP 409" in report["error"] and victim["policy_hash"] in report["error"], report["error"]
    assert report["result"] == "failed"
    steps = {s["name"]: s["status"] for s in report["steps"]}
    assert steps["deploy"] == "ok" and steps["restore_registry"] == "ok"
    assert steps["restore_policy_store"] == "failed"

    # The runbook's Rollback Procedure: stopped, logs kept, differences written, deleted.
    assert report["teardown"]["done"] is True
    assert report["teardown"]["detail"].startswith("rolled back: target removed")
    log = (report_dir / "target.log").read_text()
    assert '"POST /api/v1/policy/restore" 409' in log, log
    differences = json.loads((report_dir / "differences.json").read_text())
    assert set(differences) == {"differences", "failed_checks", "total"}
    assert target not in targets(sandbox)
    assert not target_dir(sandbox, target).exists()
    assert key_temp_files(report["restore_id"]) == []
    assert key_material_below(sandbox.state_dir / "restore", report_dir) == []
    assert fingerprint(source_build(sandbox)) == source_before

    audit = [json.loads(line) for line in
             (sandbox.state_dir / "audit" / "cap-restore-audit.jsonl").read_text().splitlines()]
    entry = [a for a in audit if a["restore_id"] == report["restore_id"]]
    assert len(entry) == 1 and entry[0]["rolled_back"] is True and entry[0]["result"] == "failure"
