# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""File writing rules: temporary name, 0600, fsync, atomic rename, nothing left on failure."""

from __future__ import annotations

import os
import tempfile

COMPARE_BLOCK = 1024 * 1024


class AtomicFile:
    """A binary file written under a temporary name and renamed into place on commit.

    Used as a context manager: leaving the block normally commits, leaving it by
    an exception removes the temporary file, so a failed write never leaves a
    partial file under the final name and never replaces what was there before.
    """

    def __init__(self, dest, mode=0o600, keep_if_same=False):
        self.dest = os.path.abspath(dest)
        self.mode = mode
        # With keep_if_same, a result identical to the existing file is discarded
        # and the existing file (and its mtime) stays; self.changed tells which.
        self.keep_if_same = keep_if_same
        self.changed = None
        directory = os.path.dirname(self.dest) or "."
        fd, self.tmp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(self.dest),
                                             suffix=".tmp", dir=directory)
        os.fchmod(fd, 0o600)
        self.handle = os.fdopen(fd, "wb")
        self.committed = False

    def write(self, data):
        return self.handle.write(data)

    def fileno(self):
        return self.handle.fileno()

    def commit(self):
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        if self.keep_if_same and same_files(self.tmp_path, self.dest):
            self.changed = False
            return
        os.chmod(self.tmp_path, self.mode)
        os.replace(self.tmp_path, self.dest)
        self.committed = True
        self.changed = True
        fsync_dir(os.path.dirname(self.dest))

    def abort(self):
        if not self.handle.closed:
            self.handle.close()
        if not self.committed and os.path.exists(self.tmp_path):
            os.unlink(self.tmp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            finally:
                self.abort()
        else:
            self.abort()
        return False


def fsync_dir(directory):
    """fsync a directory so a rename in it survives a crash; best effort."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(dest, data, mode=0o600):
    """Write bytes to dest atomically with the given mode."""
    with AtomicFile(dest, mode) as out:
        out.write(data)


def same_content(path, data):
    """True when the file at path exists and holds exactly these bytes."""
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as handle:
            return handle.read() == data
    except OSError:
        return False


def same_files(path_a, path_b):
    """True when both files exist and have identical bytes (streamed comparison)."""
    try:
        if os.path.getsize(path_a) != os.path.getsize(path_b):
            return False
        with open(path_a, "rb") as a, open(path_b, "rb") as b:
            while True:
                block_a = a.read(COMPARE_BLOCK)
                block_b = b.read(COMPARE_BLOCK)
                if block_a != block_b:
                    return False
                if not block_a:
                    return True
    except OSError:
        return False
