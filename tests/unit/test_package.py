"""One-pass packaging: archive, encryption and integrity checks together."""

import base64
import os
import sqlite3

import pytest

from ansible.module_utils import cap_archive
from ansible.module_utils.cap_archive import ArchiveError, pack
from ansible.module_utils.cap_crypt import decrypt_file
from ansible.module_utils.cap_package import package
from ansible.module_utils.cap_hashing import sha3_file


def staged(root, rows=500):
    (root / "keys" / "metadata").mkdir(parents=True)
    (root / "keys" / "metadata" / "a.v1.json").write_text('{"kid": "a"}')
    (root / "policy_store.json").write_text('{"policies": []}\n' * 300)
    conn = sqlite3.connect(root / "registry.sqlite")
    conn.execute("CREATE TABLE registry_entries (id INTEGER PRIMARY KEY, manifest_hash TEXT)")
    conn.executemany("INSERT INTO registry_entries (manifest_hash) VALUES (?)",
                     (("0x%064x" % i,) for i in range(rows)))
    conn.commit()
    conn.close()
    return root


def corrupt(db):
    """Overwrite the middle of the database's data pages so integrity_check fails."""
    size = os.path.getsize(db)
    with open(db, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xff" * 4096)


def test_encrypted_package_decrypts_to_the_deterministic_archive(tmp_path):
    src = staged(tmp_path / "stage")
    key = os.urandom(32)
    enc = tmp_path / "out" / "backup.tar.gz.enc"
    enc.parent.mkdir()
    result = package(str(src), str(enc), key=key, wrapped_key="vault:v1:abc", check_sqlite=["registry.sqlite"])
    assert result["encrypted"] and result["changed"]
    assert oct(enc.stat().st_mode & 0o777) == "0o600"
    assert result["sha3_256"] == sha3_file(str(enc))[0]
    assert result["sqlite_row_counts"] == {"registry.sqlite": {"registry_entries": 500}}
    assert result["threads"] >= 1
    plain = tmp_path / "out" / "plain.tar.gz"
    packed = pack(str(src), str(plain))
    assert result["plain_sha3_256"] == packed["sha3_256"]
    decrypted = tmp_path / "out" / "decrypted.tar.gz"
    decrypt_file(str(enc), str(decrypted), key)
    assert decrypted.read_bytes() == plain.read_bytes()
    assert list(os.listdir(tmp_path / "out")) and not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tmp")]


@pytest.mark.parametrize("key", [None, os.urandom(32)], ids=["plain", "encrypted"])
def test_a_failed_integrity_check_writes_no_archive(tmp_path, key):
    src = staged(tmp_path / "stage", rows=5000)
    corrupt(src / "registry.sqlite")
    dest = tmp_path / "out" / "backup.tar.gz"
    dest.parent.mkdir()
    with pytest.raises(ArchiveError, match="registry.sqlite"):
        package(str(src), str(dest), key=key, check_sqlite=["registry.sqlite"])
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("key", [None, os.urandom(32)], ids=["plain", "encrypted"])
def test_without_libdeflate_no_archive_is_written(tmp_path, monkeypatch, key):
    src = staged(tmp_path / "stage")
    dest = tmp_path / "out" / "backup.tar.gz"
    dest.parent.mkdir()
    monkeypatch.setattr(cap_archive, "_libdeflate", None)
    with pytest.raises(ArchiveError, match="needs the Python package 'deflate'"):
        package(str(src), str(dest), key=key, check_sqlite=["registry.sqlite"])
    assert os.listdir(tmp_path / "out") == []


def test_encrypted_dest_inside_src_is_refused_like_pack(tmp_path):
    src = staged(tmp_path / "stage")
    before = sorted(os.listdir(src))
    with pytest.raises(ArchiveError, match="inside src"):
        package(str(src), str(src / "backup.tar.gz.enc"), key=os.urandom(32))
    assert sorted(os.listdir(src)) == before


def test_check_sqlite_names_a_missing_file(tmp_path):
    src = staged(tmp_path / "stage")
    with pytest.raises(ArchiveError, match="not a file"):
        package(str(src), str(tmp_path / "a.tar.gz"), check_sqlite=["nope.sqlite"])


def test_plain_package_with_checks_keeps_an_identical_archive(tmp_path):
    src = staged(tmp_path / "stage")
    dest = tmp_path / "a.tar.gz"
    first = package(str(src), str(dest), check_sqlite=["registry.sqlite"])
    mtime = dest.stat().st_mtime_ns
    second = package(str(src), str(dest), check_sqlite=["registry.sqlite"])
    assert first["changed"] and not second["changed"]
    assert dest.stat().st_mtime_ns == mtime
    assert first["sha3_256"] == second["sha3_256"] == sha3_file(str(dest))[0]


def test_check_mode_writes_nothing(tmp_path):
    src = staged(tmp_path / "stage")
    dest = tmp_path / "a.tar.gz.enc"
    result = package(str(src), str(dest), key=os.urandom(32), check_sqlite=["registry.sqlite"], check=True)
    assert result["changed"] and not dest.exists()
    assert [n for n in os.listdir(tmp_path) if n != "stage"] == []


def test_module_packs_encrypted_without_echoing_the_key(module, tmp_path):
    src = staged(tmp_path / "stage")
    key = base64.b64encode(os.urandom(32)).decode()
    dest = tmp_path / "backup.tar.gz.enc"
    res = module("cap_backup_archive", {"state": "packed", "src": str(src), "dest": str(dest),
                                        "encryption_key": key, "check_sqlite": ["registry.sqlite"]})
    assert not res.failed, res.msg
    assert res["encrypted"] and res["sha3_256"] == sha3_file(str(dest))[0]
    assert key not in res.proc.stdout and key not in res.proc.stderr
    bad = module("cap_backup_archive", {"state": "packed", "src": str(src), "dest": str(tmp_path / "x"),
                                        "encryption_key": "not-base64!"})
    assert bad.failed and "encryption key" in bad.msg
