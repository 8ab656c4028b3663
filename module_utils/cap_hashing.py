# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hash rules shared by every module, filter, script and the sandbox.

One place defines how the project turns bytes, files, directories and JSON
documents into SHA3-256 digests; docs/hashing.md describes the same rules for
people and for other implementations.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

HASH_PREFIX = "0x"
HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")
# Files are read in blocks of this size; nothing reads a whole file at once.
READ_BLOCK = 1024 * 1024


class CapHashError(Exception):
    """A value could not be hashed or a hash string is malformed."""


def hex_to_prefixed(hexdigest):
    """Return the project's hash form: '0x' + 64 lowercase hex digits."""
    return HASH_PREFIX + hexdigest.lower()


def is_prefixed_hash(value):
    """True when value is '0x' followed by exactly 64 lowercase hex digits."""
    return isinstance(value, str) and HASH_RE.match(value) is not None


def sha3_bytes(data):
    """SHA3-256 of bytes (or text, UTF-8 encoded) in the '0x' form."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hex_to_prefixed(hashlib.sha3_256(data).hexdigest())


def sha3_stream(fileobj, block_size=READ_BLOCK):
    """SHA3-256 of a binary stream, read block by block.

    Returns (prefixed_hash, size_bytes).
    """
    digest = hashlib.sha3_256()
    size = 0
    buf = bytearray(block_size)
    view = memoryview(buf)
    while True:
        n = fileobj.readinto(buf)
        if not n:
            break
        digest.update(view[:n])
        size += n
    return hex_to_prefixed(digest.hexdigest()), size


def sha3_file(path, block_size=READ_BLOCK):
    """SHA3-256 of a file's content. Returns (prefixed_hash, size_bytes)."""
    with open(path, "rb") as handle:
        return sha3_stream(handle, block_size)


def iter_tree_files(root):
    """Yield (relative_posix_path, absolute_path) for every regular file below root.

    Sorted by the UTF-8 bytes of the relative path, so every machine walks a tree
    in the same order. Symbolic links are never followed; a link below a tree is
    an error, because what it points at is not part of the tree.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                raise CapHashError("symbolic link inside a hashed tree: %s" % full)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                raise CapHashError("symbolic link inside a hashed tree: %s" % full)
            if not os.path.isfile(full):
                raise CapHashError("not a regular file inside a hashed tree: %s" % full)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            found.append((rel, full))
    found.sort(key=lambda item: item[0].encode("utf-8"))
    return found


def tree_hash(root):
    """Hash of a directory entry such as 'keys/metadata/'.

    The tree hash is SHA3-256 over one line per regular file below the
    directory, in byte order of the relative path:

        <64 lowercase hex of the file's SHA3-256><two spaces><relative path>\\n

    which is exactly what `sha3sum -a 256` prints for the sorted file list, so
    the value can be recomputed with standard tools (docs/hashing.md).
    Returns (prefixed_hash, total_size_bytes, file_count).
    """
    if not os.path.isdir(root):
        raise CapHashError("not a directory: %s" % root)
    listing = hashlib.sha3_256()
    total = 0
    count = 0
    for rel, full in iter_tree_files(root):
        digest, size = sha3_file(full)
        listing.update(("%s  %s\n" % (digest[2:], rel)).encode("utf-8"))
        total += size
        count += 1
    return hex_to_prefixed(listing.hexdigest()), total, count


def strict_json_loads(data):
    """Parse JSON bytes or text, refusing duplicate keys, NaN and Infinity.

    Documents whose hashes matter (policies, stores, manifests) must have exactly one
    reading; a duplicate key would let two parsers see two different documents.
    """
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key %r" % key)
        obj[key] = value
    return obj


def _no_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def canonical_json(value):
    """The canonical JSON text used for every content hash.

    Object keys sorted by code point, no insignificant white space, UTF-8
    without escaping non-ASCII characters, and no NaN or Infinity. Floats are
    refused: policies and registry entries carry integers and strings only, and
    refusing floats keeps the form identical across languages.
    """
    _reject_floats(value, "$")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CapHashError("value has no canonical JSON form: %s" % exc)


def canonical_json_bytes(value):
    """canonical_json() encoded as UTF-8."""
    return canonical_json(value).encode("utf-8")


def sha3_canonical(value):
    """'0x' + SHA3-256 of the canonical JSON of value (policy_hash, ir_hash)."""
    return sha3_bytes(canonical_json_bytes(value))


def etag_for(policy_hash):
    """The ETag of a policy: its policy_hash's first 16 hex digits, quoted."""
    if not is_prefixed_hash(policy_hash):
        raise CapHashError("not a 0x-prefixed SHA3-256 hash: %r" % (policy_hash,))
    return '"%s"' % policy_hash[2:18]


def _reject_floats(value, where):
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return
    if isinstance(value, float):
        raise CapHashError("floats have no canonical form (at %s)" % where)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CapHashError("object keys must be strings (at %s)" % where)
            _reject_floats(item, "%s.%s" % (where, key))
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _reject_floats(item, "%s[%d]" % (where, index))
        return
    raise CapHashError("unsupported type %s (at %s)" % (type(value).__name__, where))
