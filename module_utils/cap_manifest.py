# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup.manifest.v1 format: build, serialise, validate and verify.

docs/manifest.md is the human description of the same rules.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections import OrderedDict

from ansible.module_utils.cap_hashing import (
    CapHashError,
    is_prefixed_hash,
    iter_tree_files,
    sha3_file,
    tree_hash,
)

MANIFEST_VERSION = "backup.manifest.v1"
MANIFEST_NAME = "backup.manifest.json"
SIGNATURE_NAME = "backup.manifest.json.sig"
# Files that describe a backup rather than belong to it.
CONTROL_FILES = (MANIFEST_NAME, SIGNATURE_NAME)

ENTRY_TYPES = ("database", "policy_store", "key_metadata", "configuration", "documentation")
COMPRESSIONS = ("gzip", "none")
ENCRYPTIONS = ("none", "aes-256-gcm")

# The runbook's backup layout. First matching pattern wins; a pattern that ends
# in "/" makes the whole directory one entry with a tree hash.
DEFAULT_TYPES = OrderedDict([
    ("registry.sqlite", "database"),
    ("registry.json", "database"),
    ("policy_store.json", "policy_store"),
    ("keys/metadata/", "key_metadata"),
    ("config/*", "configuration"),
    ("docs/*", "documentation"),
    ("runbooks/*", "documentation"),
])

CREATED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
BACKUP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TOP_KEYS = ("version", "created_at", "created_by", "backup_id", "system_version", "files",
            "total_files", "total_size_bytes", "compression", "encryption")
ENTRY_KEYS = ("path", "sha3_256", "size_bytes", "type")


class ManifestError(Exception):
    """A manifest is malformed, or a tree cannot be described by one."""


def check_relative_path(path, what="path"):
    """Refuse absolute paths, '..', empty segments and backslashes.

    Returns the path unchanged when it is a safe relative POSIX path.
    """
    if not isinstance(path, str) or not path:
        raise ManifestError("%s must be a non-empty string" % what)
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ManifestError("%s %r is absolute" % (what, path))
    if "\\" in path or "\x00" in path:
        raise ManifestError("%s %r contains a backslash or NUL" % (what, path))
    parts = path[:-1].split("/") if path.endswith("/") else path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ManifestError("%s %r has an empty, '.' or '..' segment" % (what, path))
    return path


def _type_for(rel, types):
    for pattern, kind in types.items():
        if pattern.endswith("/"):
            continue
        if fnmatch.fnmatchcase(rel, pattern):
            return kind
    return None


def _validate_types(types):
    if not types:
        raise ManifestError("types must map at least one path pattern to a type")
    for pattern, kind in types.items():
        if kind not in ENTRY_TYPES:
            raise ManifestError("types[%r] = %r is not one of %s"
                                % (pattern, kind, ", ".join(ENTRY_TYPES)))
        check_relative_path(pattern.replace("*", "x").replace("?", "x"), "types pattern")


def describe_tree(root, types=None):
    """List the entries of a staging directory: one per file, one per directory pattern.

    Returns (entries, total_files) with entries sorted by path bytes.
    """
    types = OrderedDict(types or DEFAULT_TYPES)
    _validate_types(types)
    if not os.path.isdir(root):
        raise ManifestError("backup root is not a directory: %s" % root)
    dir_patterns = [p for p in types if p.endswith("/")]
    entries = []
    total_files = 0
    try:
        files = iter_tree_files(root)
    except CapHashError as exc:
        raise ManifestError(str(exc))
    seen_dirs = set()
    for rel, full in files:
        if rel in CONTROL_FILES:
            continue
        owner = next((d for d in dir_patterns if rel.startswith(d)), None)
        if owner is not None:
            seen_dirs.add(owner)
            continue
        kind = _type_for(rel, types)
        if kind is None:
            raise ManifestError("no type for %s: add a pattern for it to types" % rel)
        digest, size = sha3_file(full)
        entries.append(_entry(rel, digest, size, kind))
        total_files += 1
    for pattern in sorted(seen_dirs):
        digest, size, count = tree_hash(os.path.join(root, pattern))
        entries.append(_entry(pattern, digest, size, types[pattern]))
        total_files += count
    entries.sort(key=lambda e: e["path"].encode("utf-8"))
    return entries, total_files


def _entry(path, digest, size, kind):
    return OrderedDict([("path", path), ("sha3_256", digest), ("size_bytes", size), ("type", kind)])


def build_manifest(root, backup_id, created_at, system_version, created_by="cap-backup-automation",
                   compression="gzip", encryption="none", types=None):
    """Describe the staging directory root as a backup.manifest.v1 document."""
    entries, total_files = describe_tree(root, types)
    manifest = OrderedDict([
        ("version", MANIFEST_VERSION),
        ("created_at", created_at),
        ("created_by", created_by),
        ("backup_id", backup_id),
        ("system_version", system_version),
        ("files", entries),
        ("total_files", total_files),
        ("total_size_bytes", sum(e["size_bytes"] for e in entries)),
        ("compression", compression),
        ("encryption", encryption),
    ])
    validate_manifest(manifest)
    return manifest


def serialize_manifest(manifest):
    """Byte-stable text: fixed key order, two-space indent, UTF-8, final newline."""
    ordered = OrderedDict((key, manifest[key]) for key in TOP_KEYS)
    ordered["files"] = [OrderedDict((k, e[k]) for k in ENTRY_KEYS) for e in manifest["files"]]
    return (json.dumps(ordered, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def load_manifest(path):
    """Read and validate a manifest file; raise ManifestError naming the problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(16 * 1024 * 1024 + 1)
    except OSError as exc:
        raise ManifestError("cannot read manifest %s: %s" % (path, exc.strerror))
    if len(raw) > 16 * 1024 * 1024:
        raise ManifestError("manifest %s is larger than 16 MiB" % path)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError("manifest %s is not valid JSON: %s" % (path, exc))
    validate_manifest(doc, source=path)
    return doc


def validate_manifest(doc, source="manifest"):
    """Check every rule of backup.manifest.v1; the error names the field at fault."""
    def fail(msg):
        raise ManifestError("%s: %s" % (source, msg))

    if not isinstance(doc, dict):
        fail("top level must be a JSON object")
    missing = [k for k in TOP_KEYS if k not in doc]
    if missing:
        fail("missing field(s): %s" % ", ".join(missing))
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        fail("unknown field(s): %s" % ", ".join(unknown))
    if doc["version"] != MANIFEST_VERSION:
        fail("version is %r, expected %r" % (doc["version"], MANIFEST_VERSION))
    if not isinstance(doc["created_at"], str) or not CREATED_AT_RE.match(doc["created_at"]):
        fail("created_at %r is not UTC of the form YYYY-MM-DDTHH:MM:SSZ" % (doc["created_at"],))
    for key in ("created_by", "system_version"):
        if not isinstance(doc[key], str) or not doc[key]:
            fail("%s must be a non-empty string" % key)
    if not isinstance(doc["backup_id"], str) or not BACKUP_ID_RE.match(doc["backup_id"]):
        fail("backup_id %r must be letters, digits, '.', '_' or '-'" % (doc["backup_id"],))
    if doc["compression"] not in COMPRESSIONS:
        fail("compression %r is not one of %s" % (doc["compression"], ", ".join(COMPRESSIONS)))
    if doc["encryption"] not in ENCRYPTIONS:
        fail("encryption %r is not one of %s" % (doc["encryption"], ", ".join(ENCRYPTIONS)))
    for key in ("total_files", "total_size_bytes"):
        if not _is_count(doc[key]):
            fail("%s must be a non-negative integer, got %r" % (key, doc[key]))
    files = doc["files"]
    if not isinstance(files, list):
        fail("files must be a list")
    seen = set()
    total = 0
    for index, entry in enumerate(files):
        where = "files[%d]" % index
        if not isinstance(entry, dict):
            fail("%s must be an object" % where)
        missing = [k for k in ENTRY_KEYS if k not in entry]
        if missing:
            fail("%s: missing field(s): %s" % (where, ", ".join(missing)))
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            fail("%s: unknown field(s): %s" % (where, ", ".join(unknown)))
        try:
            check_relative_path(entry["path"], "%s.path" % where)
        except ManifestError as exc:
            fail(str(exc))
        path = entry["path"]
        if path in CONTROL_FILES:
            fail("%s: %s may not list itself or its signature" % (where, path))
        if path in seen:
            fail("%s: duplicate path %s" % (where, path))
        seen.add(path)
        if not is_prefixed_hash(entry["sha3_256"]):
            fail("%s (%s): sha3_256 %r is not 0x followed by 64 lowercase hex digits"
                 % (where, path, entry["sha3_256"]))
        if not _is_count(entry["size_bytes"]):
            fail("%s (%s): size_bytes must be a non-negative integer, got %r"
                 % (where, path, entry["size_bytes"]))
        if entry["type"] not in ENTRY_TYPES:
            fail("%s (%s): type %r is not one of %s"
                 % (where, path, entry["type"], ", ".join(ENTRY_TYPES)))
        total += entry["size_bytes"]
    dirs = [p for p in seen if p.endswith("/")]
    for path in seen:
        for parent in dirs:
            if path != parent and path.startswith(parent):
                fail("%s is listed both alone and inside directory entry %s" % (path, parent))
    if total != doc["total_size_bytes"]:
        fail("total_size_bytes is %d but the entries add up to %d" % (doc["total_size_bytes"], total))
    if doc["total_files"] < len([p for p in seen if not p.endswith("/")]):
        fail("total_files is %d but %d file entries are listed" % (doc["total_files"], len(seen)))
    return doc


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def short_hash(value):
    """The runbook's short form of a hash: '0x' and the first 8 hex digits, then '...'."""
    return (value[:10] + "...") if value else "(none)"


def verify_tree(manifest, root, ignore=CONTROL_FILES):
    """Check every manifest entry against the files under root.

    Returns a dict with 'results' (one per entry: path, type, status
    ok|mismatch|missing, expected, actual, expected_size, actual_size),
    'extra' (files under root that no entry covers), 'files_checked' and 'ok'.
    Never raises for a content problem; raises ManifestError if root is unusable.
    """
    if not os.path.isdir(root):
        raise ManifestError("backup directory does not exist: %s" % root)
    results = []
    covered_dirs = []
    covered_files = set()
    files_checked = 0
    for entry in manifest["files"]:
        path = entry["path"]
        full = os.path.join(root, path)
        result = OrderedDict([("path", path), ("type", entry["type"]), ("status", "ok"),
                              ("expected", entry["sha3_256"]), ("actual", None),
                              ("expected_size", entry["size_bytes"]), ("actual_size", None)])
        try:
            if path.endswith("/"):
                covered_dirs.append(path)
                if os.path.islink(full.rstrip("/")) or not os.path.isdir(full):
                    result["status"] = "missing"
                else:
                    digest, size, count = tree_hash(full)
                    result["actual"], result["actual_size"] = digest, size
                    files_checked += count
            else:
                covered_files.add(path)
                if os.path.islink(full) or not os.path.isfile(full):
                    result["status"] = "missing"
                else:
                    result["actual"], result["actual_size"] = sha3_file(full)
                    files_checked += 1
        except (CapHashError, OSError) as exc:
            result["status"] = "unreadable"
            result["error"] = str(exc)
        if result["status"] == "ok" and (result["actual"] != result["expected"]
                                         or result["actual_size"] != result["expected_size"]):
            result["status"] = "mismatch"
        results.append(result)
    extra = []
    try:
        listing = iter_tree_files(root)
    except CapHashError as exc:
        raise ManifestError(str(exc))
    for rel, _full in listing:
        if rel in ignore or rel in covered_files:
            continue
        if any(rel.startswith(d) for d in covered_dirs):
            continue
        extra.append(rel)
    problems = [r for r in results if r["status"] != "ok"]
    # Only meaningful when every entry was read: a missing entry already explains it.
    count_mismatch = not problems and files_checked != manifest["total_files"]
    return OrderedDict([
        ("ok", not problems and not extra and not count_mismatch),
        ("results", results),
        ("extra", extra),
        ("files_checked", files_checked),
        ("total_files", manifest["total_files"]),
        ("count_mismatch", count_mismatch),
    ])


def report_lines(report):
    """The runbook's step 2 output, one line per entry, then a verdict."""
    lines = ["\U0001F50D Verifying backup integrity..."]
    for r in report["results"]:
        if r["status"] == "ok":
            lines.append("\u2705 %s: SHA3-256 matches (%s)" % (r["path"], short_hash(r["expected"])))
        elif r["status"] == "mismatch":
            lines.append("\u274C %s: SHA3-256 mismatch (expected %s, got %s; size %s, expected %s)"
                         % (r["path"], short_hash(r["expected"]), short_hash(r["actual"]),
                            r["actual_size"], r["expected_size"]))
        elif r["status"] == "missing":
            lines.append("\u274C %s: missing (expected %s)" % (r["path"], short_hash(r["expected"])))
        else:
            lines.append("\u274C %s: unreadable (%s)" % (r["path"], r.get("error")))
    for rel in report["extra"]:
        lines.append("\u274C %s: not in manifest" % rel)
    if report["count_mismatch"]:
        lines.append("\u274C total_files is %d but %d files were found"
                     % (report["total_files"], report["files_checked"]))
    if report["ok"]:
        lines.append("\u2705 All %d files verified successfully" % report["files_checked"])
    else:
        bad = len([r for r in report["results"] if r["status"] != "ok"])
        lines.append("\u274C Verification failed: %d of %d entries differ, %d extra file(s)"
                     % (bad, len(report["results"]), len(report["extra"])))
    return lines


def failure_summary(report):
    """One sentence naming the first class of problem and the files concerned."""
    by_status = OrderedDict()
    for r in report["results"]:
        if r["status"] != "ok":
            by_status.setdefault(r["status"], []).append(r)
    parts = []
    for status, items in by_status.items():
        if status == "mismatch":
            parts.append("hash mismatch: " + "; ".join(
                "%s expected %s got %s" % (r["path"], r["expected"], r["actual"]) for r in items))
        else:
            parts.append("%s: %s" % (status, ", ".join(r["path"] for r in items)))
    if report["extra"]:
        parts.append("not in manifest: " + ", ".join(report["extra"]))
    if report["count_mismatch"]:
        parts.append("total_files is %d but %d files were found"
                     % (report["total_files"], report["files_checked"]))
    return "; ".join(parts)
