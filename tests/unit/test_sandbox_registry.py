"""Registry entry signatures and the registry view of an instance (sandbox/registry.py)."""

from __future__ import annotations

import os
import sqlite3

import pytest

import sandbox  # noqa: F401
from ansible.module_utils.cap_keys import public_from_seed
from ansible.module_utils.cap_sqlite import export_json
from sandbox import registry as R

SEED = bytes(range(32))
KID = "cap-company-000000000001"
ENTRY = {
    "manifest_hash": "0x" + "1" * 64,
    "proof_hash": "0x" + "2" * 64,
    "policy_hash": "0x" + "3" * 64,
    "kid": KID,
    "created_at": "2025-03-01T08:00:00Z",
}


def test_entry_message_is_the_canonical_json_of_five_fields():
    row = dict(ENTRY, id=7, signature="ignored")
    assert R.entry_message(row) == (
        b'{"created_at":"2025-03-01T08:00:00Z","kid":"cap-company-000000000001",'
        b'"manifest_hash":"0x' + b"1" * 64 + b'","policy_hash":"0x' + b"3" * 64
        + b'","proof_hash":"0x' + b"2" * 64 + b'"}')


def test_entry_message_reads_sqlite_rows_and_refuses_non_strings():
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    R.create_schema(conn)
    conn.execute("INSERT INTO registry_entries (manifest_hash, proof_hash, policy_hash, kid, signature, "
                 "created_at) VALUES (:manifest_hash, :proof_hash, :policy_hash, :kid, 'x', :created_at)",
                 ENTRY)
    row = conn.execute("SELECT * FROM registry_entries").fetchone()
    assert R.entry_message(row) == R.entry_message(ENTRY)
    with pytest.raises(R.RegistryError):
        R.entry_message(dict(ENTRY, created_at=20250301))


def test_signed_entries_verify_and_tampering_is_caught():
    keys = {KID: public_from_seed(SEED)}
    row = dict(ENTRY, signature=R.sign_entry(SEED, ENTRY))
    assert R.verify_entry(row, keys) == (True, None)
    for field, value in (("proof_hash", "0x" + "4" * 64), ("created_at", "2025-03-01T08:00:01Z"),
                         ("policy_hash", "0x" + "5" * 64)):
        ok, reason = R.verify_entry(dict(row, **{field: value}), keys)
        assert not ok and "does not verify" in reason
    assert R.verify_entry(dict(row, kid="cap-other"), keys)[0] is False
    assert "trusted" in R.verify_entry(row, {})[1]
    assert "base64" in R.verify_entry(dict(row, signature="***"), keys)[1]
    assert "64" in R.verify_entry(dict(row, signature="AAAA"), keys)[1]


def test_entry_field_forms_are_checked():
    R.check_entry_fields(ENTRY)
    with pytest.raises(R.RegistryError):
        R.check_entry_fields(dict(ENTRY, manifest_hash="0x" + "A" * 64))
    with pytest.raises(R.RegistryError):
        R.check_entry_fields(dict(ENTRY, created_at="2025-03-01 08:00:00"))


def _database(path, entries=3):
    conn = sqlite3.connect(str(path))
    R.create_schema(conn)
    for n in range(entries):
        row = dict(ENTRY, manifest_hash="0x%064x" % n)
        conn.execute("INSERT INTO registry_entries (manifest_hash, proof_hash, policy_hash, kid, signature, "
                     "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (row["manifest_hash"], row["proof_hash"], row["policy_hash"], row["kid"],
                      R.sign_entry(SEED, row), row["created_at"]))
    conn.commit()
    conn.close()


def test_registry_status_follows_the_file_on_disk(tmp_path):
    build = tmp_path / "build"
    reg = R.Registry(str(build))
    ok, reason, count = reg.status()
    assert not ok and "no registry file" in reason and count is None
    build.mkdir()
    (build / "registry.sqlite").write_bytes(b"this is not a database, just bytes" * 100)
    ok, reason, _ = reg.status()
    assert not ok and "not a readable SQLite database" in reason
    (build / "registry.sqlite").unlink()
    sqlite3.connect(str(build / "registry.sqlite")).close()
    ok, reason, _ = reg.status()
    assert not ok and "no registry_entries table" in reason
    (build / "registry.sqlite").unlink()
    _database(build / "registry.sqlite")
    assert reg.status() == (True, None, 3)
    assert reg.lookup("0x%064x" % 1)["kid"] == KID
    assert reg.lookup("0x" + "f" * 64) is None


def test_json_registry_is_loaded_and_reloaded_when_it_changes(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    _database(tmp_path / "a.sqlite", entries=2)
    export_json(str(tmp_path / "a.sqlite"), str(build / "registry.json"))
    reg = R.Registry(str(build))
    assert reg.locate() == (str(build / "registry.json"), "json")
    assert reg.status() == (True, None, 2)
    assert reg.store_policy({"policy_hash": "0x" + "3" * 64}, "2025-01-01T00:00:00Z") == "read_only"
    _database(tmp_path / "b.sqlite", entries=5)
    export_json(str(tmp_path / "b.sqlite"), str(build / "registry.json"))
    assert reg.status() == (True, None, 5)
    (build / "registry.json").write_text("{broken")
    ok, reason, _ = reg.status()
    assert not ok and "registry.json cannot be loaded" in reason
    _database(build / "registry.sqlite", entries=1)
    assert reg.locate()[1] == "sqlite" and reg.status()[2] == 1


def test_store_policy_inserts_once(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    reg = R.Registry(str(build))
    record = {"policy_hash": "0x" + "6" * 64, "ir_hash": "0x" + "7" * 64, "policy": {"a": 1}, "ir": {"b": 2}}
    assert reg.store_policy(record, "2025-01-01T00:00:00Z") == "absent"
    _database(build / "registry.sqlite", entries=0)
    assert reg.store_policy(record, "2025-01-01T00:00:00Z") == "inserted"
    assert reg.store_policy(record, "2025-01-02T00:00:00Z") == "present"
    conn = sqlite3.connect(str(build / "registry.sqlite"))
    assert conn.execute("SELECT policy_json, ir_json, created_at FROM policies").fetchall() == [
        ('{"a":1}', '{"b":2}', "2025-01-01T00:00:00Z")]
    conn.close()
    assert not [n for n in os.listdir(build) if n != "registry.sqlite"]
