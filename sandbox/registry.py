"""The CAP registry: schema, entry signatures, and an instance's view of its registry file.

A registry entry records that a manifest (manifest_hash) was attested with a
proof (proof_hash) under a policy (policy_hash), signed with Ed25519 by the key
named by kid. The signed message is the canonical JSON of exactly five fields:

    {"created_at", "kid", "manifest_hash", "policy_hash", "proof_hash"}

entry_message() builds it; the restore checks use the same function, so the
rule lives in one place (docs/cap-api-contract.md, "Registry entry signatures").
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading

import sandbox  # noqa: F401  (makes ansible.module_utils.cap_* importable)
from ansible.module_utils.cap_hashing import canonical_json
# The signed message and entry checks are part of the API contract; one definition
# serves the stand-in and the restore's checks.
from ansible.module_utils.cap_registry import (  # noqa: F401  (re-exported for the stand-in)
    CREATED_AT_RE,
    ENTRY_COLUMNS,
    SIGNED_FIELDS,
    RegistryError,
    check_entry_fields,
    decode_signature,
    entry_message,
    sign_entry,
    verify_entry,
)
from ansible.module_utils.cap_sqlite import SnapshotError, load_json_into

SCHEMA_STATEMENTS = (
    """CREATE TABLE registry_entries (
  id INTEGER PRIMARY KEY,
  manifest_hash TEXT NOT NULL UNIQUE,
  proof_hash TEXT NOT NULL,
  policy_hash TEXT NOT NULL,
  kid TEXT NOT NULL,
  signature TEXT NOT NULL,
  created_at TEXT NOT NULL
)""",
    "CREATE INDEX registry_entries_policy_hash ON registry_entries(policy_hash)",
    """CREATE TABLE policies (
  policy_hash TEXT PRIMARY KEY,
  ir_hash TEXT NOT NULL,
  policy_json TEXT NOT NULL,
  ir_json TEXT NOT NULL,
  created_at TEXT NOT NULL
)""",
)

SQLITE_NAME = "registry.sqlite"
JSON_NAME = "registry.json"
BUSY_TIMEOUT_SECONDS = 5.0


class RegistryUnavailable(Exception):
    """The registry file is missing, unreadable, or lacks the registry_entries table."""


# ---------------------------------------------------------------------------
# Schema helpers

def create_schema(conn):
    """Create registry_entries, its policy_hash index, and policies in an empty database."""
    for statement in SCHEMA_STATEMENTS:
        conn.execute(statement)


def policy_row(record, created_at):
    """A policies-table row (tuple in column order) for a policy store record."""
    return (record["policy_hash"], record["ir_hash"], canonical_json(record["policy"]),
            canonical_json(record["ir"]), created_at)


def has_table(conn, name):
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _uri(path, mode):
    return pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=" + mode


# ---------------------------------------------------------------------------
# An instance's registry

class Registry:
    """The registry under <data-dir>/build, found and opened anew for every use.

    build/registry.sqlite wins over build/registry.json. The SQLite file is
    opened per call, so a file copied in place by a restore is seen at once.
    The JSON form is loaded into an in-memory database, reloaded whenever the
    file's inode, size or mtime changes, and is read-only.
    """

    def __init__(self, build_dir):
        self.build_dir = build_dir
        self._json_lock = threading.Lock()
        self._json_conn = None
        self._json_stamp = None

    def locate(self):
        """(path, 'sqlite'|'json') of the registry file, or (None, None)."""
        for name, kind in ((SQLITE_NAME, "sqlite"), (JSON_NAME, "json")):
            path = os.path.join(self.build_dir, name)
            if os.path.isfile(path):
                return path, kind
        return None, None

    @contextlib.contextmanager
    def reader(self):
        """A read-only connection (rows as sqlite3.Row); raises RegistryUnavailable."""
        path, kind = self.locate()
        if path is None:
            raise RegistryUnavailable("no registry file (build/%s or build/%s)"
                                      % (SQLITE_NAME, JSON_NAME))
        if kind == "json":
            with self._json_lock:
                conn = self._json_connection(path)
                yield conn
            return
        try:
            conn = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        except sqlite3.Error as exc:
            raise RegistryUnavailable("cannot open build/%s: %s" % (SQLITE_NAME, exc))
        try:
            conn.row_factory = sqlite3.Row
            try:
                if not has_table(conn, "registry_entries"):
                    raise RegistryUnavailable("build/%s has no registry_entries table" % SQLITE_NAME)
            except sqlite3.DatabaseError as exc:
                raise RegistryUnavailable("build/%s is not a readable SQLite database: %s"
                                          % (SQLITE_NAME, exc))
            yield conn
        finally:
            conn.close()

    def _json_connection(self, path):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise RegistryUnavailable("cannot stat build/%s: %s" % (JSON_NAME, exc.strerror))
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._json_conn is not None and self._json_stamp == stamp:
            return self._json_conn
        if self._json_conn is not None:
            self._json_conn.close()
            self._json_conn = None
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            load_json_into(path, conn)
            if not has_table(conn, "registry_entries"):
                raise RegistryUnavailable("build/%s has no registry_entries table" % JSON_NAME)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, SnapshotError,
                sqlite3.Error) as exc:
            conn.close()
            raise RegistryUnavailable("build/%s cannot be loaded: %s" % (JSON_NAME, exc))
        except RegistryUnavailable:
            conn.close()
            raise
        self._json_conn, self._json_stamp = conn, stamp
        return conn

    def status(self):
        """(ok, reason, entry_count): the readiness view of the registry."""
        try:
            with self.reader() as conn:
                count = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
        except RegistryUnavailable as exc:
            return False, str(exc), None
        except sqlite3.Error as exc:
            return False, "registry query failed: %s" % exc, None
        return True, None, count

    def summary(self):
        """Entry count, registry form and the newest entry (for smoke tests and dashboards)."""
        path, kind = self.locate()
        with self.reader() as conn:
            count = conn.execute("SELECT count(*) FROM registry_entries").fetchone()[0]
            row = conn.execute(
                "SELECT manifest_hash, proof_hash, policy_hash, kid, created_at "
                "FROM registry_entries ORDER BY id DESC LIMIT 1").fetchone()
        latest = None if row is None else {name: row[name] for name in row.keys()}
        return {"entries": count, "format": kind, "latest": latest}

    def lookup(self, manifest_hash):
        """The entry with this manifest_hash as a dict, or None."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT id, manifest_hash, proof_hash, policy_hash, kid, signature, created_at "
                "FROM registry_entries WHERE manifest_hash = ?", (manifest_hash,)).fetchone()
        return None if row is None else {name: row[name] for name in ENTRY_COLUMNS}

    def store_policy(self, record, created_at):
        """Insert a compiled policy into the policies table if the registry allows it.

        Returns 'inserted', 'present', 'absent' (no registry file), 'read_only'
        (JSON form) or 'no_policies_table'.
        """
        path, kind = self.locate()
        if path is None:
            return "absent"
        if kind == "json":
            return "read_only"
        # mode=rw: never create a database when the file vanished since locate().
        conn = sqlite3.connect(_uri(path, "rw"), uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            if not has_table(conn, "policies"):
                return "no_policies_table"
            with conn:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO policies (policy_hash, ir_hash, policy_json, ir_json, "
                    "created_at) VALUES (?, ?, ?, ?, ?)", policy_row(record, created_at))
            return "inserted" if cursor.rowcount == 1 else "present"
        finally:
            conn.close()
