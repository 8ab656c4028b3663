"""A full restore on the sandbox: playbooks/backup.yml, then playbooks/restore.yml (the
latest backup in S3) into an empty target, checked independently of the roles.

Every policy is fetched from the source and from the target over HTTP and compared
(policy_hash, ir_hash, ETag, body); both registries are opened with sqlite3 and
compared row by row; the private key is looked for in the target (from Vault) and in
the backup (where it must not be). One backup and one full restore serve the module;
the last two tests reuse the restored target to show that a target holding data is
refused, and replaced only with cap_restore_force.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from ansible.module_utils.cap_api import SMOKE_TEST_POLICY_HASH
from ansible.module_utils.cap_hashing import etag_for, sha3_file
from ansible.module_utils.cap_report import CHECKLIST, validate_report
from tests.integration.restore_helpers import (
    Api,
    fingerprint,
    key_material_below,
    key_temp_files,
    one_report,
    output_of,
    play,
    registry_rows,
    source_api,
    source_build,
    store_records,
    target_dir,
    targets,
    text_of,
    vault_secret,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

TARGET = "rt-full"


@pytest.fixture(scope="module")
def restored(sandbox, backup, tmp_path_factory):
    """playbooks/restore.yml with the sandbox inventory's defaults: latest backup in S3."""
    report_dir = tmp_path_factory.mktemp("restore-reports")
    source_before = fingerprint(source_build(sandbox))
    proc = play(sandbox, "playbooks/restore.yml",
                {"cap_restore_target": TARGET, "cap_restore_report_dir": str(report_dir)})
    try:
        assert proc.returncode == 0, output_of(proc)
        report, report_path = one_report(report_dir, "restore-*/restore-report.json")
        yield {"proc": proc, "report": report, "report_path": report_path,
               "target": targets(sandbox)[TARGET], "source_before": source_before}
    finally:
        sandbox.cli("target-down", TARGET)
        sandbox.reload()


def test_report_passes_with_every_checklist_item(sandbox, backup, restored):
    report = restored["report"]
    validate_report(report, "restore")
    assert report["result"] == "passed" and report["error"] is None
    assert report["backup"]["backup_id"] == backup.backup_id
    assert report["backup"]["archive_sha3_256"] == sha3_file(str(backup.archive))[0]
    assert report["backup"]["encrypted"] is True
    assert report["backup"]["signature_kid"] == sandbox["backup_signing_kid"]
    assert report["target"] == {"platform": "host", "name": TARGET, "url": restored["target"]["url"]}

    checks = {c["id"]: c for c in report["checks"]}
    missing = [item for item, _section, _name in CHECKLIST if item not in checks]
    assert not missing, "checklist items missing from the report: %s" % missing
    not_passed = {i: c["detail"] for i, c in checks.items() if c["passed"] is not True}
    assert not not_passed, "checks that did not pass: %s" % not_passed

    steps = [s["name"] for s in report["steps"]]
    assert steps == ["verify_backup", "deploy", "restore_registry", "restore_policy_store",
                     "restore_key_metadata", "restore_private_key", "verify_completeness",
                     "smoke_tests"], "steps out of the runbook's order: %s" % steps
    assert all(s["status"] == "ok" for s in report["steps"])
    assert report["differences_total"] == 0
    assert report["teardown"]["key_material_removed"] is True

    entries = len(registry_rows(source_build(sandbox) / "registry.sqlite"))
    policies = len(source_api(sandbox).policy_hashes())
    assert report["counts"]["policies"]["backup"] == report["counts"]["policies"]["restored"] == policies
    assert report["counts"]["registry_entries"]["backup"] == entries
    assert report["counts"]["registry_entries"]["restored"] == entries
    assert (restored["report_path"] / "restore-report.md").is_file()


def test_every_policy_is_identical_on_source_and_target(sandbox, restored, opened):
    source = source_api(sandbox)
    target = Api(restored["target"]["url"], sandbox.cap_token)
    source_hashes = source.policy_hashes()
    assert len(source_hashes) >= 25, "the runbook's checklist expects 25+ policies"
    assert set(source_hashes) == set(store_records(opened / "policy_store.json"))
    # The checklist's "/policy/compile works" stores its one smoke-test policy in the target.
    assert set(target.policy_hashes()) == set(source_hashes) | {SMOKE_TEST_POLICY_HASH}

    differences = []
    for policy_hash in source_hashes:
        s_status, s_etag, s_body = source.policy(policy_hash)
        t_status, t_etag, t_body = target.policy(policy_hash)
        if (s_status, t_status) != (200, 200):
            differences.append((policy_hash, "HTTP", s_status, t_status))
            continue
        for field in ("policy_hash", "ir_hash"):
            if t_body[field] != s_body[field]:
                differences.append((policy_hash, field, s_body[field], t_body[field]))
        if not (t_etag == s_etag == etag_for(policy_hash)):
            differences.append((policy_hash, "etag", s_etag, t_etag))
        if t_body != s_body:
            differences.append((policy_hash, "body", "", ""))
    assert not differences, "%d differences, first: %s" % (len(differences), differences[:5])


def test_every_registry_entry_is_identical_on_source_and_target(sandbox, restored, opened):
    source_db = source_build(sandbox) / "registry.sqlite"
    target_db = Path(restored["target"]["data_dir"]) / "build" / "registry.sqlite"
    source_rows = registry_rows(source_db)
    assert len(source_rows) == sandbox["seed"]["entries"]
    # Every column: id, manifest_hash, proof_hash, policy_hash, kid, signature, created_at.
    assert registry_rows(target_db) == source_rows
    assert registry_rows(opened / "registry.sqlite") == source_rows
    listing = lambda rows: sorted((r[1], r[2], r[4]) for r in rows)  # noqa: E731
    assert listing(registry_rows(target_db)) == listing(source_rows)

    source_policies = registry_rows(source_db, "policies")
    target_policies = registry_rows(target_db, "policies")
    assert set(source_policies) <= set(target_policies)
    assert [r[0] for r in set(target_policies) - set(source_policies)] == [SMOKE_TEST_POLICY_HASH]


def test_private_key_comes_from_vault_and_not_from_the_backup(sandbox, restored, backup, opened):
    key_file = Path(restored["target"]["data_dir"]) / "keys" / "company.ed25519"
    assert key_file.is_file(), "runbook step 6: no private key in the target"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    from_vault = base64.b64decode(vault_secret(sandbox, sandbox["vault_company_key_path"])["private_key"])
    assert key_file.read_bytes() == from_vault
    assert from_vault == (Path(sandbox["cap_source_data_dir"]) / "keys" / "company.ed25519").read_bytes()

    manifest = json.loads((opened / "backup.manifest.json").read_text())
    assert not [f["path"] for f in manifest["files"] if f["path"].endswith(".ed25519")]
    assert key_material_below(opened) == []
    needles = (from_vault, base64.b64encode(from_vault))
    holding = [str(p) for p in opened.rglob("*") if p.is_file()
               and any(n in p.read_bytes() for n in needles)]
    assert not holding, "the private key is inside the backup: %s" % holding


def test_no_key_copy_or_decrypted_archive_is_left(sandbox, restored, backup):
    assert key_temp_files(restored["report"]["restore_id"]) == []
    work = Path(sandbox.state_dir) / "restore" / backup.backup_id
    assert not (work / "archive.tar.gz").exists()
    assert not (work / "download").exists()
    assert key_material_below(work, restored["report_path"]) == []


def test_source_is_untouched(sandbox, restored):
    assert fingerprint(source_build(sandbox)) == restored["source_before"]


def test_a_target_holding_data_is_refused(sandbox, restored, tmp_path):
    record = targets(sandbox)[TARGET]
    before = fingerprint(target_dir(sandbox, TARGET))
    proc = play(sandbox, "playbooks/restore.yml",
                {"cap_restore_target": TARGET, "cap_restore_report_dir": str(tmp_path)})
    assert proc.returncode != 0, output_of(proc)
    text = text_of(proc)
    assert "Target %s is not empty" % TARGET in text and "cap_restore_force" in text, output_of(proc)
    assert targets(sandbox)[TARGET]["pid"] == record["pid"], "the running target was replaced"
    assert fingerprint(target_dir(sandbox, TARGET)) == before, "the refused restore wrote into the target"
    report, _path = one_report(tmp_path, "restore-*/restore-report.json")
    assert report["result"] == "failed" and "not empty" in report["error"]
    assert "deploy" not in [s["name"] for s in report["steps"]]


def test_force_replaces_a_target_holding_data(sandbox, restored, backup, tmp_path):
    """cap_restore_force, here from the archive on the backup volume (the local source)."""
    record = targets(sandbox)[TARGET]
    proc = play(sandbox, "playbooks/restore.yml",
                {"cap_restore_target": TARGET, "cap_restore_force": True,
                 "cap_restore_source": "local", "cap_restore_archive": str(backup.archive),
                 "cap_restore_report_dir": str(tmp_path)})
    assert proc.returncode == 0, output_of(proc)
    report, _path = one_report(tmp_path, "restore-*/restore-report.json")
    assert report["result"] == "passed"
    assert report["backup"]["location"] == str(backup.archive)
    replaced = targets(sandbox)[TARGET]
    assert replaced["pid"] != record["pid"] and replaced["created_at"] >= record["created_at"]
    target_db = Path(replaced["data_dir"]) / "build" / "registry.sqlite"
    assert registry_rows(target_db) == registry_rows(source_build(sandbox) / "registry.sqlite")
    assert Api(replaced["url"], sandbox.cap_token).get("/readyz").status_code == 200
    assert key_temp_files(report["restore_id"]) == []
    # The extracted backup is kept (cap_restore_keep_extracted) below the archive's name
    # without its extensions; the decrypted archive is not.
    work = sandbox.state_dir / "restore" / backup.archive.name[:-len(".tar.gz.enc")]
    assert (work / "extracted" / "backup.manifest.json").is_file()
    assert not (work / "archive.tar.gz").exists()
