"""cap_backup_crypt run through Ansible: results, failures, check mode, secrecy of the key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from ansible.module_utils.cap_crypt import TAG_SIZE, derive_key_id, read_header
from ansible.module_utils.cap_hashing import sha3_file
from tests.conftest import ROOT, ansible_env

MIB = 1024 * 1024


@pytest.fixture
def key():
    return os.urandom(32)


@pytest.fixture
def run(module):
    """Run the module and assert the base64 key never shows in stdout or stderr."""
    secrets = []

    def _run(args, check=False, secret=None):
        if secret is not None:
            secrets.append(secret)
        for value in (args.get("key"),):
            if value:
                secrets.append(value)
        result = module("cap_backup_crypt", args, check=check)
        for text in secrets:
            assert text not in result.proc.stdout, "key leaked to stdout"
            assert text not in result.proc.stderr, "key leaked to stderr"
            assert text not in json.dumps(result.result), "key leaked into the result"
        return result

    return _run


def b64(key):
    return base64.b64encode(key).decode()


def listing(directory):
    return sorted(os.listdir(directory))


def encrypt_args(src, dest, key, **extra):
    args = {"mode": "encrypt", "src": str(src), "dest": str(dest), "key": b64(key)}
    args.update(extra)
    return args


def decrypt_args(src, dest, key, **extra):
    args = {"mode": "decrypt", "src": str(src), "dest": str(dest), "key": b64(key)}
    args.update(extra)
    return args


@pytest.mark.parametrize("size", [0, 3 * MIB + 1])
def test_encrypt_decrypt_round_trip(run, key, tmp_path, size):
    src, enc, dec = tmp_path / "a.tar.gz", tmp_path / "a.tar.gz.enc", tmp_path / "restored.tar.gz"
    src.write_bytes(os.urandom(size))
    res = run(encrypt_args(src, enc, key))
    assert not res.failed, res.msg
    assert res.changed
    chunks = max(1, -(-size // MIB))
    assert res["chunks"] == chunks
    assert res["key_id"] == derive_key_id(key)
    assert (res["sha3_256"], res["size_bytes"]) == sha3_file(str(enc))
    assert res["size_bytes"] == read_header(str(enc)).size + size + TAG_SIZE * chunks
    assert oct(enc.stat().st_mode & 0o777) == "0o600"

    res = run(decrypt_args(enc, dec, key))
    assert not res.failed, res.msg
    assert res.changed
    assert dec.read_bytes() == src.read_bytes()
    assert (res["sha3_256"], res["size_bytes"]) == sha3_file(str(src))
    assert listing(tmp_path) == ["a.tar.gz", "a.tar.gz.enc", "restored.tar.gz"]


def test_reruns_report_no_change(run, key, tmp_path):
    src, enc, dec = tmp_path / "a", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(os.urandom(1000))
    assert run(encrypt_args(src, enc, key, chunk_size=256)).changed
    assert run(decrypt_args(enc, dec, key)).changed
    enc_bytes = enc.read_bytes()
    os.utime(enc, (1000000000, 1000000000))
    os.utime(dec, (1000000000, 1000000000))

    again = run(encrypt_args(src, enc, key, chunk_size=256))
    assert not again.failed and not again.changed
    assert again["sha3_256"] == sha3_file(str(enc))[0]
    assert again["chunks"] == 4
    assert enc.read_bytes() == enc_bytes and enc.stat().st_mtime == 1000000000

    again = run(decrypt_args(enc, dec, key))
    assert not again.failed and not again.changed
    assert dec.stat().st_mtime == 1000000000

    forced = run(encrypt_args(src, enc, key, chunk_size=256, force=True))
    assert forced.changed and enc.read_bytes() != enc_bytes


def test_file_mode_is_applied_and_corrected(run, key, tmp_path):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(b"content")
    res = run(encrypt_args(src, enc, key, file_mode="0640"))
    assert res.changed and oct(enc.stat().st_mode & 0o777) == "0o640"
    assert not run(encrypt_args(src, enc, key, file_mode="0640")).changed
    enc.chmod(0o600)
    res = run(encrypt_args(src, enc, key, file_mode="0640"))
    assert res.changed and oct(enc.stat().st_mode & 0o777) == "0o640"


def test_key_file_base64_and_raw(run, key, tmp_path):
    src, enc, dec = tmp_path / "a", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(os.urandom(5000))
    kb64, kraw = tmp_path / "k.b64", tmp_path / "k.raw"
    kb64.write_text(b64(key) + "\n")
    kraw.write_bytes(key)
    kb64.chmod(0o600)
    kraw.chmod(0o600)
    res = run({"mode": "encrypt", "src": str(src), "dest": str(enc), "key_file": str(kb64)},
              secret=b64(key))
    assert not res.failed, res.msg
    assert res["key_id"] == derive_key_id(key)
    assert not res.get("warnings")
    res = run({"mode": "decrypt", "src": str(enc), "dest": str(dec), "key_file": str(kraw)},
              secret=b64(key))
    assert not res.failed, res.msg
    assert dec.read_bytes() == src.read_bytes()
    # key given inline decrypts what key_file encrypted
    dec.unlink()
    assert not run(decrypt_args(enc, dec, key)).failed


def test_key_file_readable_by_others_warns(run, key, tmp_path):
    src, enc, kfile = tmp_path / "a", tmp_path / "a.enc", tmp_path / "k.b64"
    src.write_bytes(b"x")
    kfile.write_text(b64(key))
    kfile.chmod(0o644)
    res = run({"mode": "encrypt", "src": str(src), "dest": str(enc), "key_file": str(kfile)},
              secret=b64(key))
    assert not res.failed
    assert any("accessible by group or others" in w for w in res["warnings"])


@pytest.mark.parametrize("value, message", [
    ("this is not base64!", "key is not valid base64"),
    (base64.b64encode(b"k" * 16).decode(), "key decodes to 16 bytes; AES-256 needs exactly 32"),
])
def test_invalid_key_fails_clearly(run, tmp_path, value, message):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(b"x")
    res = run({"mode": "encrypt", "src": str(src), "dest": str(enc), "key": value})
    assert res.failed
    assert message in res.msg
    assert listing(tmp_path) == ["a"]


def test_argument_constraints(run, key, tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"x")
    kfile = tmp_path / "k"
    kfile.write_text(b64(key))
    res = run({"mode": "encrypt", "src": str(src), "dest": str(tmp_path / "o"), "key": b64(key),
               "key_file": str(kfile)})
    assert res.failed and "mutually exclusive" in res.msg
    res = run({"mode": "decrypt", "src": str(src), "dest": str(tmp_path / "o")})
    assert res.failed and "key, key_file" in res.msg
    res = run({"mode": "encrypt", "src": str(src), "key": b64(key)})
    assert res.failed and "dest" in res.msg
    res = run(decrypt_args(src, tmp_path / "o", key, wrapped_key="vault:v1:x"))
    assert res.failed and "wrapped_key only applies to mode=encrypt" in res.msg
    assert listing(tmp_path) == ["a", "k"]


def corrupt(blob, how):
    header = 74
    record = 256 + TAG_SIZE
    if how == "flipped chunk":
        return blob[:header + record + 9] + bytes([blob[header + record + 9] ^ 1]) \
            + blob[header + record + 10:]
    if how == "flipped header":
        return blob[:30] + bytes([blob[30] ^ 0x80]) + blob[31:]
    if how == "flipped tag":
        return blob[:-1] + bytes([blob[-1] ^ 1])
    if how == "truncated":
        return blob[:header + 2 * record]
    if how == "cut mid chunk":
        return blob[:header + record + 100]
    if how == "appended":
        return blob + b"\x00"
    if how == "reordered":
        first, second = blob[header:header + record], blob[header + record:header + 2 * record]
        return blob[:header] + second + first + blob[header + 2 * record:]
    if how == "not encrypted":
        return b"\x1f\x8b\x08" + blob[3:]
    raise ValueError(how)


@pytest.mark.parametrize("how, message", [
    ("flipped chunk", "authentication failed at chunk 1 of"),
    ("flipped header", "authentication failed at chunk 0 of"),
    ("flipped tag", "authentication failed at chunk 3 of"),
    ("truncated", "truncated: no final chunk"),
    ("cut mid chunk", "authentication failed at chunk 1 of"),
    ("appended", "authentication failed at chunk 3 of"),
    ("reordered", "authentication failed at chunk 0 of"),
    ("not encrypted", "not a CAPCRYPT encrypted file"),
])
def test_damaged_archive_fails_and_leaves_dest_alone(run, key, tmp_path, how, message):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(os.urandom(3 * 256 + 50))
    assert run(encrypt_args(src, enc, key, chunk_size=256)).changed
    enc.write_bytes(corrupt(enc.read_bytes(), how))
    fresh = tmp_path / "fresh.out"
    res = run(decrypt_args(enc, fresh, key))
    assert res.failed and message in res.msg, res.msg
    assert str(enc) in res.msg
    assert not fresh.exists()
    existing = tmp_path / "existing.out"
    existing.write_bytes(b"yesterday's restore")
    os.utime(existing, (1000000000, 1000000000))
    res = run(decrypt_args(enc, existing, key))
    assert res.failed
    assert existing.read_bytes() == b"yesterday's restore"
    assert existing.stat().st_mtime == 1000000000
    assert listing(tmp_path) == ["a", "a.enc", "existing.out"]


def test_wrong_key_fails_fast_with_both_key_ids(run, key, tmp_path):
    src, enc, dec = tmp_path / "a", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(b"secret backup")
    run(encrypt_args(src, enc, key))
    other = os.urandom(32)
    res = run(decrypt_args(enc, dec, other), secret=b64(key))
    assert res.failed
    assert ("wrong key: archive %s encrypted with key id %s, the key given has key id %s"
            % (enc, derive_key_id(key), derive_key_id(other))) in res.msg
    assert not dec.exists()


def test_wrong_key_with_named_key_id(run, key, tmp_path):
    src, enc, dec = tmp_path / "a", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(b"secret backup")
    run(encrypt_args(src, enc, key, key_id="transit-cap-backup"))
    res = run(decrypt_args(enc, dec, os.urandom(32)), secret=b64(key))
    assert res.failed and "wrong key or corrupted data" in res.msg
    res = run(decrypt_args(enc, dec, key, key_id="transit-other"))
    assert res.failed and "expected key id transit-other" in res.msg
    assert listing(tmp_path) == ["a", "a.enc"]


def test_unreadable_src(run, key, tmp_path):
    res = run(encrypt_args(tmp_path / "missing", tmp_path / "out", key))
    assert res.failed and "cannot read src" in res.msg and "missing" in res.msg
    res = run(decrypt_args(tmp_path / "missing", tmp_path / "out", key))
    assert res.failed and "cannot read src" in res.msg
    assert listing(tmp_path) == []


def test_inspect_returns_the_wrapped_key_without_a_key(run, key, tmp_path):
    wrapped = "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w=="
    src, enc, dec = tmp_path / "a", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(os.urandom(2000))
    res = run(encrypt_args(src, enc, key, wrapped_key=wrapped,
                           key_id="transit:transit/cap-backup", chunk_size=1024))
    assert res["wrapped_key"] == wrapped
    info = run({"mode": "inspect", "src": str(enc)})
    assert not info.failed and not info.changed
    assert info["wrapped_key"] == wrapped
    assert info["key_id"] == "transit:transit/cap-backup"
    assert info["key_id_derived"] is False
    assert info["chunk_size"] == 1024
    assert info["format_version"] == 1
    assert info["algorithm"] == "aes-256-gcm"
    assert info["size_bytes"] == enc.stat().st_size
    res = run(decrypt_args(enc, dec, key))
    assert not res.failed and dec.read_bytes() == src.read_bytes()
    assert res["wrapped_key"] == wrapped


def test_inspect_rejects_a_bad_header(run, tmp_path):
    path = tmp_path / "plain.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00rest")
    res = run({"mode": "inspect", "src": str(path)})
    assert res.failed and "unencrypted gzip" in res.msg


def test_check_mode_encrypt_writes_nothing(run, key, tmp_path):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(os.urandom(3000))
    res = run(encrypt_args(src, enc, key, chunk_size=1024), check=True)
    assert not res.failed and res.changed
    assert res["chunks"] == 3
    assert listing(tmp_path) == ["a"]
    run(encrypt_args(src, enc, key, chunk_size=1024))
    before = enc.read_bytes()
    res = run(encrypt_args(src, enc, key, chunk_size=1024), check=True)
    assert not res.changed
    src.write_bytes(b"changed")
    res = run(encrypt_args(src, enc, key, chunk_size=1024), check=True)
    assert res.changed and enc.read_bytes() == before


def test_check_mode_decrypt_authenticates_and_writes_nothing(run, key, tmp_path):
    src, enc, dec = tmp_path / "a", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(os.urandom(3000))
    run(encrypt_args(src, enc, key, chunk_size=1024))
    res = run(decrypt_args(enc, dec, key), check=True)
    assert not res.failed and res.changed
    assert res["sha3_256"] == sha3_file(str(src))[0]
    assert not dec.exists()
    blob = enc.read_bytes()
    enc.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    res = run(decrypt_args(enc, dec, key), check=True)
    assert res.failed and "authentication failed at chunk 2" in res.msg
    assert listing(tmp_path) == ["a", "a.enc"]
    enc.write_bytes(blob)
    dec.write_bytes(src.read_bytes())
    dec.chmod(0o644)
    # Same content but other permissions: would change (the mode), and does not yet.
    assert run(decrypt_args(enc, dec, key), check=True).changed
    assert oct(dec.stat().st_mode & 0o777) == "0o644"
    dec.chmod(0o600)
    assert not run(decrypt_args(enc, dec, key), check=True).changed


def test_missing_cryptography_is_reported(key, tmp_path):
    """Run the module file directly with 'cryptography' made unimportable."""
    args = {"ANSIBLE_MODULE_ARGS": encrypt_args(tmp_path / "a", tmp_path / "b", key)}
    script = (
        "import sys, runpy\n"
        "sys.modules['cryptography'] = None\n"
        "import ansible.module_utils\n"
        "ansible.module_utils.__path__.append(%r)\n"
        "sys.argv = [sys.argv[0], %r]\n"
        "runpy.run_path(%r, run_name='__main__')\n"
        % (str(ROOT / "module_utils"), json.dumps(args),
           str(ROOT / "library" / "cap_backup_crypt.py")))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=ansible_env(), timeout=120)
    result = json.loads(proc.stdout)
    assert result["failed"]
    assert "Failed to import the required Python library (cryptography)" in result["msg"]
    assert b64(key) not in proc.stdout + proc.stderr
