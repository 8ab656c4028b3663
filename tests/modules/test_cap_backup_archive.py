"""cap_backup_archive run through Ansible: pack, extract, check mode, refusals."""

import hashlib
import io
import os
import stat
import tarfile

from tests.unit.test_archive import CONTENT, make_tree, read_bytes, tree_state


def _traversal_archive(path):
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("registry.sqlite", b"SQLite format 3\x00"), ("../escaped.sh", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_pack_writes_0600_then_is_unchanged(module, tmp_path):
    make_tree(tmp_path / "src")
    dest = tmp_path / "backup.tar.gz"
    args = dict(state="packed", src=str(tmp_path / "src"), dest=str(dest))
    first = module("cap_backup_archive", args)
    assert not first.failed, first.msg
    assert first.changed
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert first["sha3_256"] == "0x" + hashlib.sha3_256(read_bytes(dest)).hexdigest()
    assert first["size_bytes"] == dest.stat().st_size
    assert first["file_count"] == len(CONTENT)
    assert first["members"] > first["file_count"]
    mtime = dest.stat().st_mtime_ns
    second = module("cap_backup_archive", dict(args, threads=1))
    assert not second.failed, second.msg
    assert not second.changed
    assert second["sha3_256"] == first["sha3_256"]
    assert dest.stat().st_mtime_ns == mtime


def test_pack_without_libdeflate_fails_clearly_and_extraction_still_works(module, tmp_path):
    """A host whose Python lacks the deflate package: packing names it, nothing changes."""
    make_tree(tmp_path / "src")
    dest = tmp_path / "backup.tar.gz"
    assert not module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"),
                                                 dest=str(dest))).failed
    before = read_bytes(dest)
    shadow = tmp_path / "shadow"
    (shadow / "deflate").mkdir(parents=True)
    (shadow / "deflate" / "__init__.py").write_text("raise ImportError('no libdeflate here')\n")
    env = dict(PYTHONPATH=str(shadow))
    res = module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"),
                                            dest=str(dest)), env=env)
    assert res.failed
    assert "deflate" in res.msg and "to write a gzip archive" in res.msg, res.msg
    assert read_bytes(dest) == before
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "shadow", "src"]
    plain = module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"),
                                              dest=str(tmp_path / "plain.tar"),
                                              compression="none"), env=env)
    assert not plain.failed, plain.msg
    assert plain["compressor"] == "none"
    out = module("cap_backup_archive", dict(state="extracted", src=str(dest),
                                            dest=str(tmp_path / "out")), env=env)
    assert not out.failed, out.msg
    assert tree_state(tmp_path / "out") == tree_state(tmp_path / "src")


def test_pack_check_mode_writes_nothing(module, tmp_path):
    make_tree(tmp_path / "src")
    res = module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"),
                                            dest=str(tmp_path / "backup.tar.gz")), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_pack_refuses_symlink_naming_it(module, tmp_path):
    make_tree(tmp_path / "src")
    os.symlink("/etc/passwd", tmp_path / "src" / "passwd")
    res = module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"),
                                            dest=str(tmp_path / "backup.tar.gz")))
    assert res.failed
    assert "symbolic link" in res.msg and str(tmp_path / "src" / "passwd") in res.msg
    assert res["member"] == "passwd"
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_extract_round_trip_then_unchanged(module, tmp_path):
    make_tree(tmp_path / "src")
    archive = tmp_path / "backup.tar.gz"
    packed = module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"),
                                               dest=str(archive)))
    assert not packed.failed, packed.msg
    args = dict(state="extracted", src=str(archive), dest=str(tmp_path / "restore"))
    dry = module("cap_backup_archive", args, check=True)
    assert not dry.failed, dry.msg
    assert dry.changed and not (tmp_path / "restore").exists()
    res = module("cap_backup_archive", args)
    assert not res.failed, res.msg
    assert res.changed
    assert sorted(res["files"]) == sorted(CONTENT)
    assert res["file_count"] == len(CONTENT)
    assert res["sha3_256"] == packed["sha3_256"]
    state = tree_state(tmp_path / "restore")
    for rel, data in CONTENT.items():
        assert state[rel][2] == data
    again = module("cap_backup_archive", args)
    assert not again.failed, again.msg
    assert not again.changed


def test_non_empty_dest_needs_force(module, tmp_path):
    make_tree(tmp_path / "src")
    archive = tmp_path / "backup.tar.gz"
    module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"), dest=str(archive)))
    restore = tmp_path / "restore"
    restore.mkdir()
    (restore / "old.txt").write_text("previous")
    args = dict(state="extracted", src=str(archive), dest=str(restore))
    res = module("cap_backup_archive", args)
    assert res.failed
    assert "not empty and differs" in res.msg and "is missing from dest" in res.msg
    assert "set force" in res.msg
    assert (restore / "old.txt").read_text() == "previous"
    forced = module("cap_backup_archive", dict(args, force=True))
    assert not forced.failed, forced.msg
    assert forced.changed and forced["replaced"]
    assert not (restore / "old.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "restore", "src"]


def test_refused_archive_names_member_and_writes_nothing(module, tmp_path):
    _traversal_archive(tmp_path / "evil.tar.gz")
    res = module("cap_backup_archive", dict(state="extracted", src=str(tmp_path / "evil.tar.gz"),
                                            dest=str(tmp_path / "restore")))
    assert res.failed
    assert "../escaped.sh" in res.msg and "'..'" in res.msg and "nothing was written" in res.msg
    assert res["member"] == "../escaped.sh"
    assert res["problems"] == ["member '../escaped.sh': the path has a '..' segment"]
    assert sorted(os.listdir(tmp_path)) == ["evil.tar.gz"]
    assert not os.path.exists(tmp_path.parent / "escaped.sh")


def test_corrupt_archive_fails_cleanly(module, tmp_path):
    make_tree(tmp_path / "src")
    archive = tmp_path / "backup.tar.gz"
    module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "src"), dest=str(archive)))
    data = bytearray(read_bytes(archive))
    data[-6] ^= 0xFF
    archive.write_bytes(bytes(data))
    res = module("cap_backup_archive", dict(state="extracted", src=str(archive),
                                            dest=str(tmp_path / "restore")))
    assert res.failed
    assert "CRC32 mismatch" in res.msg and str(archive) in res.msg
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "src"]


def test_argument_spec_rejects_bad_values(module, tmp_path):
    dest = str(tmp_path / "a")
    res = module("cap_backup_archive", dict(state="packed", src=str(tmp_path), dest=dest,
                                            compression_level=12))
    assert res.failed and "compression_level" in res.msg
    res = module("cap_backup_archive", dict(state="unpacked", src=str(tmp_path), dest=dest))
    assert res.failed and "state" in res.msg
    res = module("cap_backup_archive", dict(state="packed", src=str(tmp_path / "x"), dest=dest,
                                            threads=0))
    assert res.failed and "threads" in res.msg
