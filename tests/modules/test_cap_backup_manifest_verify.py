"""cap_backup_manifest and cap_backup_verify run through Ansible."""

import json
import os

from tests.unit.test_manifest import stage

ARGS = dict(backup_id="backup-20251110-120000", system_version="0.11.0",
            created_at="2025-11-10T12:00:00Z")


def test_manifest_written_0600_then_unchanged(module, tmp_path):
    stage(tmp_path)
    first = module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)))
    assert not first.failed, first.msg
    assert first.changed
    path = tmp_path / "backup.manifest.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["version"] == "backup.manifest.v1"
    mtime = path.stat().st_mtime_ns
    second = module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)))
    assert not second.changed
    assert path.stat().st_mtime_ns == mtime
    assert second["sha3_256"] == first["sha3_256"]


def test_manifest_check_mode_writes_nothing(module, tmp_path):
    stage(tmp_path)
    res = module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)), check=True)
    assert res.changed and not res.failed
    assert not (tmp_path / "backup.manifest.json").exists()


def test_manifest_bad_created_at_fails_clearly(module, tmp_path):
    stage(tmp_path)
    res = module("cap_backup_manifest", dict(ARGS, root=str(tmp_path), created_at="yesterday"))
    assert res.failed
    assert "created_at" in res.msg
    assert not (tmp_path / "backup.manifest.json").exists()


def test_verify_ok_prints_runbook_lines(module, tmp_path):
    stage(tmp_path)
    module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)))
    res = module("cap_backup_verify", dict(manifest=str(tmp_path / "backup.manifest.json")))
    assert not res.failed, res.msg
    assert not res.changed
    assert res["lines"][-1] == "\u2705 All 8 files verified successfully"


def test_verify_fails_naming_file_and_hashes(module, tmp_path):
    stage(tmp_path)
    module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)))
    with open(tmp_path / "policy_store.json", "ab") as handle:
        handle.write(b" ")
    res = module("cap_backup_verify", dict(manifest=str(tmp_path / "backup.manifest.json")))
    assert res.failed
    assert "policy_store.json" in res.msg and "expected 0x" in res.msg and "got 0x" in res.msg


def test_verify_rejects_malformed_manifest(module, tmp_path):
    stage(tmp_path)
    module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)))
    path = tmp_path / "backup.manifest.json"
    doc = json.loads(path.read_text())
    doc["files"][0]["path"] = "../../etc/shadow"
    path.write_text(json.dumps(doc))
    res = module("cap_backup_verify", dict(manifest=str(path)))
    assert res.failed
    assert "'..'" in res.msg


def test_verify_extra_file_can_be_tolerated(module, tmp_path):
    stage(tmp_path)
    module("cap_backup_manifest", dict(ARGS, root=str(tmp_path)))
    (tmp_path / "docs" / "late.md").write_text("late")
    manifest = str(tmp_path / "backup.manifest.json")
    assert module("cap_backup_verify", dict(manifest=manifest)).failed
    res = module("cap_backup_verify", dict(manifest=manifest, fail_on_extra=False))
    assert not res.failed, res.msg
    assert res["extra"] == ["docs/late.md"]
    assert os.path.exists(manifest)
