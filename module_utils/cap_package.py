# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup's packaging step in one pass: archive, encrypt, check, commit.

The deterministic archive stream (cap_archive.write_archive) goes straight into the
AES-256-GCM stream writer (cap_crypt.EncryptingWriter) over a temporary file, so the
unencrypted archive never touches the disk and every byte is read and hashed once.
While it compresses, PRAGMA integrity_check runs on the staged SQLite files in a
thread; the file is renamed into place only when the archive is complete, sealed and
every check passed. docs/archive.md and docs/encryption.md describe the two formats.
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3

from ansible.module_utils.cap_archive import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_LEVEL,
    ArchiveError,
    HashingSink,
    pack,
    plan_pack,
    write_archive,
)
from ansible.module_utils.cap_crypt import DEFAULT_CHUNK_SIZE, EncryptingWriter
from ansible.module_utils.cap_fsutil import AtomicFile
from ansible.module_utils.cap_hashing import sha3_file
from ansible.module_utils.cap_sqlite import integrity_check


def _start_checks(pool, src_dir, check_sqlite):
    futures = {}
    for rel in check_sqlite:
        path = os.path.join(src_dir, rel)
        if not os.path.isfile(path):
            raise ArchiveError("check_sqlite names %s, which is not a file under %s" % (rel, src_dir))
        futures[rel] = pool.submit(integrity_check, path)
    return futures


def _finish_checks(futures):
    """Row counts of every checked database; ArchiveError naming the first one that fails."""
    counts = {}
    for rel, future in futures.items():
        try:
            problems, rows = future.result()
        except sqlite3.DatabaseError as exc:
            raise ArchiveError("integrity check of %s could not run: %s" % (rel, exc), member=rel)
        if problems:
            raise ArchiveError("integrity check of %s failed: %s" % (rel, "; ".join(problems[:5])),
                               member=rel)
        counts[rel] = rows
    return counts


def package(src_dir, dest, key=None, key_id=None, wrapped_key=None, check_sqlite=(),
            level=DEFAULT_LEVEL, threads=None, mtime=0, compression="gzip", mode=0o600,
            block_size=DEFAULT_BLOCK_SIZE, chunk_size=DEFAULT_CHUNK_SIZE, check=False):
    """Archive src_dir into dest, encrypted when key (32 bytes) is given.

    check_sqlite: paths relative to src_dir of SQLite databases to integrity-check
    while packing; a failing check leaves no dest. Without a key this is
    cap_archive.pack plus those checks. Returns pack's result plus
    ``plain_sha3_256`` (SHA3-256 of the unencrypted archive stream, the value that is
    deterministic), ``encrypted``, ``key_id``, ``chunks`` and ``sqlite_row_counts``.
    An encrypted archive has a fresh nonce every time, so it is always written
    (changed) unless check is set.
    """
    if key is None and not check_sqlite:
        result = pack(src_dir, dest, level=level, threads=threads, mtime=mtime,
                      compression=compression, mode=mode, check=check, block_size=block_size)
        result.update(plain_sha3_256=result["sha3_256"], encrypted=False, sqlite_row_counts={})
        return result
    src, dest, mode, options = plan_pack(src_dir, dest, level=level, threads=threads, mtime=mtime,
                                         compression=compression, mode=mode,
                                         block_size=block_size)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(check_sqlite))) as pool:
        futures = _start_checks(pool, src, check_sqlite)
        # An unencrypted archive is deterministic: an identical existing file stays.
        out = None if check else AtomicFile(dest, mode, keep_if_same=key is None)
        try:
            target = out if out is not None else HashingSink()
            writer = None
            if key is not None:
                writer = EncryptingWriter(target, key, key_id=key_id, wrapped_key=wrapped_key,
                                          chunk_size=chunk_size)
            plain = HashingSink(writer if writer is not None else target)
            info = write_archive(src, plain, **options)
            if writer is not None:
                writer.close()
            counts = _finish_checks(futures)
            if out is not None:
                out.commit()
        finally:
            for future in futures.values():
                future.cancel()
            if out is not None:
                out.abort()
    if writer is not None:
        sealed = writer.result()
        digest, size = sealed["sha3_256"], sealed["size_bytes"]
    else:
        digest, size = plain.sha3_256, plain.size
    if out is not None:
        changed = bool(out.changed)
    else:
        changed = key is not None or not os.path.isfile(dest) or sha3_file(dest)[0] != digest
    result = dict(changed=changed, src=src, dest=dest, sha3_256=digest, size_bytes=size,
                  plain_sha3_256=plain.sha3_256, plain_size_bytes=plain.size,
                  compression=compression, mode="%04o" % mode, threads=options["threads"],
                  encrypted=writer is not None,
                  key_id=sealed["key_id"] if writer is not None else None,
                  chunks=sealed["chunks"] if writer is not None else None,
                  sqlite_row_counts=counts)
    result.update(info)
    return result
