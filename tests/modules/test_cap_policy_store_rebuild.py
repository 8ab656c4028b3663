"""cap_policy_store_rebuild: DR scenario 3 option B, the store rebuilt from the registry."""

import json
import sqlite3

import pytest

from sandbox.seed import seed_instance


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("rebuild") / "app"
    seed_instance(str(data_dir), seed=11, policies=26, entries=20)
    return data_dir


def test_rebuilt_store_is_byte_identical_to_the_served_one(module, seeded, tmp_path):
    dest = tmp_path / "policy_store.json"
    res = module("cap_policy_store_rebuild", dict(registry=str(seeded / "build" / "registry.sqlite"), dest=str(dest)))
    assert not res.failed, res.msg
    assert res.changed and res["policies"] == 26
    # The seeder writes the store exactly as the API serializes it.
    assert dest.read_bytes() == (seeded / "build" / "policy_store.json").read_bytes()
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    again = module("cap_policy_store_rebuild", dict(registry=str(seeded / "build" / "registry.sqlite"), dest=str(dest)))
    assert not again.changed


def test_a_tampered_policy_row_is_refused_and_nothing_written(module, seeded, tmp_path):
    registry = tmp_path / "registry.sqlite"
    registry.write_bytes((seeded / "build" / "registry.sqlite").read_bytes())
    conn = sqlite3.connect(registry)
    policy_hash, policy_json = conn.execute("SELECT policy_hash, policy_json FROM policies LIMIT 1").fetchone()
    doc = json.loads(policy_json)
    doc["name"] = doc["name"] + " (edited)"
    conn.execute("UPDATE policies SET policy_json = ? WHERE policy_hash = ?",
                 (json.dumps(doc, sort_keys=True, separators=(",", ":")), policy_hash))
    conn.commit()
    conn.close()
    dest = tmp_path / "store.json"
    res = module("cap_policy_store_rebuild", dict(registry=str(registry), dest=str(dest)))
    assert res.failed
    assert policy_hash in res.msg and "policy_hash" in res.msg
    assert not dest.exists()


def test_check_mode_writes_nothing(module, seeded, tmp_path):
    dest = tmp_path / "store.json"
    res = module("cap_policy_store_rebuild", dict(registry=str(seeded / "build" / "registry.sqlite"), dest=str(dest)),
                 check=True)
    assert res.changed and not dest.exists()
