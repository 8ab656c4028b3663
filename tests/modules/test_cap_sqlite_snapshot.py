"""cap_sqlite_snapshot run through Ansible."""

import json
import os
import sqlite3

from tests.unit.test_sqlite_snapshot import make_registry


def test_snapshot_with_json_export(module, tmp_path):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, rows=40)
    dest = str(tmp_path / "stage" / "registry.sqlite")
    os.makedirs(os.path.dirname(dest))
    res = module("cap_sqlite_snapshot", dict(src=src, dest=dest, format="json"))
    assert not res.failed, res.msg
    assert res.changed
    assert res["integrity"] == "ok"
    assert res["row_counts"] == {"counters": 1, "registry_entries": 40}
    assert res["sha3_256"].startswith("0x") and len(res["sha3_256"]) == 66
    exported = json.loads(open(res["json_dest"]).read())
    assert len(exported["tables"]["registry_entries"]["rows"]) == 40
    assert res["json_dest"].endswith("stage/registry.json")
    again = module("cap_sqlite_snapshot", dict(src=src, dest=dest, format="json"))
    assert not again.changed


def test_check_mode_writes_nothing(module, tmp_path):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, rows=10)
    dest = tmp_path / "out" / "registry.sqlite"
    dest.parent.mkdir()
    res = module("cap_sqlite_snapshot", dict(src=src, dest=str(dest)), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert os.listdir(dest.parent) == []


def test_source_changes_are_seen(module, tmp_path):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, rows=10)
    dest = str(tmp_path / "snap.sqlite")
    first = module("cap_sqlite_snapshot", dict(src=src, dest=dest))
    conn = sqlite3.connect(src)
    conn.execute("INSERT INTO registry_entries (manifest_hash, payload) VALUES ('0xnew', 'p')")
    conn.commit()
    conn.close()
    second = module("cap_sqlite_snapshot", dict(src=src, dest=dest))
    assert second.changed
    assert second["row_counts"]["registry_entries"] == 11
    assert second["sha3_256"] != first["sha3_256"]


def test_dest_equal_to_src_is_refused(module, tmp_path):
    src = str(tmp_path / "registry.sqlite")
    make_registry(src, rows=5)
    res = module("cap_sqlite_snapshot", dict(src=src, dest=src))
    assert res.failed and "source itself" in res.msg


def test_not_a_database_fails_clearly(module, tmp_path):
    src = tmp_path / "registry.sqlite"
    src.write_text("plain text")
    res = module("cap_sqlite_snapshot", dict(src=str(src), dest=str(tmp_path / "o.sqlite")))
    assert res.failed
    assert "registry.sqlite" in res.msg
    assert not (tmp_path / "o.sqlite").exists()
