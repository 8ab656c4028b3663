"""module_utils/cap_registry: the signed message, entry verification, whole-registry checks
and the listing digest the restore compares with `sqlite3 ... | sha256sum` in the pod."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sqlite3
import subprocess

import pytest

from ansible.module_utils import cap_registry
from ansible.module_utils.cap_keys import load_key_tree
from ansible.module_utils.cap_registry import (
    ENTRY_COLUMNS,
    LISTING_QUERY,
    EntryVerifier,
    RegistryError,
    RegistryFileError,
    check_entry_fields,
    entry_message,
    listing_digest,
    verify_entry,
    verify_registry,
)
from tests import helpers_cap

ROW = {
    "id": 1,
    "manifest_hash": "0x" + "11" * 32,
    "proof_hash": "0x" + "22" * 32,
    "policy_hash": "0x" + "33" * 32,
    "kid": "cap-company-b3ba1c39847d",
    "signature": "unused",
    "created_at": "2025-03-01T08:00:00Z",
}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A pristine seeded data directory (sqlite registry); tests copy it before changing it."""
    data_dir = tmp_path_factory.mktemp("seeded") / "app"
    summary = helpers_cap.seed(data_dir)
    return data_dir, summary


@pytest.fixture
def app(seeded, tmp_path):
    return helpers_cap.copy_tree(seeded[0], tmp_path / "app")


def registry(app):
    return str(app / "build" / "registry.sqlite")


def sqlite_cli(db, sql):
    subprocess.run(["sqlite3", "-batch", db, sql], check=True, capture_output=True, text=True)


def cli_listing_sha256(db):
    """What the restore runs in the pod: sqlite3 -batch -noheader DB "<query>" | sha256sum."""
    proc = subprocess.run(["bash", "-c", 'set -euo pipefail; sqlite3 -batch -noheader "$1" "$2" | sha256sum',
                           "listing", db, LISTING_QUERY], check=True, capture_output=True, text=True)
    return proc.stdout.split()[0]


def rows_of(db, where="1=1"):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(
            "SELECT %s FROM registry_entries WHERE %s ORDER BY id" % (", ".join(ENTRY_COLUMNS), where))]
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# The signed message

def test_entry_message_is_the_canonical_json_of_exactly_five_fields():
    assert entry_message(ROW) == (
        b'{"created_at":"2025-03-01T08:00:00Z","kid":"cap-company-b3ba1c39847d",'
        b'"manifest_hash":"0x' + b"11" * 32 + b'","policy_hash":"0x' + b"33" * 32
        + b'","proof_hash":"0x' + b"22" * 32 + b'"}')


def test_entry_message_is_the_one_the_seeded_signatures_cover(seeded):
    import sandbox.registry

    keys = load_key_tree(str(seeded[0] / "keys"))
    for row in rows_of(registry(seeded[0]))[:50]:
        assert entry_message(row) == sandbox.registry.entry_message(row)
        assert verify_entry(row, keys) == (True, None)


def test_entry_message_reads_sqlite_rows_and_refuses_non_strings(seeded):
    conn = sqlite3.connect(registry(seeded[0]))
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM registry_entries WHERE id = 1").fetchone()
    finally:
        conn.close()
    assert entry_message(row) == entry_message(dict(row))
    with pytest.raises(RegistryError, match="created_at must be a string"):
        entry_message(dict(ROW, created_at=20250301))


def test_check_entry_fields_names_the_bad_field():
    check_entry_fields(ROW)
    with pytest.raises(RegistryError, match="proof_hash"):
        check_entry_fields(dict(ROW, proof_hash="0x" + "AB" * 32))
    with pytest.raises(RegistryError, match="created_at"):
        check_entry_fields(dict(ROW, created_at="2025-03-01 08:00:00"))


def test_verify_entry_reasons(seeded):
    keys = load_key_tree(str(seeded[0] / "keys"))
    row = rows_of(registry(seeded[0]))[0]
    raw = bytearray(base64.b64decode(row["signature"]))
    raw[10] ^= 0x01
    flipped = base64.b64encode(bytes(raw)).decode("ascii")
    assert verify_entry(dict(row, signature=flipped), keys) == (
        False, "signature does not verify under kid %s" % row["kid"])
    assert verify_entry(dict(row, proof_hash="0x" + "00" * 32), keys)[0] is False
    assert verify_entry(dict(row, kid="cap-someone-else"), keys) == (
        False, "kid cap-someone-else is not among the trusted public keys")
    assert verify_entry(dict(row, signature="***"), keys) == (False, "signature is not base64")
    assert "64" in verify_entry(dict(row, signature=base64.b64encode(b"x" * 10).decode()), keys)[1]


def test_classify_checks_field_forms_before_the_kid_and_signature(seeded):
    keys = load_key_tree(str(seeded[0] / "keys"))
    row = rows_of(registry(seeded[0]))[0]
    verifier = EntryVerifier(keys)
    assert verifier.classify(row) == ("valid", None)
    assert verifier.classify(dict(row, kid="cap-nobody"))[0] == "unknown_kid"
    verdict, reason = verifier.classify(dict(row, manifest_hash="0xnothex", kid="cap-nobody"))
    assert verdict == "invalid" and "manifest_hash" in reason


# ---------------------------------------------------------------------------
# Whole registries

def test_seeded_registry_verifies_completely(seeded):
    data_dir, summary = seeded
    keys = load_key_tree(str(data_dir / "keys"))
    result = verify_registry(registry(data_dir), keys)
    assert result["format"] == "sqlite"
    assert result["entries"] == 300 and result["policies"] == 30
    assert result["signatures"] == {"valid": 300, "invalid": 0, "unknown_kid": 0}
    assert result["invalid"] == []
    assert result["kids"] == sorted(summary["kids"])
    assert result["row_counts"] == {"policies": 30, "registry_entries": 300}
    rows = rows_of(registry(data_dir))
    assert result["samples"] == [
        {k: rows[i][k] for k in ("id", "manifest_hash", "proof_hash", "kid")} for i in (0, -1)]
    assert result["samples"][0]["manifest_hash"] == summary["sample_manifest_hash"]
    assert result["listing_sha256"] == cli_listing_sha256(registry(data_dir))


def test_samples_are_spread_evenly_by_id(seeded):
    keys = load_key_tree(str(seeded[0] / "keys"))
    result = verify_registry(registry(seeded[0]), keys, sample=4)
    assert [s["id"] for s in result["samples"]] == [1, 101, 200, 300]
    assert verify_registry(registry(seeded[0]), keys, sample=0)["samples"] == []


def test_listing_digest_equals_the_sqlite3_pipeline_before_and_after_a_change(app):
    db = registry(app)
    before = listing_digest(db)
    assert before == cli_listing_sha256(db)
    sqlite_cli(db, "UPDATE registry_entries SET kid = 'cap-moved' WHERE id = 7;")
    after = listing_digest(db)
    assert after != before
    assert after == cli_listing_sha256(db)


def test_listing_digest_is_sha256_of_pipe_separated_lines(app):
    rows = sqlite3.connect(registry(app)).execute(LISTING_QUERY).fetchall()
    text = "".join("%s|%s|%s\n" % row for row in rows).encode("utf-8")
    assert listing_digest(registry(app)) == hashlib.sha256(text).hexdigest()


def test_flipped_signature_byte_is_reported_with_its_manifest_hash(app):
    db = registry(app)
    row = rows_of(db, "id = 17")[0]
    raw = bytearray(base64.b64decode(row["signature"]))
    raw[0] ^= 0x80
    sqlite_cli(db, "UPDATE registry_entries SET signature = '%s' WHERE id = 17;"
               % base64.b64encode(bytes(raw)).decode("ascii"))
    result = verify_registry(db, load_key_tree(str(app / "keys")))
    assert result["signatures"] == {"valid": 299, "invalid": 1, "unknown_kid": 0}
    assert result["invalid"] == [{"id": 17, "manifest_hash": row["manifest_hash"], "kid": row["kid"],
                                  "verdict": "invalid",
                                  "reason": "signature does not verify under kid %s" % row["kid"]}]
    assert row["signature"] not in repr(result)


def test_altered_proof_hash_is_reported_and_changes_the_listing(app):
    db = registry(app)
    row = rows_of(db, "id = 250")[0]
    original = listing_digest(db)
    sqlite_cli(db, "UPDATE registry_entries SET proof_hash = '0x%s' WHERE id = 250;" % ("ab" * 32))
    result = verify_registry(db, load_key_tree(str(app / "keys")))
    assert result["signatures"]["invalid"] == 1
    assert result["invalid"][0]["manifest_hash"] == row["manifest_hash"]
    assert "does not verify" in result["invalid"][0]["reason"]
    assert result["listing_sha256"] != original
    assert result["listing_sha256"] == cli_listing_sha256(db)


def test_unknown_kid_when_a_public_key_is_missing(app, seeded):
    auditor = [k for k in seeded[1]["kids"] if k.startswith("cap-auditor-")][0]
    os.unlink(str(app / "keys" / ("%s.v1.json" % auditor)))
    os.unlink(str(app / "keys" / "trusted" / ("%s.pub" % auditor)))
    db = registry(app)
    signed_by_auditor = len(rows_of(db, "kid = '%s'" % auditor))
    assert signed_by_auditor > 0
    result = verify_registry(db, load_key_tree(str(app / "keys")))
    assert result["signatures"] == {"valid": 300 - signed_by_auditor, "invalid": 0,
                                    "unknown_kid": signed_by_auditor}
    assert auditor in result["kids"]
    first = rows_of(db, "kid = '%s'" % auditor)[0]
    assert result["invalid"][0] == {"id": first["id"], "manifest_hash": first["manifest_hash"],
                                    "kid": auditor, "verdict": "unknown_kid",
                                    "reason": "kid %s is not among the trusted public keys" % auditor}


def test_reported_failures_are_capped_at_twenty_but_all_counted(app):
    db = registry(app)
    sqlite_cli(db, "UPDATE registry_entries SET created_at = '2020-01-01T00:00:00Z' WHERE id <= 35;")
    result = verify_registry(db, load_key_tree(str(app / "keys")))
    assert result["signatures"]["invalid"] == 35
    assert [i["id"] for i in result["invalid"]] == list(range(1, 21))


def test_parallel_workers_give_the_serial_result(app, monkeypatch):
    db = registry(app)
    sqlite_cli(db, "UPDATE registry_entries SET proof_hash = '0x%s' WHERE id IN (5, 120, 299);" % ("cd" * 32))
    keys = load_key_tree(str(app / "keys"))
    serial = verify_registry(db, keys, workers=1)
    monkeypatch.setattr(cap_registry, "PARALLEL_THRESHOLD", 100)
    monkeypatch.setattr(cap_registry, "CHUNK_ROWS", 40)
    parallel = verify_registry(db, keys, workers=2)
    assert parallel["workers"] == 2 and serial["workers"] == 1
    for key in ("entries", "signatures", "invalid", "kids", "samples", "listing_sha256", "row_counts"):
        assert parallel[key] == serial[key], key
    assert [i["id"] for i in parallel["invalid"]] == [5, 120, 299]


def test_json_registry_gives_the_digest_of_its_sqlite_form(tmp_path):
    json_dir, sqlite_dir = tmp_path / "json", tmp_path / "sqlite"
    helpers_cap.seed(json_dir, seed=9, registry_format="json")
    helpers_cap.seed(sqlite_dir, seed=9)
    keys = load_key_tree(str(json_dir / "keys"))
    result = verify_registry(str(json_dir / "build" / "registry.json"), keys)
    assert result["format"] == "json"
    assert result["signatures"] == {"valid": 300, "invalid": 0, "unknown_kid": 0}
    assert result["policies"] == 30
    assert result["listing_sha256"] == cli_listing_sha256(registry(sqlite_dir))
    assert result["samples"] == verify_registry(registry(sqlite_dir), keys)["samples"]


def test_registry_without_policies_table_reports_none(tmp_path, seeded):
    db = str(tmp_path / "registry.sqlite")
    shutil.copy(registry(seeded[0]), db)
    sqlite_cli(db, "DROP TABLE policies;")
    result = verify_registry(db, load_key_tree(str(seeded[0] / "keys")))
    assert result["policies"] is None and result["entries"] == 300


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"plain text, not a registry", "neither an SQLite database nor cap-registry.v1 JSON"),
    (b'{"version": "something-else", "tables": {}}', "cannot be loaded as cap-registry.v1 JSON"),
])
def test_unusable_files_are_named(tmp_path, content, message):
    path = tmp_path / "registry.sqlite"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RegistryFileError, match=message) as info:
        verify_registry(str(path), {})
    assert str(path) in str(info.value)


def test_sqlite_without_registry_entries_is_refused(tmp_path):
    db = str(tmp_path / "other.sqlite")
    sqlite_cli(db, "CREATE TABLE unrelated (x INTEGER);")
    with pytest.raises(RegistryFileError, match="no registry_entries table"):
        listing_digest(db)
