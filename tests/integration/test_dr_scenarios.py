"""The runbook's Disaster Recovery Scenarios 2 and 3, repaired in place on the sandbox's
source instance (the inventory's cap_restore_repair_target) from a backup made here.

Scenario 2 corrupts one registry entry with sqlite3 and shows /verify failing for it;
playbooks/restore_registry.yml must bring back the backup's registry, row for row, and
/verify must pass again. Scenario 3 loses the policy store (instance stopped, the
serialized store deleted, started again: /readyz 503); playbooks/restore_policy_store.yml
must bring back every policy with its hashes and ETag, from the backup (option A) and
rebuilt from the registry (option B). The source is put back as it was if a test fails
half-way, so later modules still find a healthy source.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from ansible.module_utils.cap_hashing import etag_for
from tests.integration.restore_helpers import (
    one_report,
    output_of,
    play,
    registry_rows,
    source_api,
    source_build,
    store_records,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

CORRUPTED_ID = 150


@pytest.fixture(scope="module", autouse=True)
def source_guard(sandbox, tmp_path_factory):
    """Keep the source's data; put it back afterwards if a scenario left it broken."""
    saved = tmp_path_factory.mktemp("source-saved")
    build = source_build(sandbox)
    for name in ("registry.sqlite", "policy_store.json"):
        shutil.copy2(str(build / name), str(saved / name))
    rows = registry_rows(build / "registry.sqlite")
    yield
    healthy = (source_api(sandbox).get("/readyz").status_code == 200
               and registry_rows(build / "registry.sqlite") == rows)
    if not healthy:
        sandbox.cli("stop", "source")
        for name in ("registry.sqlite", "policy_store.json"):
            shutil.copy2(str(saved / name), str(build / name))
        sandbox.cli("start", "source")


def entry(db, entry_id):
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute("SELECT manifest_hash, proof_hash FROM registry_entries WHERE id = ?",
                            (entry_id,)).fetchone()
    finally:
        conn.close()


def test_scenario_2_corrupted_registry_is_replaced_from_the_backup(sandbox, backup, opened, tmp_path):
    db = source_build(sandbox) / "registry.sqlite"
    api = source_api(sandbox)
    manifest_hash, proof_hash = entry(db, CORRUPTED_ID)
    assert api.verify(manifest_hash)["valid"] is True

    corrupted = "0x" + "c0ffee" * 10 + "c0ff"
    conn = sqlite3.connect(str(db))
    with conn:
        conn.execute("UPDATE registry_entries SET proof_hash = ? WHERE id = ?", (corrupted, CORRUPTED_ID))
    conn.close()
    broken = api.verify(manifest_hash)
    assert broken["valid"] is False, "the corruption did not reach the API: %s" % broken
    assert registry_rows(db) != registry_rows(opened / "registry.sqlite")
    pid_before = sandbox.reload()["pids"]["cap_source"]

    proc = play(sandbox, "playbooks/restore_registry.yml", {"cap_restore_report_dir": str(tmp_path)})
    assert proc.returncode == 0, output_of(proc)

    for table in ("registry_entries", "policies"):
        assert registry_rows(db, table) == registry_rows(opened / "registry.sqlite", table), table
    repaired = api.verify(manifest_hash)
    assert repaired["valid"] is True and repaired["proof_hash"] == proof_hash, repaired
    assert api.get("/readyz").status_code == 200
    # The runbook's steps 1 and 5: the API was stopped and started around the copy.
    assert sandbox.reload()["pids"]["cap_source"] != pid_before

    report, report_dir = one_report(tmp_path, "restore-*/restore-report.json")
    assert report["result"] == "passed" and report["backup"]["backup_id"] == backup.backup_id
    assert report["target"]["name"] == "source"
    # The corrupted registry is kept as evidence.
    assert entry(report_dir / "corrupted-registry.sqlite", CORRUPTED_ID) == (manifest_hash, corrupted)


def lose_policy_store(sandbox):
    """The in-memory store cleared by a restart: stopped, the serialized store gone, started."""
    sandbox.cli("stop", "source")
    (source_build(sandbox) / "policy_store.json").unlink()
    sandbox.cli("start", "source")
    api = source_api(sandbox)
    ready = api.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert {c["name"]: c["status"] for c in ready.json()["checks"]}["policy_store"] == "FAIL"
    assert api.policy_hashes() == []


@pytest.mark.parametrize("option", ["backup", "registry"], ids=["option-A-backup", "option-B-registry"])
def test_scenario_3_lost_policy_store_is_restored(sandbox, backup, opened, tmp_path, option):
    expected = store_records(opened / "policy_store.json")
    assert len(expected) >= 25
    lose_policy_store(sandbox)

    proc = play(sandbox, "playbooks/restore_policy_store.yml",
                {"cap_restore_report_dir": str(tmp_path), "cap_restore_policy_store_option": option})
    assert proc.returncode == 0, output_of(proc)

    api = source_api(sandbox)
    assert api.get("/readyz").status_code == 200
    assert sorted(api.policy_hashes()) == sorted(expected)
    differences = []
    for policy_hash, record in sorted(expected.items()):
        status, etag, body = api.policy(policy_hash)
        if status != 200:
            differences.append((policy_hash, "HTTP", status))
            continue
        if etag != etag_for(policy_hash):
            differences.append((policy_hash, "etag", etag))
        for field in ("policy_hash", "ir_hash", "policy", "ir"):
            if body[field] != record[field]:
                differences.append((policy_hash, field))
    assert not differences, "%d differences, first: %s" % (len(differences), differences[:5])

    report, _dir = one_report(tmp_path, "restore-*/restore-report.json")
    assert report["result"] == "passed"
    assert report["counts"]["policies"]["restored"] == len(expected)
    assert report["backup"]["backup_id"] == (backup.backup_id if option == "backup" else "rebuilt-from-registry")
