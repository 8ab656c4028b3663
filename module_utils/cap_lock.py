# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup lock: one backup at a time across processes and hosts sharing a directory.

The lock is a directory. os.mkdir() either creates it or fails because it exists,
atomically, on local file systems and on NFS alike, so of any number of concurrent
acquirers exactly one wins. The winner then writes owner.json inside it:

    {"owner": "backup-20251110-120000", "host": "backup-7f9c", "pid": 4242,
     "created_at": "2025-11-10T12:00:00Z", "created_epoch": 1762776000.0,
     "token": "<random hex>", "info": {...}}

The random token identifies one instance of the lock, so a process that breaks a
stale lock or releases its own can tell that the directory it moved aside is the one
it inspected and not a newer lock taken in between.

Removing a lock (breaking a stale one, releasing one's own) happens under a second,
short-lived directory lock, <path>.guard: the remover takes it, looks at the lock
again and moves it aside only if it is still the instance it judged. Without it, two
processes that both saw the same stale lock could race, and the slower one move aside
the lock the faster one had just taken. A guard older than GUARD_STALE_AFTER seconds
was left by a process that died while holding it and is removed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import stat
import time
import uuid

from ansible.module_utils.cap_fsutil import atomic_write_bytes

OWNER_FILE = "owner.json"
DEFAULT_STALE_AFTER = 6 * 3600
DEFAULT_POLL_INTERVAL = 1.0
GUARD_SUFFIX = ".guard"
GUARD_STALE_AFTER = 60.0
GUARD_WAIT = 10.0
# How long a lock directory without owner.json is given to get one (the instant
# between the winner's mkdir and its write) before it is judged as it is.
RECORD_WAIT = 2.0


class LockError(Exception):
    """The lock could not be taken, inspected or released."""


class LockHeld(LockError):
    """Another owner holds the lock and it did not become free in time."""

    def __init__(self, message, holder, waited):
        super().__init__(message)
        self.holder = holder
        self.waited = waited


class LockNotOwned(LockError):
    """A release was asked for a lock that records another owner."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


def utc_text(epoch):
    """An epoch as the project's UTC time text, YYYY-MM-DDTHH:MM:SSZ."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def read_holder(path):
    """The owner record of the lock at path.

    Returns None when there is no lock. A lock directory whose owner.json is missing
    or unreadable (a crash between mkdir and the write, or the instant in between)
    gives a record with owner None and the directory's mtime as its age.
    """
    # One stat for both questions: another process may move the lock aside at any
    # moment, and a second look could find nothing where a directory just was.
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise LockError("lock path %s exists but is not a directory" % path)
    dir_mtime = info.st_mtime
    try:
        with open(os.path.join(path, OWNER_FILE), "rb") as handle:
            record = json.loads(handle.read().decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        if not os.path.lexists(path):
            # Released or broken while we looked: there is no lock now.
            return None
        record = {}
    except (OSError, ValueError):
        record = {"corrupt": True}
    holder = dict(record)
    holder.setdefault("owner", None)
    holder.setdefault("host", None)
    holder.setdefault("token", None)
    epoch = holder.get("created_epoch")
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        epoch = dir_mtime
    holder["created_epoch"] = float(epoch)
    holder.setdefault("created_at", utc_text(epoch))
    return holder


def describe(holder):
    """'backup-20251110-120000 on host X since 2025-11-10T12:00:00Z' for messages."""
    owner = holder.get("owner") or "an unknown owner (no readable %s)" % OWNER_FILE
    return "%s on host %s since %s" % (owner, holder.get("host") or "unknown",
                                       holder.get("created_at"))


def new_record(owner, info=None, now=None):
    """The owner.json document for a lock taken now by this process."""
    now = time.time() if now is None else now
    return {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_at": utc_text(now),
        "created_epoch": now,
        "token": uuid.uuid4().hex,
        "info": dict(info or {}),
    }


def _public(holder):
    """A holder record without the internal token, for results and messages."""
    if holder is None:
        return None
    return dict((k, v) for k, v in holder.items() if k != "token")


def _move_aside(path, token, tag):
    """Rename the lock directory away, then delete it if it is the instance with token.

    Renaming is atomic, so at most one process moves a given lock instance. If what
    was moved carries another token, a newer lock was taken in between: it is put back.
    Returns True when the expected instance was removed.
    """
    aside = "%s.%s-%s" % (path, tag, uuid.uuid4().hex[:12])
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_holder(aside)
    if moved is not None and moved.get("token") != token:
        try:
            os.rename(aside, path)
        except OSError as exc:
            raise LockError("moved a newer lock of %s aside to %s and could not put it back: %s"
                            % (describe(moved), aside, exc.strerror))
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


class _Guard:
    """The <path>.guard directory lock around removing the lock at path (module docstring)."""

    def __init__(self, path, wait=None, poll=0.01):
        self.guard = path + GUARD_SUFFIX
        self.wait = GUARD_WAIT if wait is None else wait
        self.poll = poll

    def __enter__(self):
        deadline = time.monotonic() + self.wait
        while True:
            try:
                os.mkdir(self.guard, 0o700)
                return self
            except FileExistsError:
                pass
            except OSError as exc:
                raise LockError("cannot create lock guard %s: %s" % (self.guard, exc.strerror))
            try:
                if time.time() - os.stat(self.guard).st_mtime > GUARD_STALE_AFTER:
                    os.rmdir(self.guard)
                    continue
            except OSError:
                continue
            if time.monotonic() >= deadline:
                raise LockError("lock guard %s stayed taken for %d s: another process is "
                                "removing the lock" % (self.guard, int(self.wait)))
            time.sleep(self.poll)

    def __exit__(self, *exc_info):
        try:
            os.rmdir(self.guard)
        except FileNotFoundError:
            pass
        return False


def _is_stale(holder, stale_after, clock):
    return holder is not None and clock() - holder["created_epoch"] > stale_after


def _same_instance(one, other):
    return (one is not None and other is not None and one.get("token") == other.get("token")
            and one["created_epoch"] == other["created_epoch"])


def _break_stale(path, holder, stale_after, clock):
    """Move the stale lock holder aside if it is still there and still stale."""
    with _Guard(path):
        current = read_holder(path)
        if _same_instance(current, holder) and _is_stale(current, stale_after, clock):
            _move_aside(path, current.get("token"), "stale")


def acquire(path, owner, timeout=0, stale_after=DEFAULT_STALE_AFTER, info=None,
            check_only=False, poll_interval=DEFAULT_POLL_INTERVAL, clock=time.time,
            sleep=time.sleep):
    """Take the lock at path for owner, waiting up to timeout seconds for a holder.

    Returns a dict: changed, holder (the record now in place, or that would be),
    broken (the record of a stale lock that was broken, else None), waited (seconds).
    With check_only nothing is created or removed; the result says what would happen.
    Raises LockHeld when another owner still holds it after timeout seconds.
    """
    if not owner:
        raise LockError("a lock owner is required")
    started = clock()
    broken = None
    record_deadline = time.monotonic() + RECORD_WAIT
    while True:
        holder = read_holder(path)
        if (holder is not None and holder.get("owner") is None and not holder.get("corrupt")
                and time.monotonic() < record_deadline
                and not _is_stale(holder, stale_after, clock)):
            # Taken an instant ago and its owner.json not yet written: wait for it, so
            # that what follows (and any message) knows who holds the lock.
            sleep(0.02)
            continue
        if holder is not None and holder.get("owner") == owner:
            # The same run asking again: it already has the lock.
            return dict(changed=False, holder=_public(holder), broken=_public(broken),
                        waited=round(clock() - started, 3))
        if _is_stale(holder, stale_after, clock):
            broken = holder
            if check_only:
                return dict(changed=True, holder=_public(new_record(owner, info)),
                            broken=_public(broken), waited=round(clock() - started, 3))
            _break_stale(path, holder, stale_after, clock)
            continue
        if holder is None:
            if check_only:
                return dict(changed=True, holder=_public(new_record(owner, info)),
                            broken=_public(broken), waited=round(clock() - started, 3))
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                continue
            except OSError as exc:
                raise LockError("cannot create backup lock %s: %s" % (path, exc.strerror))
            record = new_record(owner, info)
            try:
                atomic_write_bytes(os.path.join(path, OWNER_FILE),
                                   json.dumps(record, sort_keys=True).encode("utf-8"),
                                   mode=0o644)
            except OSError as exc:
                # Without an owner record the lock could only age into staleness; give it up.
                shutil.rmtree(path, ignore_errors=True)
                raise LockError("took backup lock %s but could not record the owner: %s"
                                % (path, exc.strerror))
            return dict(changed=True, holder=_public(record), broken=_public(broken),
                        waited=round(clock() - started, 3))
        waited = clock() - started
        if waited >= timeout:
            raise LockHeld("backup lock %s is held by %s (waited %d s); another backup is running"
                           % (path, describe(holder), int(waited)), _public(holder),
                           round(waited, 3))
        sleep(min(poll_interval, max(timeout - waited, 0.01)))


def release(path, owner, check_only=False):
    """Remove the lock at path if owner holds it.

    Returns a dict: changed, holder (the record that was or would be removed, else None).
    An absent lock is not an error. Raises LockNotOwned when another owner holds it;
    then nothing is changed.
    """
    if not owner:
        raise LockError("a lock owner is required")
    holder = read_holder(path)
    if holder is None:
        return dict(changed=False, holder=None)
    if holder.get("owner") != owner:
        raise LockNotOwned("backup lock %s is held by %s, not by %s; it was left in place"
                           % (path, describe(holder), owner), _public(holder))
    if check_only:
        return dict(changed=True, holder=_public(holder))
    with _Guard(path):
        current = read_holder(path)
        if not _same_instance(current, holder) or not _move_aside(path, holder.get("token"),
                                                                   "released"):
            # Gone or replaced since the first look: nothing of ours to release.
            return dict(changed=False, holder=None)
    return dict(changed=True, holder=_public(holder))
