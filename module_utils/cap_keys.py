# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ed25519 key material in the forms the runbook names.

- Private key file (``keys/company.ed25519``): the raw 32-byte Ed25519 seed. Vault
  holds the same bytes base64-encoded in the ``private_key`` field.
- Public key metadata (``keys/<kid>.v1.json``): a ``cap-key.v1`` JSON document.
- Trusted public keys (``keys/trusted/<kid>.pub``): PEM SubjectPublicKeyInfo; the kid
  is the file name without ``.pub``.

docs/keys.md describes these formats.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re

from ansible.module_utils.cap_hashing import sha3_bytes

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - reported by the modules
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc

KEY_SCHEMA = "cap-key.v1"
KID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
METADATA_KEYS = ("schema", "kid", "algorithm", "public_key", "fingerprint", "owner", "usage",
                 "status", "created_at")


class CapKeyError(Exception):
    """Key material is missing, malformed, or does not match."""


def check_kid(kid):
    if not isinstance(kid, str) or not KID_RE.match(kid):
        raise CapKeyError("kid %r must be 1-128 letters, digits, '.', '_', ':' or '-'" % (kid,))
    return kid


def generate_seed():
    """A fresh random 32-byte Ed25519 seed."""
    return os.urandom(32)


def parse_private_key(data):
    """Ed25519 seed from raw bytes (32, or 64 as seed||public), base64 text, or PEM PKCS#8."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(stripped, password=None)
        except (ValueError, TypeError) as exc:
            raise CapKeyError("unreadable PEM private key: %s" % exc)
        if not isinstance(key, Ed25519PrivateKey):
            raise CapKeyError("PEM private key is not Ed25519")
        return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    if len(data) in (32, 64) and not _looks_base64(data):
        return bytes(data[:32])
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise CapKeyError("private key is neither 32 raw bytes, base64 nor PEM")
    if len(raw) not in (32, 64):
        raise CapKeyError("private key decodes to %d bytes; an Ed25519 seed is 32" % len(raw))
    return raw[:32]


def _looks_base64(data):
    return re.match(rb"^[A-Za-z0-9+/]+=*\s*$", data) is not None and len(data.strip()) % 4 == 0


def public_from_seed(seed):
    """Raw 32-byte public key of a seed."""
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_raw):
    """'0x' + SHA3-256 of the raw public key."""
    return sha3_bytes(public_raw)


def sign(seed, data):
    """Ed25519 signature (64 bytes) of data."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(data)


def verify(public_raw, signature, data):
    """True when signature is a valid Ed25519 signature of data under public_raw."""
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, data)
        return True
    except (InvalidSignature, ValueError):
        return False


def public_pem(public_raw):
    """PEM SubjectPublicKeyInfo text of a raw public key."""
    return Ed25519PublicKey.from_public_bytes(public_raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def key_metadata(kid, public_raw, owner, usage, created_at, status="active"):
    """A cap-key.v1 document (public information only)."""
    check_kid(kid)
    return {
        "schema": KEY_SCHEMA,
        "kid": kid,
        "algorithm": "ed25519",
        "public_key": base64.b64encode(public_raw).decode("ascii"),
        "fingerprint": fingerprint(public_raw),
        "owner": owner,
        "usage": list(usage),
        "status": status,
        "created_at": created_at,
    }


def parse_key_metadata(doc, source="key metadata"):
    """Validate a cap-key.v1 document; return (kid, raw public key)."""
    if not isinstance(doc, dict) or doc.get("schema") != KEY_SCHEMA:
        raise CapKeyError("%s is not a %s document" % (source, KEY_SCHEMA))
    for forbidden in ("private_key", "secret_key", "seed", "d"):
        if forbidden in doc:
            raise CapKeyError("%s carries private material (%s); refusing it" % (source, forbidden))
    if doc.get("algorithm") != "ed25519":
        raise CapKeyError("%s: algorithm %r is not ed25519" % (source, doc.get("algorithm")))
    kid = check_kid(doc.get("kid"))
    try:
        raw = base64.b64decode(doc.get("public_key", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise CapKeyError("%s: public_key is not base64" % source)
    if len(raw) != 32:
        raise CapKeyError("%s: public_key is %d bytes, expected 32" % (source, len(raw)))
    if "fingerprint" in doc and doc["fingerprint"] != fingerprint(raw):
        raise CapKeyError("%s: fingerprint does not match public_key" % source)
    return kid, raw


def parse_public_key(data, source="public key"):
    """Raw public key from PEM SubjectPublicKeyInfo, or base64 of the 32 raw bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN PUBLIC KEY-----"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except (ValueError, TypeError) as exc:
            raise CapKeyError("%s: unreadable PEM: %s" % (source, exc))
        if not isinstance(key, Ed25519PublicKey):
            raise CapKeyError("%s is not an Ed25519 key" % source)
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise CapKeyError("%s is neither PEM nor base64" % source)
    if len(raw) != 32:
        raise CapKeyError("%s is %d bytes, expected 32" % (source, len(raw)))
    return raw


def load_public_keys(directory):
    """Map kid -> raw public key from a directory's *.v1.json and *.pub files (not recursive).

    Two files naming the same kid with different keys is an error: a verifier must
    never have to guess which key is meant.
    """
    if not os.path.isdir(directory):
        raise CapKeyError("trusted keys directory does not exist: %s" % directory)
    keys = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".v1.json"):
            with open(path, "rb") as handle:
                try:
                    doc = json.loads(handle.read().decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise CapKeyError("%s is not valid JSON: %s" % (path, exc))
            kid, raw = parse_key_metadata(doc, path)
        elif name.endswith(".pub"):
            kid = check_kid(name[:-len(".pub")])
            with open(path, "rb") as handle:
                raw = parse_public_key(handle.read(), path)
        else:
            continue
        if kid in keys and keys[kid] != raw:
            raise CapKeyError("kid %s names two different keys in %s" % (kid, directory))
        keys[kid] = raw
    return keys


def load_key_tree(keys_dir):
    """Public keys of a CAP keys directory: keys/*.v1.json and keys/trusted/*.pub."""
    keys = load_public_keys(keys_dir)
    trusted = os.path.join(keys_dir, "trusted")
    if os.path.isdir(trusted):
        for kid, raw in load_public_keys(trusted).items():
            if kid in keys and keys[kid] != raw:
                raise CapKeyError("kid %s differs between %s and %s" % (kid, keys_dir, trusted))
            keys[kid] = raw
    return keys
