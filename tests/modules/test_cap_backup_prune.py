"""cap_backup_prune run through Ansible."""

import os

from tests.unit.test_retention import (
    NOT_BACKUPS,
    build_forty_days,
    files_of,
    reference_keep,
    write_backup,
)


def test_prune_forty_days_then_nothing_left_to_do(module, tmp_path):
    directory = str(tmp_path)
    stems = build_forty_days(directory, seed=5)
    before = set(os.listdir(directory))
    expected_keep = reference_keep(stems, 48, 7, 0, 1)
    expected_files = files_of(directory, set(stems) - expected_keep)
    args = dict(path=directory, keep_hourly=48, keep_daily=7, verify_newest=False,
                now="2025-11-10T00:00:00Z")

    preview = module("cap_backup_prune", args, check=True)
    assert not preview.failed, preview.msg
    assert preview.changed
    assert set(preview["deleted_files"]) == expected_files
    assert set(os.listdir(directory)) == before

    res = module("cap_backup_prune", args)
    assert not res.failed, res.msg
    assert res.changed
    assert {r["backup"] for r in res["kept"]} == expected_keep
    assert {r["backup"] for r in res["deleted"]} == set(stems) - expected_keep
    assert set(res["deleted_files"]) == expected_files
    assert set(os.listdir(directory)) == before - expected_files
    for name in NOT_BACKUPS:
        assert os.path.exists(os.path.join(directory, name))

    again = module("cap_backup_prune", args)
    assert not again.failed, again.msg
    assert not again.changed
    assert again["deleted"] == [] and again["deleted_files"] == []


def test_newest_verified_backup_survives(module, tmp_path):
    directory = str(tmp_path)
    write_backup(directory, "cap-backup-20251110-090000.tar.gz.enc", sidecar="good")
    write_backup(directory, "cap-backup-20251110-100000.tar.gz.enc", sidecar="bad")
    write_backup(directory, "cap-backup-20251110-110000.tar.gz.enc", sidecar="bad")
    write_backup(directory, "cap-backup-20251110-120000.tar.gz.enc", sidecar="bad")
    res = module("cap_backup_prune", dict(path=directory, keep_hourly=1, keep_daily=0,
                                          now="20251110-123000"))
    assert not res.failed, res.msg
    assert res["newest_verified"] == "cap-backup-20251110-090000.tar.gz.enc"
    assert res["protected"] == "cap-backup-20251110-090000.tar.gz.enc"
    kept = {r["backup"]: r["reasons"] for r in res["kept"]}
    assert kept == {"cap-backup-20251110-120000": ["keep_last", "hourly"],
                    "cap-backup-20251110-090000": ["newest_verified"]}
    assert res["kept"][0]["age_hours"] == 0.5
    assert sorted(os.listdir(directory)) == sorted(
        n for name in ("cap-backup-20251110-120000", "cap-backup-20251110-090000")
        for n in (name + ".tar.gz.enc", name + ".tar.gz.enc.sha3", name + ".manifest.json",
                  name + ".manifest.json.sig"))
    warnings = " ".join(res.get("warnings", []))
    assert "cap-backup-20251110-120000.tar.gz.enc is newer than the newest verified" in warnings


def test_check_mode_deletes_nothing(module, tmp_path):
    directory = str(tmp_path)
    for hour in range(10):
        write_backup(directory, "cap-backup-20251110-%02d0000.tar.gz" % hour)
    before = sorted(os.listdir(directory))
    res = module("cap_backup_prune", dict(path=directory, keep_hourly=3, keep_daily=0), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert len(res["deleted"]) == 7 and len(res["deleted_files"]) == 28
    assert sorted(os.listdir(directory)) == before


def test_bad_arguments_fail_clearly(module, tmp_path):
    res = module("cap_backup_prune", dict(path=str(tmp_path / "missing")))
    assert res.failed and "does not exist" in res.msg
    res = module("cap_backup_prune", dict(path=str(tmp_path), pattern=r"^x-(\d+)$"))
    assert res.failed and "named group 'ts'" in res.msg
    res = module("cap_backup_prune", dict(path=str(tmp_path), now="yesterday"))
    assert res.failed and "now must be" in res.msg
