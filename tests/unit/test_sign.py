"""Unit tests for module_utils/cap_sign.py (backup.signature.v1, docs/signature.md)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible.module_utils import cap_sign
from ansible.module_utils.cap_hashing import sha3_bytes
from ansible.module_utils.cap_keys import (
    fingerprint,
    generate_seed,
    key_metadata,
    public_from_seed,
    public_pem,
)
from ansible.module_utils.cap_sign import (
    SIGNATURE_KEYS,
    BadSignatureError,
    CapSignError,
    SignatureFormatError,
    UnknownKidError,
    build_signature,
    check_key_pair,
    load_private_key,
    load_signature,
    parse_signature,
    serialize_signature,
    sign_file,
    verify_file,
)

MANIFEST = b'{\n  "version": "backup.manifest.v1",\n  "backup_id": "backup-20251110-120000"\n}\n'


@pytest.fixture
def seed():
    return generate_seed()


@pytest.fixture
def backup(tmp_path, seed):
    """A manifest, its signature, and a trusted keys dir with the signer and one other key."""
    manifest = tmp_path / "backup.manifest.json"
    manifest.write_bytes(MANIFEST)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "cap-backup.pub").write_text(public_pem(public_from_seed(seed)))
    other = public_from_seed(generate_seed())
    (trusted / "company.v1.json").write_text(json.dumps(
        key_metadata("company", other, "CAP", ["sign"], "2025-11-10T12:00:00Z")))
    _doc, data = sign_file(str(manifest), seed, "cap-backup")
    sig = tmp_path / "backup.manifest.json.sig"
    sig.write_bytes(data)
    return manifest, sig, trusted


def rewrite_sig(sig, **changes):
    doc = json.loads(sig.read_text())
    doc.update(changes)
    sig.write_text(json.dumps(doc))


def test_round_trip_with_trusted_dir(backup, seed):
    manifest, sig, trusted = backup
    result = verify_file(str(manifest), trusted_keys_dir=str(trusted))
    assert result["verified"] is True
    assert result["kid"] == "cap-backup"
    assert result["sha3_256"] == sha3_bytes(MANIFEST)
    assert result["signature"] == str(sig)
    assert result["fingerprint"] == fingerprint(public_from_seed(seed))


def test_round_trip_with_public_key_and_metadata_dir(tmp_path, seed):
    manifest = tmp_path / "backup.manifest.json"
    manifest.write_bytes(MANIFEST)
    _doc, data = sign_file(str(manifest), seed, "company")
    (tmp_path / "backup.manifest.json.sig").write_bytes(data)
    assert verify_file(str(manifest), public_key=public_from_seed(seed))["verified"]
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "company.v1.json").write_text(json.dumps(
        key_metadata("company", public_from_seed(seed), "CAP", ["sign"], "2025-11-10T12:00:00Z")))
    assert verify_file(str(manifest), trusted_keys_dir=str(keys))["kid"] == "company"


def test_document_layout_is_fixed_and_deterministic(tmp_path, seed):
    manifest = tmp_path / "m.json"
    manifest.write_bytes(MANIFEST)
    doc, data = sign_file(str(manifest), seed, "cap-backup")
    assert data.endswith(b"}\n")
    assert list(json.loads(data.decode())) == list(SIGNATURE_KEYS)
    assert data == serialize_signature(doc) == sign_file(str(manifest), seed, "cap-backup")[1]
    assert doc["version"] == "backup.signature.v1"
    assert doc["algorithm"] == "ed25519"
    assert doc["signed_file"] == "m.json"
    assert doc["sha3_256"] == sha3_bytes(MANIFEST)


def test_signature_is_plain_ed25519_over_the_file_bytes(tmp_path, seed):
    manifest = tmp_path / "m.json"
    manifest.write_bytes(MANIFEST)
    doc, _data = sign_file(str(manifest), seed, "cap-backup")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    public.verify(base64.b64decode(doc["signature"]), MANIFEST)  # raises when wrong


@pytest.mark.parametrize("offset", [0, len(MANIFEST) // 2, len(MANIFEST) - 1])
def test_one_changed_byte_fails_and_names_both_hashes(backup, offset):
    manifest, _sig, trusted = backup
    data = bytearray(MANIFEST)
    data[offset] ^= 0x01
    manifest.write_bytes(bytes(data))
    with pytest.raises(BadSignatureError) as info:
        verify_file(str(manifest), trusted_keys_dir=str(trusted))
    message = str(info.value)
    assert message.startswith("signature does not match %s: file changed after signing or "
                              "wrong key" % manifest)
    assert sha3_bytes(bytes(data)) in message and sha3_bytes(MANIFEST) in message


def test_appended_newline_fails(backup):
    manifest, _sig, trusted = backup
    manifest.write_bytes(MANIFEST + b"\n")
    with pytest.raises(BadSignatureError, match="signature does not match"):
        verify_file(str(manifest), trusted_keys_dir=str(trusted))


def test_tampered_signature_value(backup):
    manifest, sig, trusted = backup
    raw = bytearray(base64.b64decode(json.loads(sig.read_text())["signature"]))
    raw[10] ^= 0x40
    rewrite_sig(sig, signature=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(BadSignatureError, match="still equals the recorded .* or was altered"):
        verify_file(str(manifest), trusted_keys_dir=str(trusted))


def test_edited_hash_field(backup):
    manifest, sig, trusted = backup
    rewrite_sig(sig, sha3_256="0x" + "ab" * 32)
    with pytest.raises(BadSignatureError) as info:
        verify_file(str(manifest), trusted_keys_dir=str(trusted))
    assert "0x" + "ab" * 32 in str(info.value) and sha3_bytes(MANIFEST) in str(info.value)


def test_unknown_kid_lists_the_trusted_ones(backup, seed):
    manifest, sig, trusted = backup
    rewrite_sig(sig, kid="somebody-else")
    with pytest.raises(UnknownKidError) as info:
        verify_file(str(manifest), trusted_keys_dir=str(trusted))
    assert str(info.value) == ("kid somebody-else is not among the trusted keys in %s: "
                               "cap-backup, company" % trusted)


def test_wrong_trusted_key_under_the_right_kid(backup):
    manifest, _sig, trusted = backup
    (trusted / "cap-backup.pub").write_text(public_pem(public_from_seed(generate_seed())))
    with pytest.raises(BadSignatureError, match="other than kid cap-backup"):
        verify_file(str(manifest), trusted_keys_dir=str(trusted))


def test_pinned_kid(backup, seed):
    manifest, _sig, trusted = backup
    assert verify_file(str(manifest), trusted_keys_dir=str(trusted), kid="cap-backup")["verified"]
    with pytest.raises(UnknownKidError, match="signed by kid cap-backup, but kid company"):
        verify_file(str(manifest), public_key=public_from_seed(seed), kid="company")


def test_missing_trusted_dir_and_signature(backup, tmp_path):
    manifest, sig, _trusted = backup
    with pytest.raises(CapSignError, match="does not exist"):
        verify_file(str(manifest), trusted_keys_dir=str(tmp_path / "nope"))
    sig.unlink()
    with pytest.raises(SignatureFormatError, match="cannot read signature"):
        verify_file(str(manifest), trusted_keys_dir=str(tmp_path / "trusted"))


GOOD = {"version": "backup.signature.v1", "kid": "cap-backup", "algorithm": "ed25519",
        "signed_file": "backup.manifest.json", "sha3_256": "0x" + "0" * 64,
        "signature": base64.b64encode(b"s" * 64).decode()}


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "top level must be a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "kid"}), "missing field(s): kid"),
    (json.dumps(dict(GOOD, extra=1)), "unknown field(s): extra"),
    (json.dumps(dict(GOOD, version="backup.signature.v2")), "version is"),
    (json.dumps(dict(GOOD, algorithm="rsa-pss")), "algorithm 'rsa-pss' is not supported"),
    (json.dumps(dict(GOOD, kid="has space")), "kid"),
    (json.dumps(dict(GOOD, signed_file="../etc/passwd")), "signed_file"),
    (json.dumps(dict(GOOD, sha3_256="0xABC")), "sha3_256"),
    (json.dumps(dict(GOOD, signature="***")), "signature is not base64"),
    (json.dumps(dict(GOOD, signature=base64.b64encode(b"s" * 63).decode())), "63 bytes"),
])
def test_malformed_signature_files(raw, message):
    if isinstance(raw, str):
        raw = raw.encode()
    with pytest.raises(SignatureFormatError) as info:
        parse_signature(raw, "sig")
    assert message in str(info.value)


def test_good_document_parses():
    doc = parse_signature(json.dumps(GOOD).encode())
    assert doc["signature_bytes"] == b"s" * 64
    assert [k for k in doc if k != "signature_bytes"] == list(SIGNATURE_KEYS)


def test_malformed_signature_file_on_disk(backup):
    manifest, sig, trusted = backup
    sig.write_text("{ truncated")
    with pytest.raises(SignatureFormatError, match="signature %s is not valid JSON" % sig):
        verify_file(str(manifest), trusted_keys_dir=str(trusted))
    sig.write_bytes(b" " * (cap_sign.MAX_SIGNATURE_FILE_SIZE + 1))
    with pytest.raises(SignatureFormatError, match="larger than"):
        load_signature(str(sig))


def test_private_key_forms(tmp_path, seed):
    text = base64.b64encode(seed).decode()
    assert load_private_key(text) == (seed, None)
    pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    assert load_private_key(pem) == (seed, None)
    raw = tmp_path / "company.ed25519"
    raw.write_bytes(seed)
    raw.chmod(0o600)
    assert load_private_key(path=str(raw)) == (seed, None)
    raw.chmod(0o640)
    loaded, warning = load_private_key(path=str(raw))
    assert loaded == seed and "accessible by group or others (mode 0640)" in warning


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"q" * 20).decode(),
                                   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"])
def test_bad_private_key_messages_hold_no_key_text(value):
    with pytest.raises(CapSignError) as info:
        load_private_key(value)
    assert value not in str(info.value)
    assert str(info.value).startswith("private_key: ")


def test_private_key_file_errors(tmp_path):
    with pytest.raises(CapSignError, match="cannot read private key file"):
        load_private_key(path=str(tmp_path / "missing"))


def test_key_pair_check(seed):
    check_key_pair(seed, public_from_seed(seed), "cap-backup")
    other = public_from_seed(generate_seed())
    with pytest.raises(CapSignError, match="does not belong to kid cap-backup") as info:
        check_key_pair(seed, other, "cap-backup")
    assert fingerprint(other) in str(info.value)
    assert base64.b64encode(seed).decode() not in str(info.value)


def test_build_signature_refuses_bad_kid(seed):
    with pytest.raises(CapSignError, match="kid"):
        build_signature(MANIFEST, seed, "bad kid", "m.json")


def test_size_limit(tmp_path, seed, monkeypatch):
    monkeypatch.setattr(cap_sign, "MAX_SIGNED_SIZE", 10)
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 11)
    with pytest.raises(CapSignError, match="larger than 10 bytes"):
        sign_file(str(path), seed, "cap-backup")


def test_no_private_material_in_signature_file(tmp_path, seed):
    manifest = tmp_path / "m.json"
    manifest.write_bytes(MANIFEST)
    _doc, data = sign_file(str(manifest), seed, "cap-backup")
    assert base64.b64encode(seed).decode().encode() not in data
    assert seed.hex().encode() not in data
