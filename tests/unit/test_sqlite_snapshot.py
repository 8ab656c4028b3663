"""Consistent SQLite snapshots under concurrent writes, and the registry JSON form."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from ansible.module_utils.cap_sqlite import (
    SnapshotError,
    export_json_file,
    load_json_into,
    snapshot,
)

WRITER = r"""
import sqlite3, sys, time
db, journal = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
conn.execute("PRAGMA journal_mode=%s" % journal)
i = 0
open(db + ".started", "w").close()
while True:
    # Two rows per transaction: a consistent copy always holds an even count.
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO registry_entries (manifest_hash, payload) VALUES (?, ?)", ("0x%064x" % (2 * i), "x" * 300))
    conn.execute("INSERT INTO registry_entries (manifest_hash, payload) VALUES (?, ?)", ("0x%064x" % (2 * i + 1), "y" * 300))
    conn.execute("UPDATE counters SET pairs = pairs + 1")
    conn.execute("COMMIT")
    i += 1
"""


def make_registry(path, rows=2000, journal="wal"):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=%s" % journal)
    conn.execute("CREATE TABLE registry_entries (id INTEGER PRIMARY KEY, manifest_hash TEXT UNIQUE, payload TEXT)")
    conn.execute("CREATE INDEX registry_entries_payload ON registry_entries(payload)")
    conn.execute("CREATE TABLE counters (pairs INTEGER)")
    conn.execute("INSERT INTO counters VALUES (?)", (rows // 2,))
    conn.executemany("INSERT INTO registry_entries (manifest_hash, payload) VALUES (?, ?)",
                     (("0xseed%060d" % i, "z" * 300) for i in range(rows)))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_snapshot_is_consistent_while_a_writer_inserts(tmp_path, journal):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, journal=journal)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, src, journal])
    try:
        deadline = time.time() + 20
        while not os.path.exists(src + ".started"):
            assert time.time() < deadline, "writer did not start"
            time.sleep(0.05)
        time.sleep(0.3)
        seen = []
        for n in range(5):
            dest = str(tmp_path / ("snap%d.sqlite" % n))
            info = snapshot(src, dest)
            assert info["integrity"] == "ok"
            conn = sqlite3.connect(dest)
            entries = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
            pairs = conn.execute("SELECT pairs FROM counters").fetchone()[0]
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
            # Every transaction of the writer is either wholly in the copy or not at all.
            assert entries == 2 * pairs, "snapshot %d saw a half-written transaction" % n
            assert info["row_counts"]["registry_entries"] == entries
            seen.append(entries)
            time.sleep(0.1)
        assert seen[-1] > seen[0], "the writer made no progress; the test proved nothing"
    finally:
        writer.kill()
        writer.wait()
    # A snapshot is standalone: no WAL file is needed beside it.
    assert not os.path.exists(str(tmp_path / "snap0.sqlite-wal"))


def test_snapshot_is_0600_and_idempotent(tmp_path):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, rows=50)
    dest = str(tmp_path / "out.sqlite")
    first = snapshot(src, dest)
    assert first["changed"]
    assert oct(os.stat(dest).st_mode & 0o777) == "0o600"
    mtime = os.stat(dest).st_mtime_ns
    second = snapshot(src, dest)
    assert not second["changed"]
    assert second["sha3_256"] == first["sha3_256"]
    assert os.stat(dest).st_mtime_ns == mtime


def test_snapshot_refuses_a_corrupt_source_and_leaves_nothing(tmp_path):
    src = tmp_path / "registry.sqlite"
    src.write_bytes(b"this is not a database" * 100)
    dest = tmp_path / "out.sqlite"
    with pytest.raises(SnapshotError):
        snapshot(str(src), str(dest))
    assert sorted(os.listdir(tmp_path)) == ["registry.sqlite"]


def test_snapshot_missing_source(tmp_path):
    with pytest.raises(SnapshotError, match="does not exist"):
        snapshot(str(tmp_path / "nope.sqlite"), str(tmp_path / "out.sqlite"))


def test_json_export_round_trip_and_stability(tmp_path):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, rows=120)
    out = str(tmp_path / "registry.json")
    first = export_json_file(src, out)
    doc = json.loads(open(out).read())
    assert doc["version"] == "cap-registry.v1"
    assert len(doc["tables"]["registry_entries"]["rows"]) == 120
    again = export_json_file(src, out)
    assert not again["changed"] and again["sha3_256"] == first["sha3_256"]
    conn = load_json_into(out, sqlite3.connect(":memory:"))
    assert conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0] == 120
    assert conn.execute("SELECT payload FROM registry_entries WHERE id = 7").fetchone()[0] == "z" * 300
