# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registry entries: the signed message, Ed25519 verification, and checks of a whole registry.

A registry entry records that a manifest (manifest_hash) was attested with a
proof (proof_hash) under a policy (policy_hash), signed with Ed25519 by the key
named by kid. The signature covers the canonical JSON of exactly five fields:

    {"created_at", "kid", "manifest_hash", "policy_hash", "proof_hash"}

entry_message() is the single definition of that message for the API, the
seeder and the restore checks (docs/cap-api-contract.md, "Registry entry
signatures"; docs/checks.md).

verify_registry() checks every entry of a registry file (SQLite, or the
cap-registry.v1 JSON form) against a set of trusted public keys, streaming the
rows in chunks so memory stays bounded, and spreading the signature checks over
processes for large registries. listing_digest() hashes the exact text the
sqlite3 CLI prints for LISTING_QUERY, so a restore can compare the registry in a
pod with the backup's by running `sqlite3 ... | sha256sum` there.
"""

from __future__ import annotations

import base64
import binascii
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import sqlite3
import threading
import time

from ansible.module_utils.cap_hashing import canonical_json_bytes, is_prefixed_hash
from ansible.module_utils.cap_keys import sign
from ansible.module_utils.cap_sqlite import SnapshotError, load_json_into, row_counts

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - reported by the module
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc

SIGNED_FIELDS = ("created_at", "kid", "manifest_hash", "policy_hash", "proof_hash")
ENTRY_COLUMNS = ("id", "manifest_hash", "proof_hash", "policy_hash", "kid", "signature",
                 "created_at")
CREATED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

# The runbook's Test 5 query, for every entry at once. The restore runs exactly this text as
#   sqlite3 -batch -noheader registry.sqlite "<LISTING_QUERY>" | sha256sum
# inside the target and compares the digest with listing_digest() of the backup's registry.
LISTING_QUERY = "SELECT manifest_hash, proof_hash, kid FROM registry_entries ORDER BY manifest_hash;"
ENTRY_QUERY = ("SELECT id, manifest_hash, proof_hash, policy_hash, kid, signature, created_at "
               "FROM registry_entries ORDER BY id")

SQLITE_MAGIC = b"SQLite format 3\x00"
FORMATS = ("auto", "sqlite", "json")
# Rows handed to a worker at a time, and the registry size from which workers are used.
CHUNK_ROWS = 5000
PARALLEL_THRESHOLD = 20000
MAX_INVALID_REPORTED = 20
# Verdicts of one entry.
VALID = "valid"
INVALID = "invalid"
UNKNOWN_KID = "unknown_kid"


class RegistryError(ValueError):
    """An entry is malformed (wrong field types or hash forms)."""


class RegistryFileError(Exception):
    """A registry file is missing, unreadable, or lacks the registry_entries table."""


# ---------------------------------------------------------------------------
# One entry

def entry_message(row):
    """The bytes an entry's signature covers.

    row: any mapping (dict, sqlite3.Row) with created_at, kid, manifest_hash,
    policy_hash and proof_hash, all strings. Returns the UTF-8 canonical JSON of
    exactly those five fields, e.g.

        {"created_at":"2025-03-01T08:00:00Z","kid":"cap-company-...","manifest_hash":"0x...",
         "policy_hash":"0x...","proof_hash":"0x..."}
    """
    message = {}
    for name in SIGNED_FIELDS:
        value = row[name]
        if not isinstance(value, str):
            raise RegistryError("entry field %s must be a string, got %s"
                                % (name, type(value).__name__))
        message[name] = value
    return canonical_json_bytes(message)


def check_entry_fields(row):
    """Raise RegistryError unless the entry's hashes and timestamp have the project's forms."""
    for name in ("manifest_hash", "proof_hash", "policy_hash"):
        if not is_prefixed_hash(row[name]):
            raise RegistryError("%s %r is not '0x' + 64 lowercase hex digits" % (name, row[name]))
    if not isinstance(row["created_at"], str) or not CREATED_AT_RE.match(row["created_at"]):
        raise RegistryError("created_at %r is not YYYY-MM-DDTHH:MM:SSZ" % (row["created_at"],))


def sign_entry(seed, row):
    """Base64 Ed25519 signature of entry_message(row) under a 32-byte seed."""
    return base64.b64encode(sign(seed, entry_message(row))).decode("ascii")


def decode_signature(text):
    """Raw 64-byte signature from the registry's base64 text; RegistryError when malformed."""
    if not isinstance(text, str):
        raise RegistryError("signature is not a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RegistryError("signature is not base64")
    if len(raw) != 64:
        raise RegistryError("signature is %d bytes, an Ed25519 signature is 64" % len(raw))
    return raw


class EntryVerifier:
    """Checks entries against a kid -> raw public key map, loading each key once."""

    def __init__(self, public_keys):
        self.public_keys = dict(public_keys)
        self._loaded = {}

    def _key(self, kid):
        key = self._loaded.get(kid)
        if key is None:
            key = self._loaded[kid] = Ed25519PublicKey.from_public_bytes(self.public_keys[kid])
        return key

    def verify(self, row):
        """(True, None) when the signature verifies under the key its kid names, else (False, reason)."""
        kid = row["kid"]
        if not isinstance(kid, str) or kid not in self.public_keys:
            return False, "kid %s is not among the trusted public keys" % (kid,)
        try:
            raw = decode_signature(row["signature"])
            message = entry_message(row)
        except RegistryError as exc:
            return False, str(exc)
        try:
            self._key(kid).verify(raw, message)
        except (InvalidSignature, ValueError):
            return False, "signature does not verify under kid %s" % kid
        return True, None

    def classify(self, row):
        """(VALID | INVALID | UNKNOWN_KID, reason): field forms first, then kid, then signature."""
        try:
            check_entry_fields(row)
        except RegistryError as exc:
            return INVALID, str(exc)
        if not isinstance(row["kid"], str) or row["kid"] not in self.public_keys:
            return UNKNOWN_KID, "kid %s is not among the trusted public keys" % (row["kid"],)
        ok, reason = self.verify(row)
        return (VALID, None) if ok else (INVALID, reason)


def verify_entry(row, public_keys):
    """Check one entry against a kid -> raw public key map (cap_keys.load_key_tree).

    Returns (True, None) when the signature verifies under the key its kid
    names, else (False, reason).
    """
    return EntryVerifier(public_keys).verify(row)


# ---------------------------------------------------------------------------
# Registry files

def detect_format(path):
    """'sqlite' or 'json' from the file's first bytes; RegistryFileError otherwise."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise RegistryFileError("cannot read registry %s: %s" % (path, exc.strerror or exc))
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head.lstrip()[:1] == b"{":
        return "json"
    raise RegistryFileError("registry %s is neither an SQLite database nor cap-registry.v1 JSON"
                            % path)


def _has_table(conn, name):
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


@contextlib.contextmanager
def open_registry(path, fmt="auto"):
    """Yield (read-only connection, format) for a registry file.

    SQLite files are opened read-only; the JSON form is loaded into an in-memory
    database with cap_sqlite.load_json_into. Raises RegistryFileError naming the
    file when it cannot be used.
    """
    if fmt not in FORMATS:
        raise ValueError("format must be one of %s" % ", ".join(FORMATS))
    if not os.path.isfile(path):
        raise RegistryFileError("registry %s does not exist or is not a file" % path)
    kind = detect_format(path) if fmt == "auto" else fmt
    try:
        if kind == "sqlite":
            uri = "file:%s?mode=ro" % os.path.abspath(path).replace("?", "%3f").replace("#", "%23")
            conn = sqlite3.connect(uri, uri=True)
        else:
            conn = sqlite3.connect(":memory:")
    except sqlite3.Error as exc:
        raise RegistryFileError("cannot open registry %s: %s" % (path, exc))
    try:
        try:
            if kind == "json":
                load_json_into(path, conn)
            if not _has_table(conn, "registry_entries"):
                raise RegistryFileError("registry %s has no registry_entries table" % path)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, SnapshotError) as exc:
            raise RegistryFileError("registry %s cannot be loaded as cap-registry.v1 JSON: %s"
                                    % (path, exc))
        except sqlite3.Error as exc:
            raise RegistryFileError("registry %s is not a readable %s registry: %s"
                                    % (path, "SQLite" if kind == "sqlite" else "JSON", exc))
        yield conn, kind
    finally:
        conn.close()


def _cli_text(value):
    """A value as the sqlite3 CLI prints it in list mode (NULL prints as nothing)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    # registry_entries columns have TEXT affinity, so numbers are stored as text already.
    return str(value).encode("utf-8")


def listing_digest_of(conn):
    """SHA-256 hex of the sqlite3 CLI's list-mode output of LISTING_QUERY on an open connection.

    The CLI prints each row as its columns joined by '|' and ended by '\\n'; the
    rows are streamed, never held in memory together.
    """
    digest = hashlib.sha256()
    cursor = conn.execute(LISTING_QUERY)
    while True:
        batch = cursor.fetchmany(CHUNK_ROWS)
        if not batch:
            break
        digest.update(b"".join(b"|".join(_cli_text(v) for v in row) + b"\n" for row in batch))
    return digest.hexdigest()


def listing_digest(path, fmt="auto"):
    """SHA-256 hex of what `sqlite3 -batch -noheader <db> "<LISTING_QUERY>"` prints.

    Equal to `sqlite3 -batch -noheader registry.sqlite "<LISTING_QUERY>" | sha256sum`
    run on the SQLite form of the same registry; the JSON form gives the digest its
    SQLite form would.
    """
    with open_registry(path, fmt) as (conn, _):
        return listing_digest_of(conn)


# ---------------------------------------------------------------------------
# A whole registry

class _Tally:
    """Counts and the first reported failures of a run of entries."""

    def __init__(self, max_invalid=MAX_INVALID_REPORTED):
        self.counts = {VALID: 0, INVALID: 0, UNKNOWN_KID: 0}
        self.invalid = []
        self.kids = set()
        self.max_invalid = max_invalid

    def add(self, part):
        counts, invalid, kids = part
        for name, value in counts.items():
            self.counts[name] += value
        room = self.max_invalid - len(self.invalid)
        if room > 0:
            self.invalid.extend(invalid[:room])
        self.kids.update(kids)


def _check_rows(verifier, rows, max_invalid):
    """Verdicts for a chunk of rows (tuples in ENTRY_COLUMNS order): (counts, invalid, kids)."""
    counts = {VALID: 0, INVALID: 0, UNKNOWN_KID: 0}
    invalid = []
    kids = set()
    for values in rows:
        row = dict(zip(ENTRY_COLUMNS, values))
        kids.add(row["kid"] if isinstance(row["kid"], str) else str(row["kid"]))
        verdict, reason = verifier.classify(row)
        counts[verdict] += 1
        if verdict != VALID and len(invalid) < max_invalid:
            invalid.append({"id": row["id"], "manifest_hash": row["manifest_hash"],
                            "kid": row["kid"], "verdict": verdict, "reason": reason})
    return counts, invalid, kids


_WORKER = {}


def _init_worker(public_keys, max_invalid):
    _WORKER["verifier"] = EntryVerifier(public_keys)
    _WORKER["max_invalid"] = max_invalid


def _check_chunk(rows):
    return _check_rows(_WORKER["verifier"], rows, _WORKER["max_invalid"])


def default_workers():
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _fork_context():
    """A fork start method, or None when forking is unsafe or unavailable.

    Forked workers inherit the loaded code, which also works inside an Ansible
    module's payload; forking is only safe while this process runs one thread.
    """
    if threading.active_count() != 1:
        return None
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


def _chunks(cursor):
    while True:
        rows = cursor.fetchmany(CHUNK_ROWS)
        if not rows:
            return
        yield rows


def _verify_entries(conn, public_keys, workers, max_invalid):
    """Stream every entry through the verifier; returns (tally, workers used)."""
    tally = _Tally(max_invalid)
    count = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
    context = _fork_context() if workers > 1 and count >= PARALLEL_THRESHOLD else None
    cursor = conn.execute(ENTRY_QUERY)
    if context is None:
        verifier = EntryVerifier(public_keys)
        for rows in _chunks(cursor):
            tally.add(_check_rows(verifier, rows, max_invalid))
        return tally, 1
    # At most two chunks per worker in flight: memory stays bounded whatever the registry size,
    # and results are taken in id order, so the reported failures are the first ones.
    pending = collections.deque()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                initializer=_init_worker,
                                                initargs=(dict(public_keys), max_invalid)) as pool:
        for rows in _chunks(cursor):
            pending.append(pool.submit(_check_chunk, rows))
            if len(pending) >= 2 * workers:
                tally.add(pending.popleft().result())
        while pending:
            tally.add(pending.popleft().result())
    return tally, workers


def _samples(conn, count, sample):
    """sample entries spread evenly by id: the first and last, and evenly spaced ones between."""
    if count == 0 or sample <= 0:
        return []
    if sample == 1:
        offsets = [0]
    else:
        offsets = sorted({round(i * (count - 1) / (sample - 1)) for i in range(min(sample, count))})
    found = []
    for offset in offsets:
        row = conn.execute("SELECT id, manifest_hash, proof_hash, kid FROM registry_entries "
                           "ORDER BY id LIMIT 1 OFFSET ?", (offset,)).fetchone()
        found.append({"id": row[0], "manifest_hash": row[1], "proof_hash": row[2], "kid": row[3]})
    return found


def verify_registry(path, public_keys, fmt="auto", sample=2, workers=None,
                    max_invalid=MAX_INVALID_REPORTED):
    """Check every entry of a registry file and describe it.

    public_keys: kid -> raw public key (cap_keys.load_key_tree). Returns a dict:
    format, entries, policies (None without a policies table), listing_sha256,
    signatures {valid, invalid, unknown_kid}, invalid (the first max_invalid
    failures in id order: id, manifest_hash, kid, verdict, reason), kids (sorted),
    samples, row_counts, workers and duration_seconds. Raises RegistryFileError.
    """
    if not HAS_CRYPTOGRAPHY:
        raise RegistryFileError("the Python library 'cryptography' is required: %s"
                                % CRYPTOGRAPHY_IMPORT_ERROR)
    started = time.monotonic()
    workers = max(1, workers or default_workers())
    with open_registry(path, fmt) as (conn, kind):
        try:
            counts = row_counts(conn)
            entries = counts["registry_entries"]
            tally, used = _verify_entries(conn, public_keys, workers, max_invalid)
            listing = listing_digest_of(conn)
            samples = _samples(conn, entries, sample)
        except sqlite3.Error as exc:
            raise RegistryFileError("registry %s cannot be read: %s" % (path, exc))
    return {
        "format": kind,
        "entries": entries,
        "policies": counts.get("policies"),
        "listing_sha256": listing,
        "signatures": dict(tally.counts),
        "invalid": tally.invalid,
        "kids": sorted(tally.kids),
        "samples": samples,
        "row_counts": counts,
        "workers": used,
        "duration_seconds": round(time.monotonic() - started, 3),
    }


# ---------------------------------------------------------------------------
# DR scenario 3, option B: the policy store rebuilt from the registry

POLICY_STORE_VERSION = "cap-policy-store.v1"


def policy_store_from_registry(path, fmt="auto"):
    """The cap-policy-store.v1 bytes rebuilt from a registry's ``policies`` table.

    Every record's policy_hash and ir_hash are checked against SHA3-256 of the
    canonical JSON of its policy and IR; a record that does not match raises
    RegistryFileError naming it, so a corrupted registry never becomes a store.
    Returns (bytes, count): canonical JSON of the document plus a newline, the
    same form the API exports.
    """
    records = []
    with open_registry(path, fmt) as (conn, _kind):
        if not _has_table(conn, "policies"):
            raise RegistryFileError("registry %s has no policies table to rebuild the policy "
                                    "store from" % path)
        cursor = conn.execute("SELECT policy_hash, ir_hash, policy_json, ir_json FROM policies "
                              "ORDER BY policy_hash")
        for policy_hash, ir_hash, policy_json, ir_json in cursor:
            try:
                policy = json.loads(policy_json)
                ir = json.loads(ir_json)
            except (TypeError, ValueError) as exc:
                raise RegistryFileError("policy %s in %s is not valid JSON: %s" % (policy_hash, path, exc))
            for name, claimed, value in (("policy_hash", policy_hash, policy), ("ir_hash", ir_hash, ir)):
                actual = "0x" + hashlib.sha3_256(canonical_json_bytes(value)).hexdigest()
                if actual != claimed:
                    raise RegistryFileError("policy %s in %s: %s is %s but the stored content hashes "
                                            "to %s" % (policy_hash, path, name, claimed, actual))
            records.append({"policy_hash": policy_hash, "ir_hash": ir_hash, "policy": policy, "ir": ir})
    doc = {"version": POLICY_STORE_VERSION, "policies": records}
    return canonical_json_bytes(doc) + b"\n", len(records)
