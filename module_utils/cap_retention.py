# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Grandfather-father-son retention of the primary backup directory, and .sha3 sidecars.

docs/retention.md describes the policy with examples. In short: backups are found by a
pattern with a named group 'ts' (YYYYMMDD-HHMMSS, UTC); for each of hourly, daily and
monthly the newest backup of each of the N most recent periods that have a backup is
kept (restic and borg semantics); the newest keep_last backups are kept; the newest
backup whose archive matches its .sha3 sidecar is never deleted; the union survives and
everything else matching the pattern is deleted with its sidecars.
"""

from __future__ import annotations

import datetime
import os
import re

from ansible.module_utils.cap_hashing import hex_to_prefixed, sha3_file

DEFAULT_PATTERN = (r"^(?:cap|manual)-backup-(?P<ts>\d{8}-\d{6})\.tar\.gz(?:\.enc)?$")
TS_FORMAT = "%Y%m%d-%H%M%S"
SHA3_SUFFIX = ".sha3"
# Files that belong to a backup besides its archives, named after the backup's stem
# (the archive name up to the end of its timestamp).
STEM_SIDECARS = (".manifest.json", ".manifest.json.sig")
PERIODS = (
    ("hourly", "%Y%m%d%H"),
    ("daily", "%Y%m%d"),
    ("monthly", "%Y%m"),
)

# Unverified archives named one by one in warnings; the rest are counted.
MAX_WARNINGS = 5

_SIDECAR_LINE_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]{64}) [ *](.+)$")


class RetentionError(Exception):
    """The directory cannot be pruned as asked."""

    def __init__(self, message, deleted=None):
        super().__init__(message)
        self.deleted = deleted or []


class SidecarError(Exception):
    """A .sha3 sidecar is missing, malformed or describes another file."""


# .sha3 sidecars -------------------------------------------------------------------------

def sidecar_line(digest, name):
    """The sha3sum line for a file: '<64 hex>  <name>\\n' (digest may carry 0x)."""
    digest = normalize_digest(digest)
    return "%s  %s\n" % (digest[2:], name)


def normalize_digest(value):
    """'0x' + 64 lowercase hex from '0x'+64 hex or 64 hex; SidecarError otherwise."""
    text = str(value or "").strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    if not re.match(r"^[0-9a-fA-F]{64}$", text):
        raise SidecarError("not a SHA3-256 hex digest (64 hex digits, optionally 0x-prefixed): %r"
                           % (value,))
    return hex_to_prefixed(text)


def read_sidecar(sidecar, name):
    """The digest a sha3sum-format sidecar records for the file called name (a basename).

    Every line is '<64 hex>  <file name>' as sha3sum prints it ('*' instead of the second
    space for binary mode, an optional 0x prefix). A single-line sidecar must name the
    file; a multi-line one must have exactly one line for it. Returns the 0x form.
    """
    try:
        with open(sidecar, "rb") as handle:
            text = handle.read(64 * 1024).decode("utf-8")
    except UnicodeDecodeError:
        raise SidecarError("sidecar %s is not UTF-8 text" % sidecar)
    found = []
    names = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SIDECAR_LINE_RE.match(line.rstrip("\r"))
        if not match:
            raise SidecarError("sidecar %s line %d is not '<64 hex>  <file name>'"
                               % (sidecar, lineno))
        listed = match.group(2)
        names.append(listed)
        if os.path.basename(listed) == name:
            found.append(hex_to_prefixed(match.group(1)))
    if not names:
        raise SidecarError("sidecar %s is empty" % sidecar)
    if not found:
        raise SidecarError("sidecar %s describes %s, not %s" % (sidecar, ", ".join(names), name))
    if len(set(found)) > 1:
        raise SidecarError("sidecar %s has conflicting lines for %s" % (sidecar, name))
    return found[0]


# Finding backups ------------------------------------------------------------------------

def compile_pattern(pattern):
    try:
        regex = re.compile(pattern or DEFAULT_PATTERN)
    except re.error as exc:
        raise RetentionError("pattern %r is not a valid regular expression: %s" % (pattern, exc))
    if "ts" not in regex.groupindex:
        raise RetentionError("pattern %r has no named group 'ts' for the YYYYMMDD-HHMMSS timestamp"
                             % pattern)
    return regex


def parse_ts(text):
    """A naive UTC datetime from 'YYYYMMDD-HHMMSS'; ValueError when invalid."""
    return datetime.datetime.strptime(text, TS_FORMAT)


def utc_text(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Backup:
    """The archives of one backup (same stem) and the sidecar names that belong to it."""

    def __init__(self, stem, moment):
        self.stem = stem
        self.moment = moment
        self.archives = []

    @property
    def sort_key(self):
        return (self.moment, self.stem)

    def sidecar_names(self):
        names = [archive + SHA3_SUFFIX for archive in self.archives]
        names.extend(self.stem + suffix for suffix in STEM_SIDECARS)
        return names


def find_backups(directory, regex):
    """(backups newest first, skipped names with reasons) for the regular files in directory.

    Only regular files whose whole name matches regex count; symbolic links and
    directories are never touched. Archives that share a stem form one backup.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        raise RetentionError("backup directory %s does not exist" % directory)
    except NotADirectoryError:
        raise RetentionError("%s is not a directory" % directory)
    except OSError as exc:
        raise RetentionError("cannot list backup directory %s: %s" % (directory, exc.strerror))
    by_stem = {}
    skipped = []
    for entry in entries:
        match = regex.fullmatch(entry.name)
        if not match:
            continue
        if not entry.is_file(follow_symlinks=False):
            skipped.append(dict(name=entry.name, reason="not a regular file"))
            continue
        try:
            moment = parse_ts(match.group("ts"))
        except (ValueError, TypeError):
            skipped.append(dict(name=entry.name, reason="timestamp %r is not a valid "
                                "YYYYMMDD-HHMMSS" % match.group("ts")))
            continue
        stem = entry.name[:match.end("ts")]
        backup = by_stem.setdefault(stem, Backup(stem, moment))
        backup.archives.append(entry.name)
    for backup in by_stem.values():
        backup.archives.sort()
    backups = sorted(by_stem.values(), key=lambda b: b.sort_key, reverse=True)
    return backups, sorted(skipped, key=lambda s: s["name"])


# Policy ---------------------------------------------------------------------------------

def select_keeps(backups, keep_hourly=0, keep_daily=0, keep_monthly=0, keep_last=0):
    """{stem: [reasons]} of the backups the policy keeps. backups are newest first.

    For each period kind with N > 0, walk the backups from newest to oldest and keep the
    first (newest) backup of each new period until N periods are kept. keep_last keeps the
    N newest backups whatever their periods.
    """
    reasons = {}
    for backup in backups[:max(keep_last, 0)]:
        reasons.setdefault(backup.stem, []).append("keep_last")
    for kind, fmt in PERIODS:
        count = {"hourly": keep_hourly, "daily": keep_daily, "monthly": keep_monthly}[kind]
        last_period = None
        kept = 0
        for backup in backups:
            if kept >= count:
                break
            period = backup.moment.strftime(fmt)
            if period != last_period:
                last_period = period
                kept += 1
                reasons.setdefault(backup.stem, []).append(kind)
    return reasons


def verify_archive(directory, archive):
    """(verified, detail) for one archive against its <archive>.sha3 sidecar."""
    sidecar = os.path.join(directory, archive + SHA3_SUFFIX)
    if not os.path.isfile(sidecar):
        return False, "no sidecar %s" % os.path.basename(sidecar)
    try:
        expected = read_sidecar(sidecar, archive)
        actual, _size = sha3_file(os.path.join(directory, archive))
    except SidecarError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, "cannot read %s: %s" % (exc.filename, exc.strerror)
    if actual != expected:
        return False, "SHA3-256 is %s, the sidecar says %s" % (actual, expected)
    return True, "matches %s" % os.path.basename(sidecar)


def find_newest_verified(directory, backups):
    """(backup, archive name, failures) of the newest archive that matches its sidecar.

    backup and archive are None when none does; failures lists {archive, detail} for
    every newer archive that was checked and did not match.

    Walks from the newest backup and stops at the first archive whose SHA3-256 matches
    its sidecar, so normally only one archive is hashed.
    """
    failures = []
    for backup in backups:
        for archive in backup.archives:
            ok, detail = verify_archive(directory, archive)
            if ok:
                return backup, archive, failures
            failures.append(dict(archive=archive, detail=detail))
    return None, None, failures


def plan(directory, pattern=None, keep_hourly=168, keep_daily=7, keep_monthly=0, keep_last=1,
         verify_newest=True, now=None):
    """Decide what to keep and delete in directory. Nothing is changed.

    Returns a dict with kept, deleted (each a list of backup records, newest first),
    newest_verified (archive name or None), protected (the newest verified archive when
    only that rule keeps its backup, else None), unverified (newer archives that failed
    verification), skipped and a list of warnings.
    """
    for name, value in (("keep_hourly", keep_hourly), ("keep_daily", keep_daily),
                        ("keep_monthly", keep_monthly), ("keep_last", keep_last)):
        if value < 0:
            raise RetentionError("%s must not be negative, got %d" % (name, value))
    regex = compile_pattern(pattern)
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    backups, skipped = find_backups(directory, regex)
    reasons = select_keeps(backups, keep_hourly, keep_daily, keep_monthly, keep_last)
    warnings = []
    newest_verified = None
    protected = None
    unverified = []
    if verify_newest and backups:
        verified_backup, newest_verified, unverified = find_newest_verified(directory, backups)
        if verified_backup is None:
            warnings.append("no backup in %s matches its .sha3 sidecar; only the policy protects "
                            "backups" % directory)
        else:
            if verified_backup.stem not in reasons:
                protected = newest_verified
            reasons.setdefault(verified_backup.stem, []).append("newest_verified")
        for failure in unverified[:MAX_WARNINGS]:
            warnings.append("%s is newer than the newest verified backup and does not verify: %s"
                            % (failure["archive"], failure["detail"]))
        if len(unverified) > MAX_WARNINGS:
            warnings.append("%d more archives do not verify; the result's unverified lists them"
                            % (len(unverified) - MAX_WARNINGS))
    if backups and backups[0].moment > now + datetime.timedelta(minutes=5):
        warnings.append("newest backup %s is dated %s, after now (%s): check the clocks"
                        % (backups[0].stem, utc_text(backups[0].moment), utc_text(now)))
    kept = []
    deleted = []
    for backup in backups:
        record = dict(backup=backup.stem, archives=list(backup.archives),
                      timestamp=utc_text(backup.moment),
                      age_hours=round((now - backup.moment).total_seconds() / 3600.0, 2))
        if backup.stem in reasons:
            record["reasons"] = reasons[backup.stem]
            kept.append(record)
        else:
            present = [n for n in backup.sidecar_names()
                       if os.path.isfile(os.path.join(directory, n))
                       and not os.path.islink(os.path.join(directory, n))]
            record["sidecars"] = present
            record["files"] = present + list(backup.archives)
            deleted.append(record)
    return dict(kept=kept, deleted=deleted, newest_verified=newest_verified,
                protected=protected, unverified=unverified, skipped=skipped,
                warnings=warnings, now=utc_text(now))


def apply(directory, result):
    """Delete the files of every backup in result['deleted'].

    Sidecars go first and the archive last, so an interrupted run leaves at worst an
    archive without sidecars, which the pattern finds and a rerun removes. Returns the
    list of removed file names; raises RetentionError (carrying the names removed so
    far) on the first failure.
    """
    removed = []
    for record in result["deleted"]:
        for name in record["files"]:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RetentionError("cannot delete %s: %s" % (os.path.join(directory, name),
                                                               exc.strerror), removed)
            removed.append(name)
    return removed
