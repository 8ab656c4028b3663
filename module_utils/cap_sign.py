# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detached Ed25519 signatures of backup manifests: the backup.signature.v1 format.

The signature is over the exact bytes of the signed file (plain Ed25519, no
pre-hashing), so `openssl pkeyutl -verify -rawin` can check it as well. The
signature file is JSON with a fixed key order and a final newline; Ed25519 is
deterministic, so signing unchanged bytes with the same key gives the same file.

docs/signature.md describes the format. Key formats come from cap_keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections import OrderedDict

from ansible.module_utils.cap_hashing import is_prefixed_hash, sha3_bytes
from ansible.module_utils.cap_keys import (  # noqa: F401 - the first two are re-exported
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    CapKeyError,
    check_kid,
    fingerprint,
    load_public_keys,
    parse_private_key,
    parse_public_key,
    public_from_seed,
    sign,
    verify,
)

SIGNATURE_VERSION = "backup.signature.v1"
SIGNATURE_ALGORITHM = "ed25519"
SIGNATURE_KEYS = ("version", "kid", "algorithm", "signed_file", "sha3_256", "signature")
SIGNATURE_SUFFIX = ".sig"
# Manifests are kilobytes; Ed25519 needs the whole message in memory, so cap it.
MAX_SIGNED_SIZE = 64 * 1024 * 1024
MAX_SIGNATURE_FILE_SIZE = 64 * 1024
MAX_PRIVATE_KEY_FILE_SIZE = 16 * 1024


class CapSignError(Exception):
    """Base class: a file could not be signed or its signature could not be checked."""


class SignatureFormatError(CapSignError):
    """The signature file is not a valid backup.signature.v1 document."""


class UnknownKidError(CapSignError):
    """No trusted key carries the signature's kid."""


class BadSignatureError(CapSignError):
    """The signature does not verify, or its recorded hash differs from the file."""


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise CapSignError("the Python library 'cryptography' is required")


def default_signature_path(path):
    """Where the signature of path lives unless told otherwise: '<path>.sig'."""
    return path + SIGNATURE_SUFFIX


def read_signed_file(path):
    """The bytes to sign or verify, at most MAX_SIGNED_SIZE."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SIGNED_SIZE + 1)
    except OSError as exc:
        raise CapSignError("cannot read %s: %s" % (path, exc.strerror))
    if len(data) > MAX_SIGNED_SIZE:
        raise CapSignError("%s is larger than %d bytes; only manifests are signed"
                           % (path, MAX_SIGNED_SIZE))
    return data


def load_private_key(value=None, path=None):
    """Ed25519 seed from a value (base64, raw or PEM) or from a key file.

    Returns (seed, warning); warning is a sentence when the key file is
    accessible by group or others. Messages never contain key material.
    """
    require_cryptography()
    warning = None
    source = "private_key"
    if path is not None:
        source = "private key file %s" % path
        try:
            st = os.stat(path)
            with open(path, "rb") as handle:
                value = handle.read(MAX_PRIVATE_KEY_FILE_SIZE + 1)
        except OSError as exc:
            raise CapSignError("cannot read %s: %s" % (source, exc.strerror))
        if len(value) > MAX_PRIVATE_KEY_FILE_SIZE:
            raise CapSignError("%s is larger than %d bytes" % (source, MAX_PRIVATE_KEY_FILE_SIZE))
        if st.st_mode & 0o077:
            warning = ("%s is accessible by group or others (mode %04o); restrict it to 0600"
                       % (source, st.st_mode & 0o7777))
    if value is None:
        raise CapSignError("no private key given")
    try:
        return parse_private_key(value), warning
    except CapKeyError as exc:
        raise CapSignError("%s: %s" % (source, exc))


def _check_kid(kid):
    try:
        return check_kid(kid)
    except CapKeyError as exc:
        raise CapSignError(str(exc))


def build_signature(data, seed, kid, signed_file):
    """The backup.signature.v1 document for data signed with seed under kid."""
    require_cryptography()
    _check_kid(kid)
    return OrderedDict([
        ("version", SIGNATURE_VERSION),
        ("kid", kid),
        ("algorithm", SIGNATURE_ALGORITHM),
        ("signed_file", signed_file),
        ("sha3_256", sha3_bytes(data)),
        ("signature", base64.b64encode(sign(seed, data)).decode("ascii")),
    ])


def serialize_signature(doc):
    """Byte-stable text: fixed key order, two-space indent, UTF-8, final newline."""
    ordered = OrderedDict((key, doc[key]) for key in SIGNATURE_KEYS)
    return (json.dumps(ordered, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_signature(raw, source="signature"):
    """Validate the bytes of a signature file; return the document.

    The 'signature' value is returned decoded as 64 bytes under 'signature_bytes'.
    """
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignatureFormatError("%s is not valid JSON: %s" % (source, exc))

    def fail(msg):
        raise SignatureFormatError("%s: %s" % (source, msg))

    if not isinstance(doc, dict):
        fail("top level must be a JSON object")
    missing = [k for k in SIGNATURE_KEYS if k not in doc]
    if missing:
        fail("missing field(s): %s" % ", ".join(missing))
    unknown = sorted(set(doc) - set(SIGNATURE_KEYS))
    if unknown:
        fail("unknown field(s): %s" % ", ".join(unknown))
    if doc["version"] != SIGNATURE_VERSION:
        fail("version is %r, expected %r" % (doc["version"], SIGNATURE_VERSION))
    if doc["algorithm"] != SIGNATURE_ALGORITHM:
        fail("algorithm %r is not supported; expected %r" % (doc["algorithm"], SIGNATURE_ALGORITHM))
    try:
        check_kid(doc["kid"])
    except CapKeyError as exc:
        fail(str(exc))
    if not isinstance(doc["signed_file"], str) or not doc["signed_file"] \
            or "/" in doc["signed_file"]:
        fail("signed_file must be a file name without directories, got %r" % (doc["signed_file"],))
    if not is_prefixed_hash(doc["sha3_256"]):
        fail("sha3_256 %r is not 0x followed by 64 lowercase hex digits" % (doc["sha3_256"],))
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        fail("signature is not base64")
    if len(sig) != 64:
        fail("signature is %d bytes, an Ed25519 signature is 64" % len(sig))
    result = OrderedDict((key, doc[key]) for key in SIGNATURE_KEYS)
    result["signature_bytes"] = sig
    return result


def load_signature(path):
    """Read and validate a signature file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SIGNATURE_FILE_SIZE + 1)
    except OSError as exc:
        raise SignatureFormatError("cannot read signature %s: %s" % (path, exc.strerror))
    if len(raw) > MAX_SIGNATURE_FILE_SIZE:
        raise SignatureFormatError("signature %s is larger than %d bytes"
                                   % (path, MAX_SIGNATURE_FILE_SIZE))
    return parse_signature(raw, "signature %s" % path)


def sign_file(path, seed, kid):
    """Sign the file at path. Returns (document, serialized bytes)."""
    data = read_signed_file(path)
    doc = build_signature(data, seed, kid, os.path.basename(path))
    return doc, serialize_signature(doc)


def check_key_pair(seed, public_raw, kid):
    """Refuse to sign under kid with a private key that is not kid's."""
    own = public_from_seed(seed)
    if own != public_raw:
        raise CapSignError("the private key does not belong to kid %s: its public key has "
                           "fingerprint %s, kid %s has %s"
                           % (kid, fingerprint(own), kid, fingerprint(public_raw)))


def trusted_key_for(kid, trusted_keys_dir):
    """Raw public key of kid from a trusted keys directory (cap_keys.load_public_keys)."""
    try:
        keys = load_public_keys(trusted_keys_dir)
    except CapKeyError as exc:
        raise CapSignError(str(exc))
    except OSError as exc:
        raise CapSignError("cannot read trusted keys in %s: %s" % (trusted_keys_dir, exc.strerror))
    if kid not in keys:
        raise UnknownKidError("kid %s is not among the trusted keys in %s: %s"
                              % (kid, trusted_keys_dir, ", ".join(sorted(keys)) or "(none)"))
    return keys[kid]


def public_key_from_value(value):
    """Raw public key from PEM or base64 text given directly."""
    try:
        return parse_public_key(value, "public_key")
    except CapKeyError as exc:
        raise CapSignError(str(exc))


def verify_file(path, signature_path=None, trusted_keys_dir=None, public_key=None, kid=None):
    """Check the detached signature of the file at path.

    The key is taken from public_key (raw bytes) when given, else found by the
    signature's kid in trusted_keys_dir. When kid is given, the signature must
    name it. Returns a dict with kid, verified, sha3_256, signed_file,
    signature, fingerprint and algorithm; raises a CapSignError naming what
    is wrong otherwise.
    """
    require_cryptography()
    signature_path = signature_path or default_signature_path(path)
    doc = load_signature(signature_path)
    if kid is not None and doc["kid"] != kid:
        raise UnknownKidError("%s is signed by kid %s, but kid %s is required"
                              % (path, doc["kid"], kid))
    if public_key is not None:
        public_raw = public_key
    elif trusted_keys_dir is not None:
        public_raw = trusted_key_for(doc["kid"], trusted_keys_dir)
    else:
        raise CapSignError("no public key: give public_key or trusted_keys_dir")
    data = read_signed_file(path)
    actual = sha3_bytes(data)
    if not verify(public_raw, doc["signature_bytes"], data):
        if actual != doc["sha3_256"]:
            why = ("file changed after signing or wrong key; the file's SHA3-256 is %s, the "
                   "signature records %s" % (actual, doc["sha3_256"]))
        else:
            why = ("file changed after signing or wrong key; the file's SHA3-256 still equals "
                   "the recorded %s, so the signature was made with a key other than kid %s "
                   "(fingerprint %s) or was altered" % (actual, doc["kid"],
                                                        fingerprint(public_raw)))
        raise BadSignatureError("signature does not match %s: %s" % (path, why))
    if actual != doc["sha3_256"]:
        raise BadSignatureError("signature %s records sha3_256 %s, but %s has %s: the signature "
                                "file was edited" % (signature_path, doc["sha3_256"], path, actual))
    return OrderedDict([
        ("kid", doc["kid"]),
        ("verified", True),
        ("sha3_256", actual),
        ("signed_file", doc["signed_file"]),
        ("signature", signature_path),
        ("fingerprint", fingerprint(public_raw)),
        ("algorithm", doc["algorithm"]),
    ])
