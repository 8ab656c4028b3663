"""cap_archive: deterministic packing, parallel gzip, safe and all-or-nothing extraction."""

import gzip
import hashlib
import io
import os
import random
import shutil
import socket
import stat
import subprocess
import tarfile
import zlib

import pytest

from ansible.module_utils import cap_archive
from ansible.module_utils.cap_archive import (
    ArchiveError,
    ParallelGzipWriter,
    extract,
    pack,
    parse_mode,
    path_problem,
    validate_archive,
    write_archive,
)

# A backup-shaped tree: nested directories, an executable, non-ASCII and long
# names (pax headers) and one file spanning several compression blocks.
BIG = b"".join(b"registry row %08d: %s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode())
               for i in range(12000)) + random.Random(7).randbytes(200000)
CONTENT = {
    "registry.sqlite": b"SQLite format 3\x00" + bytes(range(256)) * 40,
    "policy_store.json": b'{"version":"cap-policy-store.v1","policies":[]}\n',
    "keys/metadata/cap-company.v1.json": b'{"kid":"cap-company"}\n',
    "config/helm/values-prod.yaml": b"replicaCount: 3\n",
    "scripts/smoke_restore.sh": b"#!/bin/sh\necho ok\n",
    "docs/\u00fcbersicht-\u540d\u524d.md": b"# \xc3\x9cbersicht\n",
    "deep/" + "d" * 60 + "/" + "n" * 80 + ".txt": b"long path\n",
    "build/big.bin": BIG,
    "empty.txt": b"",
}
EXECUTABLES = {"scripts/smoke_restore.sh"}
# GNU tar prints non-ASCII names as octal escapes in the C locale.
TAR_ENV = dict(os.environ, LC_ALL="C.UTF-8")
EMPTY_DIRS = ("empty", "keys/trusted")


def make_tree(root, reverse=False, file_mode=0o644, exec_mode=0o755, dir_mode=0o755,
              mtime=1000000000, umask=0o022, content=None):
    """Create the test tree with the given creation order, modes, times and umask."""
    content = dict(CONTENT if content is None else content)
    old = os.umask(umask)
    try:
        os.makedirs(root, exist_ok=True)
        names = sorted(content, reverse=reverse)
        for rel in names:
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(content[rel])
            os.chmod(path, exec_mode if rel in EXECUTABLES else file_mode)
            os.utime(path, (mtime, mtime))
        for rel in sorted(EMPTY_DIRS, reverse=reverse):
            os.makedirs(os.path.join(root, rel), exist_ok=True)
        for dirpath, _dirs, _files in os.walk(root):
            if dirpath != str(root):
                os.chmod(dirpath, dir_mode)
            os.utime(dirpath, (mtime + 7, mtime + 7))
    finally:
        os.umask(old)
    return content


def expected_names(content=None):
    """Every archive entry name of a tree: files, their directories and the empty ones."""
    content = CONTENT if content is None else content
    names = set(content)
    for rel in list(content) + list(EMPTY_DIRS):
        parts = rel.split("/")
        names.update("/".join(parts[:i]) for i in range(1, len(parts) + (rel in EMPTY_DIRS)))
    return sorted(names, key=lambda n: n.encode("utf-8"))


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def tree_state(root):
    """{relative path: (kind, mode, content)} of everything below root."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                state[rel] = ("file", stat.S_IMODE(st.st_mode), read_bytes(full))
    return state


@pytest.fixture
def packed(tmp_path):
    """A tree and its gzip archive."""
    make_tree(tmp_path / "src")
    archive = tmp_path / "backup.tar.gz"
    result = pack(str(tmp_path / "src"), str(archive))
    return tmp_path / "src", archive, result


# ---------------------------------------------------------------------------
# Packing: determinism


def test_same_content_same_bytes_despite_order_times_modes_and_umask(tmp_path):
    make_tree(tmp_path / "a")
    make_tree(tmp_path / "b", reverse=True, file_mode=0o600, exec_mode=0o700, dir_mode=0o700,
              mtime=1700000000, umask=0o077)
    # The noise really is there: modes and times differ between the two trees.
    st_a = os.stat(tmp_path / "a" / "policy_store.json")
    st_b = os.stat(tmp_path / "b" / "policy_store.json")
    assert stat.S_IMODE(st_a.st_mode) != stat.S_IMODE(st_b.st_mode)
    assert st_a.st_mtime != st_b.st_mtime
    ra = pack(str(tmp_path / "a"), str(tmp_path / "a.tar.gz"))
    rb = pack(str(tmp_path / "b"), str(tmp_path / "b.tar.gz"), threads=1)
    assert read_bytes(tmp_path / "a.tar.gz") == read_bytes(tmp_path / "b.tar.gz")
    assert ra["sha3_256"] == rb["sha3_256"]
    assert ra["members"] == len(expected_names())


def test_group_and_other_bits_do_not_matter_but_execute_bits_do(tmp_path):
    make_tree(tmp_path / "a", file_mode=0o640)
    make_tree(tmp_path / "b", file_mode=0o604, exec_mode=0o744)
    make_tree(tmp_path / "c", file_mode=0o644, exec_mode=0o644)
    sums = [pack(str(tmp_path / n), str(tmp_path / (n + ".tgz")))["sha3_256"] for n in "abc"]
    assert sums[0] == sums[1]
    assert sums[2] != sums[0]


def test_thread_count_and_write_sizes_do_not_change_bytes(tmp_path):
    make_tree(tmp_path / "src")
    outputs = set()
    for threads in (1, 2, 4):
        dest = tmp_path / ("t%d.tar.gz" % threads)
        pack(str(tmp_path / "src"), str(dest), threads=threads)
        outputs.add(read_bytes(dest))
    assert len(outputs) == 1
    # Several blocks (gzip members), so the ordering of parallel work was exercised.
    assert len(gzip_members(outputs.pop())) >= 3


def test_parallel_gzip_writer_is_independent_of_threads_and_write_pattern():
    data = BIG * 3
    results = set()
    for threads, pattern in ((1, [len(data)]), (3, [1, 511, 70000, 3]), (4, [131072]), (2, [9999])):
        sink = io.BytesIO()
        writer = ParallelGzipWriter(sink, level=6, threads=threads, block_size=128 * 1024)
        rng = random.Random(threads)
        pos = 0
        while pos < len(data):
            step = rng.choice(pattern)
            writer.write(data[pos:pos + step])
            pos += step
        writer.close()
        results.add(sink.getvalue())
    assert len(results) == 1
    out = results.pop()
    assert gzip.decompress(out) == data
    members = gzip_members(out)
    assert [len(m["data"]) for m in members] == [128 * 1024] * (len(data) // (128 * 1024)) + [
        len(data) % (128 * 1024)]
    assert b"".join(m["data"] for m in members) == data
    assert len(out) < len(data)


def gzip_members(blob):
    """Every gzip member of blob: header bytes, CRC32 and ISIZE as stored, inflated data.

    zlib reads one member at a time; what follows a member is in unused_data.
    """
    members = []
    rest = blob
    while rest:
        inflater = zlib.decompressobj(31)
        data = inflater.decompress(rest)
        assert inflater.eof, "member %d is truncated" % len(members)
        used = len(rest) - len(inflater.unused_data)
        crc, isize = int.from_bytes(rest[used - 8:used - 4], "little"), int.from_bytes(
            rest[used - 4:used], "little")
        members.append(dict(header=rest[:10], crc=crc, isize=isize, data=data))
        rest = inflater.unused_data
    return members


def test_every_gzip_member_has_the_fixed_header_and_its_own_checks():
    data = BIG * 2
    sink = io.BytesIO()
    with ParallelGzipWriter(sink, level=6, threads=2, block_size=256 * 1024) as writer:
        writer.write(data)
    members = gzip_members(sink.getvalue())
    assert writer.members == len(members) == -(-len(data) // (256 * 1024))
    for member in members:
        # magic, deflate, no flags (no name), MTIME 0, XFL 0 for level 6, OS 255
        assert member["header"] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        assert member["crc"] == zlib.crc32(member["data"])
        assert member["isize"] == len(member["data"])
    assert b"".join(m["data"] for m in members) == data


def test_gunzip_reads_every_member(tmp_path):
    data = BIG * 2
    path = tmp_path / "data.gz"
    with open(path, "wb") as handle, ParallelGzipWriter(handle, threads=2,
                                                        block_size=64 * 1024) as writer:
        writer.write(data)
    assert len(gzip_members(path.read_bytes())) > 10
    proc = subprocess.run(["gzip", "-t", str(path)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["gzip", "-dc", str(path)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def test_missing_libdeflate_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    pack(str(tmp_path / "src"), str(tmp_path / "old.tar.gz"))
    before = read_bytes(tmp_path / "old.tar.gz")
    monkeypatch.setattr(cap_archive, "_libdeflate", None)
    with pytest.raises(ArchiveError, match="needs the Python package 'deflate'.*extracting "
                                           "archives does not need it"):
        pack(str(tmp_path / "src"), str(tmp_path / "old.tar.gz"))
    with pytest.raises(ArchiveError, match="deflate"):
        ParallelGzipWriter(io.BytesIO())
    assert read_bytes(tmp_path / "old.tar.gz") == before
    assert sorted(os.listdir(tmp_path)) == ["old.tar.gz", "src"]
    # Without compression, and for reading, nothing else is needed.
    plain = pack(str(tmp_path / "src"), str(tmp_path / "plain.tar"), compression="none")
    assert plain["compressor"] == "none" and plain["gzip_members"] == 0
    extract(str(tmp_path / "old.tar.gz"), str(tmp_path / "out"))
    assert tree_state(tmp_path / "out") == tree_state(tmp_path / "src")


def test_block_size_changes_bytes_but_not_content():
    data = BIG * 2
    outs = []
    for block_size in (32 * 1024, 256 * 1024):
        sink = io.BytesIO()
        with ParallelGzipWriter(sink, threads=2, block_size=block_size) as writer:
            writer.write(data)
        outs.append(sink.getvalue())
    assert outs[0] != outs[1]
    assert gzip.decompress(outs[0]) == gzip.decompress(outs[1]) == data


def test_parallel_gzip_writer_empty_input_and_level_zero():
    for level, xfl in ((0, 0), (1, 4), (9, 2)):
        sink = io.BytesIO()
        ParallelGzipWriter(sink, level=level, threads=2).close()
        assert gzip.decompress(sink.getvalue()) == b""
        # An empty input is still a gzip file: one empty member.
        (member,) = gzip_members(sink.getvalue())
        assert (member["data"], member["crc"], member["isize"], member["header"][8]) == (
            b"", 0, 0, xfl)
        sink = io.BytesIO()
        with ParallelGzipWriter(sink, level=level, threads=2) as writer:
            writer.write(b"abc" * 100000)
        assert gzip.decompress(sink.getvalue()) == b"abc" * 100000
        assert {m["header"][8] for m in gzip_members(sink.getvalue())} == {xfl}


@pytest.mark.parametrize("bad", [dict(level=10), dict(level=-1), dict(threads=0),
                                 dict(threads=1000), dict(block_size=1024)])
def test_parallel_gzip_writer_rejects_bad_options(bad):
    with pytest.raises(ArchiveError):
        ParallelGzipWriter(io.BytesIO(), **bad)


def test_one_changed_byte_changes_the_archive(tmp_path):
    make_tree(tmp_path / "a")
    content = dict(CONTENT)
    content["build/big.bin"] = BIG[:100000] + b"X" + BIG[100001:]
    make_tree(tmp_path / "b", content=content)
    a = pack(str(tmp_path / "a"), str(tmp_path / "a.tgz"))
    b = pack(str(tmp_path / "b"), str(tmp_path / "b.tgz"))
    assert a["sha3_256"] != b["sha3_256"]


def test_mtime_parameter_is_the_only_time_in_the_archive(tmp_path):
    make_tree(tmp_path / "src")
    pack(str(tmp_path / "src"), str(tmp_path / "zero.tgz"))
    pack(str(tmp_path / "src"), str(tmp_path / "fixed.tgz"), mtime=1762776000)
    assert read_bytes(tmp_path / "zero.tgz") != read_bytes(tmp_path / "fixed.tgz")
    for name, mtime in (("zero.tgz", 0), ("fixed.tgz", 1762776000)):
        with tarfile.open(tmp_path / name) as tar:
            assert {m.mtime for m in tar.getmembers()} == {mtime}


def test_entries_sorted_with_normalised_metadata(packed):
    _src, archive, result = packed
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == expected_names()
        assert not any(n.startswith(("./", "/")) for n in names)
        for member in members:
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            if member.isdir():
                assert member.mode == 0o755
            else:
                assert member.isreg()
                assert member.mode == (0o755 if member.name in EXECUTABLES else 0o644)
                assert tar.extractfile(member).read() == CONTENT[member.name]
    assert "empty" in names and "keys/trusted" in names
    assert result["file_count"] == len(CONTENT)
    assert result["directories"] == len(names) - len(CONTENT)
    assert result["total_bytes"] == sum(len(v) for v in CONTENT.values())


def test_gzip_framing_and_plain_tar_inside(tmp_path, packed):
    src, archive, result = packed
    data = read_bytes(archive)
    members = gzip_members(data)
    block = cap_archive.DEFAULT_BLOCK_SIZE
    tar_stream = gzip.decompress(data)
    assert result["gzip_members"] == len(members) == -(-len(tar_stream) // block) > 1
    assert result["compressor"].startswith("libdeflate (deflate ")
    for index, member in enumerate(members):
        assert member["header"] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        assert member["data"] == tar_stream[index * block:(index + 1) * block]
        assert member["crc"] == zlib.crc32(member["data"])
        assert member["isize"] == len(member["data"])
    assert len(tar_stream) == result["tar_bytes"]
    assert len(tar_stream) % 10240 == 0
    plain = pack(str(src), str(tmp_path / "plain.tar"), compression="none")
    assert read_bytes(tmp_path / "plain.tar") == tar_stream
    assert plain["size_bytes"] == len(tar_stream)
    assert result["sha3_256"] == "0x" + hashlib.sha3_256(data).hexdigest()
    assert result["size_bytes"] == len(data)


def test_system_gzip_and_tar_read_the_archive(tmp_path, packed):
    src, archive, _result = packed
    subprocess.run(["gzip", "-t", str(archive)], check=True)
    listing = subprocess.run(["tar", "-tzf", str(archive)], check=True, capture_output=True,
                             env=TAR_ENV).stdout
    names = [n.rstrip("/") for n in listing.decode("utf-8").splitlines()]
    assert names == expected_names()
    out = tmp_path / "by-tar"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(out)], check=True)
    state = tree_state(out)
    for rel, data in CONTENT.items():
        assert state[rel][2] == data
    assert state["scripts/smoke_restore.sh"][1] & 0o100
    assert state["empty"][0] == "dir"


def test_plain_tar_read_by_system_tar(tmp_path):
    make_tree(tmp_path / "src")
    pack(str(tmp_path / "src"), str(tmp_path / "b.tar"), compression="none")
    listing = subprocess.run(["tar", "-tf", str(tmp_path / "b.tar")], check=True,
                             capture_output=True, env=TAR_ENV).stdout.decode("utf-8").splitlines()
    assert [n.rstrip("/") for n in listing] == expected_names()


def test_write_archive_streams_into_any_sink(tmp_path):
    make_tree(tmp_path / "src")
    sink = io.BytesIO()
    info = write_archive(str(tmp_path / "src"), sink, threads=2)
    result = pack(str(tmp_path / "src"), str(tmp_path / "a.tgz"))
    assert sink.getvalue() == read_bytes(tmp_path / "a.tgz")
    assert info["members"] == result["members"]


def test_empty_directory_packs_and_extracts(tmp_path):
    (tmp_path / "src").mkdir()
    result = pack(str(tmp_path / "src"), str(tmp_path / "e.tgz"))
    assert result["members"] == 0
    subprocess.run(["tar", "-tzf", str(tmp_path / "e.tgz")], check=True)
    out = extract(str(tmp_path / "e.tgz"), str(tmp_path / "dest"))
    assert out["changed"] and out["files"] == [] and os.listdir(tmp_path / "dest") == []


# ---------------------------------------------------------------------------
# Packing: refusals, idempotency, check mode


def _symlink(root):
    os.symlink("/etc/passwd", root / "link")
    return "link"


def _dir_symlink(root):
    os.symlink("/etc", root / "config" / "etc")
    return "config/etc"


def _fifo(root):
    os.mkfifo(root / "pipe")
    return "pipe"


def _socket(root):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    return "sock"


def _backslash(root):
    (root / "a\\b").write_bytes(b"x")
    return "a\\b"


@pytest.mark.parametrize("maker", [_symlink, _dir_symlink, _fifo, _socket, _backslash])
def test_pack_refuses_special_files_naming_them(tmp_path, maker):
    src = tmp_path / "src"
    make_tree(src)
    rel = maker(src)
    with pytest.raises(ArchiveError) as err:
        pack(str(src), str(tmp_path / "out.tgz"))
    assert str(src / rel) in str(err.value)
    assert err.value.member == rel
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_pack_refuses_dest_inside_src(tmp_path):
    make_tree(tmp_path / "src")
    with pytest.raises(ArchiveError, match="inside src"):
        pack(str(tmp_path / "src"), str(tmp_path / "src" / "docs" / "self.tgz"))


def test_pack_refuses_missing_src_and_dest_directory(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        pack(str(tmp_path / "nope"), str(tmp_path / "out.tgz"))
    make_tree(tmp_path / "src")
    with pytest.raises(ArchiveError, match="does not exist"):
        pack(str(tmp_path / "src"), str(tmp_path / "missing" / "out.tgz"))


def test_pack_is_idempotent_and_honours_check_mode(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    dest = tmp_path / "out.tgz"
    dry = pack(str(src), str(dest), check=True)
    assert dry["changed"] and not dest.exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]
    first = pack(str(src), str(dest))
    assert first["changed"] and first["sha3_256"] == dry["sha3_256"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    before = dest.stat()
    second = pack(str(src), str(dest))
    assert not second["changed"]
    after = dest.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert not pack(str(src), str(dest), check=True)["changed"]
    # A changed file changes the archive; check mode says so without writing.
    (src / "policy_store.json").write_bytes(b"{}\n")
    assert pack(str(src), str(dest), check=True)["changed"]
    assert dest.stat().st_mtime_ns == before.st_mtime_ns
    third = pack(str(src), str(dest))
    assert third["changed"] and third["sha3_256"] != first["sha3_256"]
    assert sorted(os.listdir(tmp_path)) == ["out.tgz", "src"]


def test_pack_fixes_only_the_mode_of_an_identical_archive(tmp_path):
    make_tree(tmp_path / "src")
    dest = tmp_path / "out.tgz"
    pack(str(tmp_path / "src"), str(dest))
    ino = dest.stat().st_ino
    result = pack(str(tmp_path / "src"), str(dest), mode="0640")
    assert result["changed"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640 and dest.stat().st_ino == ino


def test_pack_refuses_a_directory_or_symlink_as_dest(tmp_path):
    make_tree(tmp_path / "src")
    (tmp_path / "dir.tgz").mkdir()
    with pytest.raises(ArchiveError, match="not a regular file"):
        pack(str(tmp_path / "src"), str(tmp_path / "dir.tgz"))
    os.symlink("/etc/passwd", tmp_path / "link.tgz")
    with pytest.raises(ArchiveError, match="symbolic link"):
        pack(str(tmp_path / "src"), str(tmp_path / "link.tgz"))


@pytest.mark.parametrize("value, expected", [("0600", 0o600), ("644", 0o644), (0o640, 0o640)])
def test_parse_mode_accepts_octal(value, expected):
    assert parse_mode(value) == expected


@pytest.mark.parametrize("value", ["rw", "0800", 600, "04755", True])
def test_parse_mode_refuses_the_rest(value):
    with pytest.raises(ArchiveError):
        parse_mode(value)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/./b",
                                  "a\\b", "a\nb", "x" * 256, "/".join(["d"] * 600), ""])
def test_path_problem_names_unsafe_paths(name):
    assert path_problem(name)


@pytest.mark.parametrize("name", ["registry.sqlite", "keys/metadata/a.json", "d\u00fcr/\u540d",
                                  "a..b", ".hidden", "x" * 255])
def test_path_problem_accepts_safe_paths(name):
    assert path_problem(name) is None


# ---------------------------------------------------------------------------
# Extraction: round trip, idempotency, force, check mode


def test_extract_round_trip(tmp_path, packed):
    src, archive, result = packed
    dest = tmp_path / "restore"
    out = extract(str(archive), str(dest))
    assert out["changed"] and not out["replaced"]
    assert out["sha3_256"] == result["sha3_256"] and out["size_bytes"] == result["size_bytes"]
    assert out["files"] == [n for n in expected_names() if n in CONTENT]
    assert out["file_count"] == len(CONTENT) and out["members"] == result["members"]
    assert out["compression"] == "gzip"
    state = tree_state(dest)
    for rel, data in CONTENT.items():
        assert state[rel] == ("file", 0o755 if rel in EXECUTABLES else 0o644, data)
    for rel in EMPTY_DIRS:
        assert state[rel] == ("dir", 0o755, None)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "restore", "src"]


def test_extract_plain_tar(tmp_path):
    make_tree(tmp_path / "src")
    pack(str(tmp_path / "src"), str(tmp_path / "b.tar"), compression="none")
    out = extract(str(tmp_path / "b.tar"), str(tmp_path / "dest"))
    assert out["compression"] == "none"
    assert tree_state(tmp_path / "dest")["build/big.bin"][2] == BIG


def test_extract_again_is_unchanged_and_check_mode_agrees(tmp_path, packed):
    _src, archive, _result = packed
    dest = tmp_path / "restore"
    extract(str(archive), str(dest))
    before = tree_state(dest)
    ino = dest.stat().st_ino
    again = extract(str(archive), str(dest))
    assert not again["changed"]
    assert not extract(str(archive), str(dest), check=True)["changed"]
    assert dest.stat().st_ino == ino and tree_state(dest) == before


def test_check_mode_extraction_writes_nothing(tmp_path, packed):
    _src, archive, _result = packed
    out = extract(str(archive), str(tmp_path / "restore"), check=True)
    assert out["changed"] and out["file_count"] == len(CONTENT)
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "src"]


def test_extract_into_existing_empty_directory(tmp_path, packed):
    _src, archive, _result = packed
    (tmp_path / "restore").mkdir()
    assert extract(str(archive), str(tmp_path / "restore"))["changed"]
    assert tree_state(tmp_path / "restore")["policy_store.json"][2] == CONTENT["policy_store.json"]


@pytest.mark.parametrize("spoil", ["edit", "extra", "mode", "missing"])
def test_differing_dest_needs_force_then_is_replaced(tmp_path, packed, spoil):
    _src, archive, _result = packed
    dest = tmp_path / "restore"
    extract(str(archive), str(dest))
    if spoil == "edit":
        (dest / "policy_store.json").write_bytes(b"tampered")
    elif spoil == "extra":
        (dest / "keys" / "trusted" / "stray.pub").write_bytes(b"x")
    elif spoil == "mode":
        os.chmod(dest / "registry.sqlite", 0o600)
    else:
        os.unlink(dest / "config" / "helm" / "values-prod.yaml")
    spoiled = tree_state(dest)
    with pytest.raises(ArchiveError, match="not empty and differs.*force"):
        extract(str(archive), str(dest))
    assert tree_state(dest) == spoiled
    assert extract(str(archive), str(dest), force=True, check=True)["changed"]
    assert tree_state(dest) == spoiled
    out = extract(str(archive), str(dest), force=True)
    assert out["changed"] and out["replaced"]
    fresh = tmp_path / "fresh"
    extract(str(archive), str(fresh))
    assert tree_state(dest) == tree_state(fresh)
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "fresh", "restore", "src"]


def test_force_replacement_without_renameat2(tmp_path, packed, monkeypatch):
    _src, archive, _result = packed
    dest = tmp_path / "restore"
    dest.mkdir()
    (dest / "old.txt").write_text("previous")
    monkeypatch.setattr(cap_archive, "_exchange", lambda path_a, path_b: False)
    out = extract(str(archive), str(dest), force=True)
    assert out["replaced"] and not out["warnings"]
    assert not (dest / "old.txt").exists()
    assert read_bytes(dest / "build" / "big.bin") == BIG
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "restore", "src"]


def test_unrelated_non_empty_dest_is_refused_without_force(tmp_path, packed):
    _src, archive, _result = packed
    dest = tmp_path / "restore"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(ArchiveError, match="force"):
        extract(str(archive), str(dest))
    assert (dest / "notes.txt").read_text() == "keep me"


def test_dest_that_is_a_file_or_symlink_is_refused(tmp_path, packed):
    _src, archive, _result = packed
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveError, match="not a directory"):
        extract(str(archive), str(tmp_path / "file"), force=True)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract(str(archive), str(tmp_path / "link"), force=True)
    assert os.listdir(tmp_path / "real") == []


def test_archive_inside_dest_is_not_deleted_by_force(tmp_path, packed):
    _src, archive, _result = packed
    dest = tmp_path / "restore"
    dest.mkdir()
    inner = dest / "backup.tar.gz"
    shutil.copy(archive, inner)
    with pytest.raises(ArchiveError, match="inside dest"):
        extract(str(inner), str(dest), force=True)
    assert inner.exists()


def test_validate_archive_reports_without_extracting(tmp_path, packed):
    _src, archive, result = packed
    info = validate_archive(str(archive))
    assert info["sha3_256"] == result["sha3_256"] and info["members"] == result["members"]
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "src"]


def test_archives_from_gnu_tar_with_dot_prefix_extract(tmp_path):
    make_tree(tmp_path / "src")
    archive = tmp_path / "gnu.tgz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(tmp_path / "src"), "."], check=True)
    out = extract(str(archive), str(tmp_path / "dest"))
    assert sorted(out["files"]) == sorted(CONTENT)
    for rel, data in CONTENT.items():
        assert read_bytes(tmp_path / "dest" / rel) == data


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_archives_from_python_tarfile_extract(tmp_path, fmt):
    make_tree(tmp_path / "src")
    archive = tmp_path / "py.tgz"
    with tarfile.open(archive, "w:gz", format=fmt) as tar:
        for rel in sorted(CONTENT):
            if fmt == tarfile.USTAR_FORMAT and (len(rel) > 100 or not rel.isascii()):
                continue
            tar.add(tmp_path / "src" / rel, arcname=rel)
    out = extract(str(archive), str(tmp_path / "dest"))
    for rel in out["files"]:
        assert read_bytes(tmp_path / "dest" / rel) == CONTENT[rel]
    assert len(out["files"]) >= len(CONTENT) - 2


def test_multi_member_gzip_extracts(tmp_path):
    make_tree(tmp_path / "src")
    pack(str(tmp_path / "src"), str(tmp_path / "b.tar"), compression="none")
    raw = read_bytes(tmp_path / "b.tar")
    cut = len(raw) // 3
    (tmp_path / "multi.tgz").write_bytes(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]))
    subprocess.run(["gzip", "-t", str(tmp_path / "multi.tgz")], check=True)
    out = extract(str(tmp_path / "multi.tgz"), str(tmp_path / "dest"))
    assert out["file_count"] == len(CONTENT)
    assert read_bytes(tmp_path / "dest" / "build" / "big.bin") == BIG


# ---------------------------------------------------------------------------
# Extraction: malicious archives


def build_tar(path, members, compression="gz", fmt=tarfile.PAX_FORMAT):
    """Write an archive from (name, kind, extra) tuples with Python's tarfile."""
    mode = "w:" + compression if compression else "w"
    target = dict(fileobj=path) if isinstance(path, io.BytesIO) else dict(name=path)
    with tarfile.open(mode=mode, format=fmt, **target) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            data = None
            if kind == "file":
                data = extra if extra is not None else b"payload"
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = extra
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            elif kind == "blk":
                info.type = tarfile.BLKTYPE
                info.devmajor, info.devminor = 8, 0
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "mode":
                data = b"#!/bin/sh\n"
                info.size = len(data)
                info.mode = extra
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


GOOD = ("registry.sqlite", "file", b"SQLite format 3\x00")
MALICIOUS = {
    "absolute": ([GOOD, ("/etc/cron.d/evil", "file", None)], "/etc/cron.d/evil", "absolute"),
    "traversal": ([GOOD, ("../evil.sh", "file", None)], "../evil.sh", "'..'"),
    "nested-traversal": ([("a", "dir", None), ("a/../../evil", "file", None)], "a/../../evil",
                         "'..'"),
    "symlink-outside": ([GOOD, ("escape", "symlink", "/etc")], "escape", "symbolic link"),
    "symlink-relative": ([GOOD, ("up", "symlink", "../../../etc/passwd")], "up", "symbolic link"),
    "hardlink-outside": ([GOOD, ("hl", "hardlink", "/etc/passwd")], "hl", "hard link"),
    "hardlink-inside": ([GOOD, ("hl", "hardlink", "registry.sqlite")], "hl", "hard link"),
    "char-device": ([GOOD, ("null", "chr", None)], "null", "character device"),
    "block-device": ([GOOD, ("sda", "blk", None)], "sda", "block device"),
    "fifo": ([GOOD, ("pipe", "fifo", None)], "pipe", "FIFO"),
    "duplicate": ([GOOD, ("policy_store.json", "file", b"1"), ("policy_store.json", "file", b"2")],
                  "policy_store.json", "more than once"),
    "duplicate-dir": ([("keys", "dir", None), ("keys/", "dir", None)], "keys/", "more than once"),
    "under-symlink-dir": ([("lnk", "symlink", "/tmp"), ("lnk/evil", "file", None)], "lnk/evil",
                          "goes through 'lnk'"),
    "under-file": ([("config", "file", None), ("config/x", "file", None)], "config/x",
                   "regular file"),
    "file-over-dir": ([("a/b", "file", None), ("a", "file", None)], "a", "as a directory"),
    "long-name": ([("d/" + "/".join(["x" * 250] * 5), "file", None)], "d/" + "x" * 200,
                  "more than 1024"),
    "long-segment": ([("k" * 300, "file", None)], "k" * 300, "longer than 255"),
    "control-char": ([("evil\nname", "file", None)], "evil\\nname", "control character"),
    "root-file": ([(".", "file", None)], "'.'", "archive root"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused_and_nothing_written(tmp_path, case):
    members, culprit, reason = MALICIOUS[case]
    archive = build_tar(tmp_path / "evil.tgz", members)
    work = tmp_path / "work"
    work.mkdir()
    for check in (True, False):
        with pytest.raises(ArchiveError) as err:
            extract(str(archive), str(work / "restore"), check=check)
        message = str(err.value)
        assert "nothing was written" in message
        assert culprit in message and reason in message, message
        assert err.value.problems
        assert os.listdir(work) == []


@pytest.mark.parametrize("case", ["traversal", "symlink-outside", "duplicate", "char-device"])
def test_malicious_archive_leaves_existing_dest_untouched_even_with_force(tmp_path, packed, case):
    _src, good, _result = packed
    dest = tmp_path / "restore"
    extract(str(good), str(dest))
    before = tree_state(dest)
    archive = build_tar(tmp_path / "evil.tgz", MALICIOUS[case][0])
    with pytest.raises(ArchiveError, match="nothing was written"):
        extract(str(archive), str(dest), force=True)
    assert tree_state(dest) == before
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "evil.tgz", "restore", "src"]


def test_refusal_lists_every_bad_member(tmp_path):
    members = [("lnk", "symlink", "/tmp"), ("lnk/evil", "file", None), ("ok.txt", "file", None),
               ("../x", "file", None)]
    archive = build_tar(tmp_path / "evil.tar", members, compression="")
    with pytest.raises(ArchiveError) as err:
        extract(str(archive), str(tmp_path / "restore"))
    assert err.value.member == "lnk"
    assert [p.split(":")[0] for p in err.value.problems] == [
        "member 'lnk'", "member 'lnk/evil'", "member '../x'"]


def test_special_mode_bits_are_dropped(tmp_path):
    archive = build_tar(tmp_path / "modes.tgz", [
        ("suid", "mode", 0o4755), ("sgid", "mode", 0o2700), ("sticky", "mode", 0o1600),
        ("world", "mode", 0o666)])
    extract(str(archive), str(tmp_path / "dest"))
    modes = {k: v[1] for k, v in tree_state(tmp_path / "dest").items()}
    assert modes == {"suid": 0o755, "sgid": 0o755, "sticky": 0o644, "world": 0o644}


# ---------------------------------------------------------------------------
# Extraction: bombs, limits and corruption


def test_declared_size_over_limit_is_refused_before_reading(tmp_path):
    archive = build_tar(tmp_path / "big.tgz", [GOOD, ("huge.bin", "file", bytes(2 * 1024 * 1024))])
    with pytest.raises(ArchiveError) as err:
        extract(str(archive), str(tmp_path / "dest"), max_size_bytes=1024 * 1024)
    assert "huge.bin" in str(err.value) and "max_size_bytes" in str(err.value)
    assert err.value.member == "huge.bin"
    assert sorted(os.listdir(tmp_path)) == ["big.tgz"]


def test_decompression_bomb_in_padding_is_stopped(tmp_path):
    tar_stream = io.BytesIO()
    build_tar(tar_stream, [GOOD], compression="")
    bomb = tar_stream.getvalue() + bytes(64 * 1024 * 1024)
    (tmp_path / "bomb.tgz").write_bytes(gzip.compress(bomb, 9))
    assert (tmp_path / "bomb.tgz").stat().st_size < 200 * 1024
    with pytest.raises(ArchiveError, match="decompression bomb"):
        extract(str(tmp_path / "bomb.tgz"), str(tmp_path / "dest"), max_size_bytes=8 * 1024 * 1024)
    assert sorted(os.listdir(tmp_path)) == ["bomb.tgz"]


def test_member_count_limit(tmp_path):
    archive = build_tar(tmp_path / "many.tgz", [("f%d" % i, "file", b"x") for i in range(5)])
    with pytest.raises(ArchiveError, match="more than 3 members"):
        extract(str(archive), str(tmp_path / "dest"), max_members=3)
    assert extract(str(archive), str(tmp_path / "dest"), max_members=5)["file_count"] == 5


def _truncate_half(data):
    return data[:len(data) // 2]


def _drop_trailer(data):
    return data[:-8]


def _drop_size(data):
    return data[:-3]


def _flip_middle(data):
    pos = len(data) // 2
    return data[:pos] + bytes([data[pos] ^ 0x55]) + data[pos + 1:]


def _flip_crc(data):
    return data[:-8] + bytes([data[-8] ^ 0x01]) + data[-7:]


def _flip_isize(data):
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _garbage_after(data):
    return data + b"not gzip"


def _header_only(data):
    return data[:6]


@pytest.mark.parametrize("spoil", [_truncate_half, _drop_trailer, _drop_size, _flip_middle,
                                   _flip_crc, _flip_isize, _garbage_after, _header_only])
def test_corrupt_gzip_fails_cleanly(tmp_path, packed, spoil):
    _src, archive, _result = packed
    bad = tmp_path / "work" / "bad.tgz"
    bad.parent.mkdir()
    bad.write_bytes(spoil(read_bytes(archive)))
    for check in (True, False):
        with pytest.raises(ArchiveError) as err:
            extract(str(bad), str(tmp_path / "work" / "restore"), check=check)
        assert any(word in str(err.value) for word in ("corrupt", "truncated", "mismatch",
                                                         "unexpected data")), str(err.value)
    assert os.listdir(tmp_path / "work") == ["bad.tgz"]


def test_corrupt_gzip_does_not_replace_existing_dest(tmp_path, packed):
    _src, archive, _result = packed
    dest = tmp_path / "restore"
    dest.mkdir()
    (dest / "old.txt").write_text("previous restore")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(_flip_crc(read_bytes(archive)))
    with pytest.raises(ArchiveError, match="CRC32 mismatch"):
        extract(str(bad), str(dest), force=True)
    assert tree_state(dest) == {"old.txt": ("file", 0o644, b"previous restore")}
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "bad.tgz", "restore", "src"]


def test_corrupt_plain_tar_fails_cleanly(tmp_path):
    make_tree(tmp_path / "src")
    pack(str(tmp_path / "src"), str(tmp_path / "b.tar"), compression="none")
    raw = read_bytes(tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar") as tar:
        offsets = [m.offset for m in tar.getmembers()]
    header = offsets[3]
    cases = {
        "truncated-in-data": raw[:len(raw) // 2],
        "no-end-marker": raw[:offsets[-1] + 1024],
        "bad-header-checksum": raw[:header + 10] + b"\xff" + raw[header + 11:],
        "data-after-end": raw + b"junk" * 100,
    }
    for label, data in cases.items():
        bad = tmp_path / (label + ".tar")
        bad.write_bytes(data)
        with pytest.raises(ArchiveError, match="truncated|corrupt|unexpected data"):
            extract(str(bad), str(tmp_path / "dest"))
        assert not (tmp_path / "dest").exists(), label


def test_not_an_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    with pytest.raises(ArchiveError, match="not a gzip or tar archive"):
        extract(str(tmp_path / "notes.txt"), str(tmp_path / "dest"))
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ArchiveError, match="empty"):
        extract(str(tmp_path / "empty"), str(tmp_path / "dest"))


def test_highly_compressible_archive_extracts(tmp_path):
    # 64 KiB of compressed input that inflates past one 256 KiB output block, then the
    # end of the stream in the next call: the reader must find the trailer right after it.
    src = tmp_path / "src"
    (src / "build").mkdir(parents=True)
    (src / "build" / "registry.sqlite").write_bytes(b"\x00" * 300000 + os.urandom(2000) + b"A" * 99000)
    (src / "policy_store.json").write_bytes(b'{"policies": []}\n' * 4000)
    archive = tmp_path / "a.tar.gz"
    cap_archive.pack(str(src), str(archive))
    assert subprocess.run(["gzip", "-t", str(archive)]).returncode == 0
    out = tmp_path / "out"
    cap_archive.extract(str(archive), str(out))
    assert (out / "build" / "registry.sqlite").read_bytes() == (src / "build" / "registry.sqlite").read_bytes()
    assert (out / "policy_store.json").read_bytes() == (src / "policy_store.json").read_bytes()
