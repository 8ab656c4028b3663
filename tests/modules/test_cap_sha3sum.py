"""cap_sha3sum run through Ansible."""

import hashlib
import os
import stat

ARCHIVE = "cap-backup-20251110-120000.tar.gz.enc"


def make_archive(tmp_path, size=3 * 1024 * 1024 + 5):
    path = tmp_path / ARCHIVE
    path.write_bytes(os.urandom(size))
    return str(path), "0x" + hashlib.sha3_256(path.read_bytes()).hexdigest()


def test_hash_and_expected(module, tmp_path):
    path, digest = make_archive(tmp_path)
    res = module("cap_sha3sum", dict(path=path))
    assert not res.failed, res.msg
    assert not res.changed
    assert res["sha3_256"] == digest
    assert res["size_bytes"] == os.path.getsize(path)
    assert "matched" not in res.result

    for expected in (digest, digest[2:], digest.upper().replace("0X", "0x")):
        res = module("cap_sha3sum", dict(path=path, expected=expected))
        assert not res.failed, res.msg
        assert res["matched"] is True and res["expected"] == digest


def test_mismatch_with_expected(module, tmp_path):
    path, digest = make_archive(tmp_path, size=1000)
    wrong = "0x" + "0" * 64
    res = module("cap_sha3sum", dict(path=path, expected=wrong))
    assert res.failed
    assert res.msg == ("SHA3-256 of %s is %s, expected %s: the archive is corrupt or incomplete"
                       % (path, digest, wrong))
    assert res["matched"] is False


def test_sidecar_written_once_then_checked(module, tmp_path):
    path, digest = make_archive(tmp_path, size=4096)
    sidecar = path + ".sha3"
    res = module("cap_sha3sum", dict(path=path, write_sidecar=sidecar))
    assert not res.failed, res.msg
    assert res.changed and res["sidecar_written"] == sidecar
    assert open(sidecar).read() == "%s  %s\n" % (digest[2:], ARCHIVE)
    assert stat.S_IMODE(os.stat(sidecar).st_mode) == 0o644
    mtime = os.stat(sidecar).st_mtime_ns

    again = module("cap_sha3sum", dict(path=path, write_sidecar=sidecar))
    assert not again.failed, again.msg
    assert not again.changed and again["sidecar_written"] is None
    assert os.stat(sidecar).st_mtime_ns == mtime

    check = module("cap_sha3sum", dict(path=path, sidecar=sidecar))
    assert not check.failed, check.msg
    assert check["matched"] is True and not check.changed


def test_sidecar_mismatch_names_both_hashes(module, tmp_path):
    path, digest = make_archive(tmp_path, size=4096)
    sidecar = path + ".sha3"
    with open(sidecar, "w") as handle:
        handle.write("0x%s  %s\n" % ("b" * 64, ARCHIVE))
    res = module("cap_sha3sum", dict(path=path, sidecar=sidecar,
                                     write_sidecar=str(tmp_path / "new.sha3")))
    assert res.failed
    assert res.msg == ("SHA3-256 of %s is %s, the sidecar %s says 0x%s: the archive is corrupt "
                       "or incomplete" % (path, digest, sidecar, "b" * 64))
    assert not (tmp_path / "new.sha3").exists()


def test_truncated_archive_is_detected(module, tmp_path):
    path, _digest = make_archive(tmp_path, size=8192)
    module("cap_sha3sum", dict(path=path, write_sidecar=path + ".sha3"))
    with open(path, "r+b") as handle:
        handle.truncate(4096)
    res = module("cap_sha3sum", dict(path=path, sidecar=path + ".sha3"))
    assert res.failed and "corrupt or incomplete" in res.msg


def test_sidecar_for_another_file_fails(module, tmp_path):
    path, digest = make_archive(tmp_path, size=100)
    sidecar = tmp_path / "x.sha3"
    sidecar.write_text("%s  other.tar.gz\n" % digest[2:])
    res = module("cap_sha3sum", dict(path=path, sidecar=str(sidecar)))
    assert res.failed and "describes other.tar.gz, not %s" % ARCHIVE in res.msg


def test_check_mode_does_not_write(module, tmp_path):
    path, _digest = make_archive(tmp_path, size=100)
    sidecar = path + ".sha3"
    res = module("cap_sha3sum", dict(path=path, write_sidecar=sidecar), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert not os.path.exists(sidecar)


def test_argument_errors(module, tmp_path):
    path, digest = make_archive(tmp_path, size=10)
    res = module("cap_sha3sum", dict(path=path, expected=digest, sidecar=path + ".sha3"))
    assert res.failed and "mutually exclusive" in res.msg
    res = module("cap_sha3sum", dict(path=path, expected="0x1234"))
    assert res.failed and "not a SHA3-256 hex digest" in res.msg
    res = module("cap_sha3sum", dict(path=str(tmp_path / "missing.tar.gz")))
    assert res.failed and "missing.tar.gz does not exist" in res.msg
    res = module("cap_sha3sum", dict(path=path, sidecar=str(tmp_path / "none.sha3")))
    assert res.failed and "none.sha3" in res.msg and "does not exist" in res.msg
