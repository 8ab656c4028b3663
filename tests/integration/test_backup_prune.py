"""playbooks/prune.yml: retention of the primary backup directory (docs/retention.md).

The directory is docs/retention.md's example (keep_hourly 3, keep_daily 2, keep_monthly 2),
with one twist: the two newest archives do not match their sidecars, so the newest
verified backup is one the policy alone would delete, and it must be kept.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration import backup_checks as bc
from tests.integration.playbook_runner import output_of, run_playbook

pytestmark = [pytest.mark.slow]

PRUNE = "playbooks/prune.yml"
JSON_OUTPUT = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
               "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json"}
POLICY = {"cap_backup_keep_hourly": 3, "cap_backup_keep_daily": 2, "cap_backup_keep_monthly": 2}

# stem -> (archive suffix, sidecar state): "ok" matches, "bad" holds another hash, "none" is absent.
BACKUPS = {
    "cap-backup-20251110-120000": (".tar.gz.enc", "bad"),
    "manual-backup-20251110-113000": (".tar.gz.enc", "none"),
    "cap-backup-20251110-110000": (".tar.gz.enc", "ok"),
    "cap-backup-20251110-100000": (".tar.gz.enc", "ok"),
    "cap-backup-20251109-230000": (".tar.gz.enc", "ok"),
    "cap-backup-20251109-220000": (".tar.gz.enc", "ok"),
    "cap-backup-20251108-230000": (".tar.gz.enc", "ok"),
    "cap-backup-20251108-100000": (".tar.gz", "ok"),
    "cap-backup-20251031-230000": (".tar.gz", "ok"),
}
DELETED = ["cap-backup-20251109-220000", "cap-backup-20251108-230000", "cap-backup-20251108-100000"]
NEWEST_VERIFIED = "cap-backup-20251110-110000.tar.gz.enc"
# Never touched: not a backup by name, or a directory.
BYSTANDERS = ["cap-backup-20251108-100000.tar.gz.part", "cap-backup-20251108-100000.notes",
              "cap-backup-latest.tar.gz"]


def make_directory(path):
    for index, (stem, (suffix, sidecar)) in enumerate(BACKUPS.items()):
        archive = path / (stem + suffix)
        archive.write_bytes(os.urandom(256 + index))
        if sidecar != "none":
            digest = bc.sha3_of_file(archive) if sidecar == "ok" else "0" * 64
            (path / (archive.name + ".sha3")).write_text("%s  %s\n" % (digest, archive.name))
        (path / (stem + ".manifest.json")).write_text("{}\n")
        (path / (stem + ".manifest.json.sig")).write_text("{}\n")
    for name in BYSTANDERS:
        (path / name).write_text("not a backup\n")
    (path / "audit").mkdir()
    (path / ".cap-backup.lock").mkdir()


def files_of(stem):
    suffix, sidecar = BACKUPS[stem]
    names = [stem + suffix, stem + ".manifest.json", stem + ".manifest.json.sig"]
    if sidecar != "none":
        names.append(stem + suffix + ".sha3")
    return names


def snapshot(path):
    """name -> bytes of every regular file (directories as None)."""
    out = {}
    for name in os.listdir(path):
        full = path / name
        out[name] = None if full.is_dir() else full.read_bytes()
    return out


def prune_result(proc):
    """The cap_backup_prune task's result from the JSON callback's output."""
    assert proc.returncode == 0, output_of(proc)
    doc = json.loads(proc.stdout)
    results = {}
    for task in doc["plays"][0]["tasks"]:
        # Tasks of an included role are named "<role> : <task>".
        results[task["task"]["name"].split(" : ")[-1]] = task["hosts"]["localhost"]
    return results["Prune the primary directory (grandfather-father-son)"], \
        results["Show what was kept and deleted"]


def run_prune(tmp_path, out, check):
    # Retention needs no service: an empty state directory stands in for the sandbox.
    state = tmp_path / "no-sandbox"
    state.mkdir(exist_ok=True)
    return run_playbook(state, PRUNE, extra_vars=dict(POLICY, cap_backup_output_dir=str(out)),
                        check=check, env=JSON_OUTPUT)


def test_prune_check_reports_and_then_deletes_exactly_the_expected_backups(tmp_path):
    out = tmp_path / "backups"
    out.mkdir()
    make_directory(out)
    before = snapshot(out)

    result, shown = prune_result(run_prune(tmp_path, out, check=True))
    assert snapshot(out) == before, "--check deleted or changed files"
    assert result["changed"] is True
    assert [b["backup"] for b in result["deleted"]] == DELETED
    expected_files = sorted(f for stem in DELETED for f in files_of(stem))
    assert sorted(result["deleted_files"]) == expected_files
    assert result["newest_verified"] == NEWEST_VERIFIED
    assert result["protected"] == NEWEST_VERIFIED
    assert shown["msg"][0].startswith("Would delete 3 backup(s): " + ", ".join(DELETED))
    assert "newest verified: " + NEWEST_VERIFIED in shown["msg"][1]

    result, shown = prune_result(run_prune(tmp_path, out, check=False))
    after = snapshot(out)
    assert sorted(set(before) - set(after)) == expected_files
    assert not set(after) - set(before)
    for name, content in after.items():
        assert content == before[name], "%s changed" % name
    kept = {k["backup"]: k["reasons"] for k in result["kept"]}
    assert sorted(kept) == sorted(set(BACKUPS) - set(DELETED))
    assert "newest_verified" in kept["cap-backup-20251110-110000"]
    assert shown["msg"][0].startswith("Deleted 3 backup(s): ")
    for name in BYSTANDERS + ["audit", ".cap-backup.lock"]:
        assert name in after

    # A second run has nothing left to do.
    result, _shown = prune_result(run_prune(tmp_path, out, check=False))
    assert result["changed"] is False and result["deleted"] == []
    assert snapshot(out) == after
