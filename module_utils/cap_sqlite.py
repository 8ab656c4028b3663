# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent SQLite snapshots and the registry's JSON form (cap-registry.v1).

A snapshot is taken through SQLite's online backup API in a single step, so the
copy is one consistent read transaction of the source even while other processes
write to it; it is never a copy of the live file's bytes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import sqlite3
import tempfile

from ansible.module_utils.cap_fsutil import AtomicFile, same_files
from ansible.module_utils.cap_hashing import sha3_file

REGISTRY_JSON_VERSION = "cap-registry.v1"
BUSY_TIMEOUT_MS = 30000


class SnapshotError(Exception):
    """The source cannot be read, or the copy failed its integrity check."""


def _connect_source(src, busy_timeout_ms):
    if not os.path.isfile(src):
        raise SnapshotError("source database does not exist or is not a file: %s" % src)
    if not os.access(src, os.R_OK):
        raise SnapshotError("source database is not readable: %s" % src)
    uri = "file:%s?mode=ro" % _uri_path(src)
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000.0,
                               check_same_thread=False)
        conn.execute("PRAGMA schema_version").fetchone()
        return conn
    except sqlite3.DatabaseError as exc:
        raise SnapshotError("cannot open %s as an SQLite database: %s" % (src, exc))


def _uri_path(path):
    return os.path.abspath(path).replace("?", "%3f").replace("#", "%23")


def table_names(conn):
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    return [r[0] for r in rows]


def row_counts(conn):
    return {name: conn.execute('SELECT count(*) FROM "%s"' % name.replace('"', '""')).fetchone()[0]
            for name in table_names(conn)}


def integrity_check(path):
    """Run PRAGMA integrity_check on a database file; return the problems (empty when ok)."""
    conn = sqlite3.connect("file:%s?mode=ro" % _uri_path(path), uri=True, check_same_thread=False)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        counts = row_counts(conn)
    finally:
        conn.close()
    problems = [] if rows == ["ok"] else rows
    return problems, counts


def snapshot(src, dest, busy_timeout_ms=BUSY_TIMEOUT_MS, mode=0o600, check_only=False, verify=True):
    """Copy src to dest through the online backup API; check and describe the copy.

    The copy is written under a temporary name next to dest and renamed into place
    only after PRAGMA integrity_check passed, and only when it differs from what
    dest already holds. With check_only the copy is made and checked, then
    discarded. Returns a dict with changed, sha3_256, size_bytes, row_counts and
    integrity ('ok').

    With verify=False the integrity check and the hash are left to the step that
    reads the copy next (the backup packs it with cap_package.package, which checks
    it while compressing, and hashes it in its manifest), so the registry is not read
    twice more; sha3_256 and row_counts are then None and integrity 'deferred'.
    """
    source = _connect_source(src, busy_timeout_ms)
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    if not os.path.isdir(directory):
        source.close()
        raise SnapshotError("destination directory does not exist: %s" % directory)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(dest), suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        target = sqlite3.connect(tmp)
        try:
            # pages=-1: the whole database in one step, inside one read transaction.
            source.backup(target, pages=-1)
            # A snapshot is a standalone file: no WAL beside it, whatever the source used.
            target.execute("PRAGMA journal_mode = DELETE").fetchone()
        except sqlite3.DatabaseError as exc:
            raise SnapshotError("online backup of %s failed: %s" % (src, exc))
        finally:
            target.close()
            source.close()
        if not verify:
            return _place(tmp, dest, mode, check_only, {
                "sha3_256": None, "size_bytes": os.path.getsize(tmp), "row_counts": None,
                "integrity": "deferred"})
        # The integrity check and the hash read the same file; run them side by side.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            check = pool.submit(integrity_check, tmp)
            digest, size = sha3_file(tmp)
            try:
                problems, counts = check.result()
            except sqlite3.DatabaseError as exc:
                raise SnapshotError("integrity check of the copy of %s could not run: %s" % (src, exc))
        if problems:
            raise SnapshotError("integrity check of the copy of %s failed: %s"
                                % (src, "; ".join(problems[:5])))
        return _place(tmp, dest, mode, check_only, {
            "sha3_256": digest, "size_bytes": size, "row_counts": counts, "integrity": "ok"})
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _place(tmp, dest, mode, check_only, info):
    """Rename the checked copy into place unless dest already holds the same bytes."""
    changed = not same_files(tmp, dest)
    if changed and not check_only:
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    return dict(info, changed=changed)


def _json_value(value):
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    return value


def export_json(db_path, dest, mode=0o600):
    """See export_json_file; returns (sha3_256, size_bytes)."""
    info = export_json_file(db_path, dest, mode)
    return info["sha3_256"], info["size_bytes"]


def export_json_file(db_path, dest, mode=0o600):
    """Write the registry JSON form of a database, one row per line, streamed.

    Layout (cap-registry.v1): {"version": ..., "tables": {name: {"sql": CREATE
    statement, "indexes": [CREATE INDEX ...], "columns": [...], "rows": [[...], ...]}}},
    tables in name order and rows in rowid order, so equal databases give equal bytes.
    An existing file with the same bytes is left alone. Returns a dict with
    changed, sha3_256 and size_bytes.
    """
    conn = sqlite3.connect("file:%s?mode=ro" % _uri_path(db_path), uri=True)
    try:
        with AtomicFile(dest, mode, keep_if_same=True) as out:
            out.write(('{"version": %s, "tables": {' % json.dumps(REGISTRY_JSON_VERSION)).encode())
            for t_index, name in enumerate(table_names(conn)):
                sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?",
                                   (name,)).fetchone()[0]
                indexes = [r[0] for r in conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name=? "
                    "AND sql IS NOT NULL ORDER BY name", (name,))]
                quoted = '"%s"' % name.replace('"', '""')
                cursor = conn.execute("SELECT * FROM %s ORDER BY rowid" % quoted)
                columns = [d[0] for d in cursor.description]
                head = '%s\n%s: {"sql": %s, "indexes": %s, "columns": %s, "rows": [' % (
                    "," if t_index else "", json.dumps(name), json.dumps(sql),
                    json.dumps(indexes), json.dumps(columns))
                out.write(head.encode("utf-8"))
                first = True
                while True:
                    batch = cursor.fetchmany(2000)
                    if not batch:
                        break
                    for row in batch:
                        text = json.dumps([_json_value(v) for v in row], ensure_ascii=False)
                        out.write((("\n" if first else ",\n") + text).encode("utf-8"))
                        first = False
                out.write(b"\n]}")
            out.write(b"\n}}\n")
    finally:
        conn.close()
    digest, size = sha3_file(dest)
    return {"changed": out.changed, "sha3_256": digest, "size_bytes": size}


def load_json_into(path, conn):
    """Create the tables of a cap-registry.v1 JSON file in an open SQLite connection."""
    with open(path, "rb") as handle:
        doc = json.loads(handle.read().decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("version") != REGISTRY_JSON_VERSION:
        raise SnapshotError("%s is not a %s document" % (path, REGISTRY_JSON_VERSION))
    for name, table in sorted(doc.get("tables", {}).items()):
        conn.execute(table["sql"])
        for statement in table.get("indexes", []):
            conn.execute(statement)
        if table["rows"]:
            marks = ",".join("?" * len(table["columns"]))
            cols = ",".join('"%s"' % c.replace('"', '""') for c in table["columns"])
            conn.executemany('INSERT INTO "%s" (%s) VALUES (%s)' % (name.replace('"', '""'), cols, marks),
                             ([_from_json_value(v) for v in row] for row in table["rows"]))
    conn.commit()
    return conn


def _from_json_value(value):
    if isinstance(value, dict) and "$base64" in value:
        return base64.b64decode(value["$base64"])
    return value
