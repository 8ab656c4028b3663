"""cap_backup_sign run through Ansible: sign, verify, failures, idempotence, check mode."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from ansible.module_utils.cap_hashing import sha3_bytes
from ansible.module_utils.cap_keys import fingerprint, generate_seed, public_from_seed, public_pem
from tests.conftest import ROOT, ansible_env

MANIFEST = b'{\n  "version": "backup.manifest.v1",\n  "backup_id": "backup-20251110-120000"\n}\n'


@pytest.fixture
def seed():
    return generate_seed()


@pytest.fixture
def setup(tmp_path, seed):
    manifest = tmp_path / "backup.manifest.json"
    manifest.write_bytes(MANIFEST)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "cap-backup.pub").write_text(public_pem(public_from_seed(seed)))
    (trusted / "company.pub").write_text(public_pem(public_from_seed(generate_seed())))
    return manifest, trusted


@pytest.fixture
def run(module, seed):
    """Run the module and assert the private key never shows in output."""
    secrets = [base64.b64encode(seed).decode(), seed.hex()]

    def _run(args, check=False):
        result = module("cap_backup_sign", args, check=check)
        for text in secrets:
            assert text not in result.proc.stdout, "private key leaked to stdout"
            assert text not in result.proc.stderr, "private key leaked to stderr"
            assert text not in json.dumps(result.result), "private key leaked into the result"
        return result

    return _run


def sign_args(manifest, seed, **extra):
    args = {"mode": "sign", "path": str(manifest), "private_key": base64.b64encode(seed).decode(),
            "kid": "cap-backup"}
    args.update(extra)
    return args


def verify_args(manifest, trusted, **extra):
    args = {"mode": "verify", "path": str(manifest), "trusted_keys_dir": str(trusted)}
    args.update(extra)
    return args


def test_sign_then_verify(run, setup, seed):
    manifest, trusted = setup
    sig = manifest.parent / "backup.manifest.json.sig"
    res = run(sign_args(manifest, seed, trusted_keys_dir=str(trusted)))
    assert not res.failed, res.msg
    assert res.changed
    assert res["signature"] == str(sig)
    assert res["sha3_256"] == sha3_bytes(MANIFEST)
    assert res["fingerprint"] == fingerprint(public_from_seed(seed))
    doc = json.loads(sig.read_text())
    assert doc == res["document"]
    assert list(doc) == ["version", "kid", "algorithm", "signed_file", "sha3_256", "signature"]
    assert oct(sig.stat().st_mode & 0o777) == "0o644"

    res = run(verify_args(manifest, trusted))
    assert not res.failed, res.msg
    assert not res.changed
    assert res["verified"] is True
    assert res["kid"] == "cap-backup"
    assert res["sha3_256"] == sha3_bytes(MANIFEST)


def test_resign_unchanged_is_not_a_change(run, setup, seed):
    manifest, _trusted = setup
    sig = manifest.parent / "backup.manifest.json.sig"
    assert run(sign_args(manifest, seed)).changed
    before = sig.read_bytes()
    os.utime(sig, (1000000000, 1000000000))
    res = run(sign_args(manifest, seed))
    assert not res.failed and not res.changed
    assert sig.read_bytes() == before and sig.stat().st_mtime == 1000000000
    manifest.write_bytes(MANIFEST.replace(b"120000", b"130000"))
    assert run(sign_args(manifest, seed)).changed
    assert sig.read_bytes() != before


def test_private_key_file_and_custom_paths(run, setup, seed, tmp_path):
    manifest, trusted = setup
    keyfile = tmp_path / "company.ed25519"
    keyfile.write_bytes(seed)
    keyfile.chmod(0o600)
    sig = tmp_path / "custom.sig"
    res = run({"mode": "sign", "path": str(manifest), "private_key_file": str(keyfile),
               "kid": "cap-backup", "signature": str(sig), "file_mode": "0600"})
    assert not res.failed, res.msg
    assert not res.get("warnings")
    assert oct(sig.stat().st_mode & 0o777) == "0o600"
    res = run(verify_args(manifest, trusted, signature=str(sig)))
    assert res["verified"]
    pub = public_pem(public_from_seed(seed))
    res = run({"mode": "verify", "path": str(manifest), "signature": str(sig),
               "public_key": pub, "kid": "cap-backup"})
    assert not res.failed and res["verified"]
    res = run({"mode": "verify", "path": str(manifest), "signature": str(sig),
               "public_key": base64.b64encode(public_from_seed(seed)).decode()})
    assert not res.failed and res["verified"]


def test_private_key_file_readable_by_others_warns(run, setup, seed, tmp_path):
    manifest, _trusted = setup
    keyfile = tmp_path / "company.ed25519"
    keyfile.write_bytes(seed)
    keyfile.chmod(0o644)
    res = run({"mode": "sign", "path": str(manifest), "private_key_file": str(keyfile),
               "kid": "cap-backup"})
    assert not res.failed
    assert any("accessible by group or others" in w for w in res["warnings"])


def test_tampered_manifest_fails(run, setup, seed):
    manifest, trusted = setup
    run(sign_args(manifest, seed))
    data = bytearray(MANIFEST)
    data[20] ^= 0x01
    manifest.write_bytes(bytes(data))
    res = run(verify_args(manifest, trusted))
    assert res.failed and res["verified"] is False
    assert ("signature does not match %s: file changed after signing or wrong key" % manifest
            in res.msg)
    assert sha3_bytes(bytes(data)) in res.msg and sha3_bytes(MANIFEST) in res.msg


def test_tampered_signature_fails(run, setup, seed):
    manifest, trusted = setup
    run(sign_args(manifest, seed))
    sig = manifest.parent / "backup.manifest.json.sig"
    doc = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(doc["signature"]))
    raw[0] ^= 0x01
    doc["signature"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(doc))
    res = run(verify_args(manifest, trusted))
    assert res.failed and "signature does not match" in res.msg


def test_unknown_kid_fails(run, setup, seed):
    manifest, trusted = setup
    run(sign_args(manifest, seed, kid="retired-2024"))
    res = run(verify_args(manifest, trusted))
    assert res.failed
    assert ("kid retired-2024 is not among the trusted keys in %s: cap-backup, company"
            % trusted) in res.msg


def test_wrong_trusted_key_with_the_right_kid_fails(run, setup, seed):
    manifest, trusted = setup
    run(sign_args(manifest, seed))
    (trusted / "cap-backup.pub").write_text(public_pem(public_from_seed(generate_seed())))
    res = run(verify_args(manifest, trusted))
    assert res.failed and "signature does not match" in res.msg
    assert "other than kid cap-backup" in res.msg


def test_pinned_kid_mismatch_fails(run, setup, seed):
    manifest, trusted = setup
    run(sign_args(manifest, seed))
    res = run(verify_args(manifest, trusted, kid="company"))
    assert res.failed and "signed by kid cap-backup, but kid company is required" in res.msg


@pytest.mark.parametrize("content, message", [
    ("{ not json", "is not valid JSON"),
    ('{"version": "backup.signature.v1"}', "missing field(s)"),
])
def test_malformed_signature_file_fails(run, setup, seed, content, message):
    manifest, trusted = setup
    (manifest.parent / "backup.manifest.json.sig").write_text(content)
    res = run(verify_args(manifest, trusted))
    assert res.failed and message in res.msg


def test_wrong_algorithm_fails(run, setup, seed):
    manifest, trusted = setup
    run(sign_args(manifest, seed))
    sig = manifest.parent / "backup.manifest.json.sig"
    doc = json.loads(sig.read_text())
    doc["algorithm"] = "ecdsa-p256"
    sig.write_text(json.dumps(doc))
    res = run(verify_args(manifest, trusted))
    assert res.failed and "algorithm 'ecdsa-p256' is not supported" in res.msg


def test_signing_with_a_key_that_is_not_the_kids_fails(run, setup, seed):
    manifest, trusted = setup
    res = run(sign_args(manifest, seed, kid="company", trusted_keys_dir=str(trusted)))
    assert res.failed and "the private key does not belong to kid company" in res.msg
    assert not (manifest.parent / "backup.manifest.json.sig").exists()


def test_check_mode(run, setup, seed):
    manifest, trusted = setup
    sig = manifest.parent / "backup.manifest.json.sig"
    res = run(sign_args(manifest, seed), check=True)
    assert not res.failed and res.changed
    assert not sig.exists()
    assert sorted(os.listdir(manifest.parent)) == ["backup.manifest.json", "trusted"]
    run(sign_args(manifest, seed))
    assert not run(sign_args(manifest, seed), check=True).changed
    sig.chmod(0o600)
    assert run(sign_args(manifest, seed), check=True).changed
    assert oct(sig.stat().st_mode & 0o777) == "0o600"
    before = sig.read_bytes()
    manifest.write_bytes(MANIFEST + b" ")
    assert run(sign_args(manifest, seed), check=True).changed
    assert sig.read_bytes() == before
    res = run(verify_args(manifest, trusted), check=True)
    assert res.failed and not res.changed


def test_argument_constraints(run, setup, seed):
    manifest, trusted = setup
    res = run({"mode": "sign", "path": str(manifest), "private_key": "x"})
    assert res.failed and "kid" in res.msg
    res = run({"mode": "sign", "path": str(manifest), "kid": "cap-backup"})
    assert res.failed and "private_key, private_key_file" in res.msg
    res = run(sign_args(manifest, seed, private_key_file=str(manifest)))
    assert res.failed and "mutually exclusive" in res.msg
    res = run({"mode": "verify", "path": str(manifest)})
    assert res.failed and "public_key, trusted_keys_dir" in res.msg
    res = run(verify_args(manifest, trusted, public_key="abc"))
    assert res.failed and "mutually exclusive" in res.msg
    res = run({"mode": "sign", "path": str(manifest), "private_key": "bm90IGEga2V5",
               "kid": "cap-backup"})
    assert res.failed and "private_key:" in res.msg
    assert not (manifest.parent / "backup.manifest.json.sig").exists()


def test_missing_cryptography_is_reported(tmp_path, seed):
    args = {"ANSIBLE_MODULE_ARGS": {"mode": "verify", "path": str(tmp_path / "m"),
                                    "trusted_keys_dir": str(tmp_path)}}
    script = (
        "import sys, runpy\n"
        "sys.modules['cryptography'] = None\n"
        "import ansible.module_utils\n"
        "ansible.module_utils.__path__.append(%r)\n"
        "sys.argv = [sys.argv[0], %r]\n"
        "runpy.run_path(%r, run_name='__main__')\n"
        % (str(ROOT / "module_utils"), json.dumps(args),
           str(ROOT / "library" / "cap_backup_sign.py")))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=ansible_env(), timeout=120)
    result = json.loads(proc.stdout)
    assert result["failed"]
    assert "Failed to import the required Python library (cryptography)" in result["msg"]
