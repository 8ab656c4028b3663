# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deterministic tar / tar.gz archives of a backup tree, and their safe extraction.

docs/archive.md describes the same format and rules for people.

Packing writes its own pax headers and its own gzip framing so that the bytes
depend only on the tree's content (and the libdeflate release, pinned in
requirements.txt), never on mtimes, owners, umask, directory order, thread
count, the CPU or the Python version.

Extraction reads tar headers with its own strict parser instead of tarfile:
tarfile silently stops at a corrupt header (losing every later member), reads
pax headers of any size into memory, and the tarfile of older Python releases
has known denial-of-service bugs in pax parsing. The parser here accepts the
ustar, pax and GNU long-name forms that tar and Python write, and nothing else.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import hashlib
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
import traceback
import zlib

from ansible.module_utils.cap_fsutil import AtomicFile, fsync_dir
from ansible.module_utils.cap_hashing import hex_to_prefixed, sha3_file

try:
    import deflate as _libdeflate
    LIBDEFLATE_IMPORT_ERROR = None
except ImportError:  # reported by require_libdeflate() and by the module with missing_required_lib
    _libdeflate = None
    LIBDEFLATE_IMPORT_ERROR = traceback.format_exc()

HAS_LIBDEFLATE = _libdeflate is not None
# The version requirements.txt pins: libdeflate's output may change between its releases.
LIBDEFLATE_PIN = "0.9.0"

COMPRESSIONS = ("gzip", "none")

# tar geometry
BLOCK = 512
RECORD = 20 * BLOCK
ZERO_BLOCK = bytes(BLOCK)
MAX_OCTAL_SIZE = 8 ** 11 - 1
MAX_MTIME = 8 ** 11 - 1
PAX_HEADER_NAME = b"././@PaxHeader"

# normalised modes
DIR_MODE = 0o755
FILE_MODE = 0o644
EXEC_MODE = 0o755

# gzip / deflate
GZIP_MAGIC = b"\x1f\x8b"
GZIP_OS_UNKNOWN = 255
DEFAULT_LEVEL = 6
DEFAULT_BLOCK_SIZE = 512 * 1024
MIN_BLOCK_SIZE = 32 * 1024
MAX_BLOCK_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_THREADS = 8
THREADS_LIMIT = 64
IN_FLIGHT_PER_THREAD = 4

# I/O sizes; nothing reads a whole file or archive at once
COPY_BLOCK = 1024 * 1024
RAW_CHUNK = 256 * 1024
INFLATE_FEED = 64 * 1024
INFLATE_OUT = 256 * 1024

# extraction limits
DEFAULT_MAX_SIZE = 64 * 1024 ** 3
DEFAULT_MAX_MEMBERS = 1000000
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_EXTENSION_BYTES = 1024 * 1024
MAX_GZIP_FIELD = 64 * 1024
MAX_REPORTED = 10

_GZ_FHCRC = 0x02
_GZ_FEXTRA = 0x04
_GZ_FNAME = 0x08
_GZ_FCOMMENT = 0x10
_GZ_RESERVED = 0xE0

_TAR_KINDS = {
    b"0": "file",
    b"\x00": "file",
    b"5": "dir",
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"6": "FIFO",
    b"7": "contiguous file",
}
# Types after whose header no data blocks follow (POSIX); any other type,
# known or not, is followed by `size` bytes of data.
_NO_DATA_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")
_PAX_INT_RE = re.compile(rb"^[0-9]+$")
_PAX_TIME_RE = re.compile(rb"^(-?[0-9]+)(\.[0-9]*)?$")


class ArchiveError(Exception):
    """An archive cannot be written, read or extracted safely.

    `member` names the archive member (or source path) at fault when there is
    one; `problems` lists every refused member when extraction refuses an archive.
    """

    def __init__(self, message, member=None, problems=None):
        super().__init__(message)
        self.member = member
        self.problems = list(problems or [])


# ---------------------------------------------------------------------------
# Options and paths


def default_threads():
    """CPUs this process may run on, capped at DEFAULT_MAX_THREADS."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, DEFAULT_MAX_THREADS))


def parse_mode(value):
    """Turn a file mode given as '0600', '600' or an int into permission bits."""
    if isinstance(value, bool):
        raise ArchiveError("mode must be an octal string such as '0600', not %r" % (value,))
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        if not re.match(r"^0?[0-7]{3}$", text):
            raise ArchiveError("mode %r is not an octal permission string such as '0600'"
                               % (value,))
        mode = int(text, 8)
    if not 0 <= mode <= 0o777:
        raise ArchiveError("mode %r has bits outside 0777 (quote it, e.g. '0600')" % (value,))
    return mode


def _check_level(level):
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ArchiveError("compression level must be an integer from 0 to 9, got %r" % (level,))


def _check_threads(threads):
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or \
            not 1 <= threads <= THREADS_LIMIT:
        raise ArchiveError("threads must be an integer from 1 to %d, got %r"
                           % (THREADS_LIMIT, threads))
    return threads


def _check_block_size(block_size):
    if not isinstance(block_size, int) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ArchiveError("block size must be from %d to %d bytes, got %r"
                           % (MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, block_size))


def _check_mtime(mtime):
    if isinstance(mtime, bool) or not isinstance(mtime, int) or not 0 <= mtime <= MAX_MTIME:
        raise ArchiveError("mtime must be an integer from 0 to %d, got %r" % (MAX_MTIME, mtime))


def _check_compression(compression):
    if compression not in COMPRESSIONS:
        raise ArchiveError("compression %r is not one of %s"
                           % (compression, ", ".join(COMPRESSIONS)))


def _check_limit(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchiveError("%s must be a positive integer, got %r" % (name, value))


def path_problem(name):
    """Why name is not a safe relative archive path, or None when it is.

    Safe: valid UTF-8, relative, no empty, '.' or '..' segment, no backslash, no
    control character, at most MAX_PATH_BYTES bytes and MAX_SEGMENT_BYTES per segment.
    The same rule governs what pack() writes and what extract() accepts.
    """
    if not name:
        return "the name is empty"
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if name.startswith("/"):
        return "the path is absolute"
    if "\\" in name:
        return "the name contains a backslash"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return "the name contains a control character"
    if len(raw) > MAX_PATH_BYTES:
        return "the name is %d bytes long, more than %d" % (len(raw), MAX_PATH_BYTES)
    for segment in name.split("/"):
        if segment == "..":
            return "the path has a '..' segment"
        if segment in ("", "."):
            return "the path has an empty or '.' segment"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return "a path segment is longer than %d bytes" % MAX_SEGMENT_BYTES
    return None


def check_member_path(name):
    """Return name when path_problem() finds nothing, else raise ArchiveError."""
    problem = path_problem(name)
    if problem:
        raise ArchiveError("member %r: %s" % (name, problem), member=name)
    return name


def _is_within(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _normalised_mode(mode):
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def _kind_of_mode(mode):
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


# ---------------------------------------------------------------------------
# Parallel gzip


def require_libdeflate():
    """ArchiveError unless the libdeflate bindings (Python package `deflate`) are importable."""
    if _libdeflate is None:
        raise ArchiveError(
            "writing a gzip archive needs the Python package 'deflate' (libdeflate bindings, "
            "deflate==%s in requirements.txt) for the Python that runs this code (%s); "
            "reading and extracting archives does not need it" % (LIBDEFLATE_PIN, sys.executable))


def compressor_name(compression):
    """What made the compressed bytes of an archive just written, as results name it."""
    return "libdeflate (deflate %s)" % _libdeflate.__version__ if compression == "gzip" else "none"


def _gzip_header(level):
    # No file name, MTIME 0 and OS 255 (unknown): nothing depends on the machine.
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return GZIP_MAGIC + b"\x08\x00" + b"\x00\x00\x00\x00" + bytes([xfl, GZIP_OS_UNKNOWN])


def _gzip_member(block, header, level):
    """One complete gzip member holding `block`: header, raw deflate, CRC32 and ISIZE.

    libdeflate and zlib.crc32 release the GIL for buffers of this size, so members are
    made on several threads at once.
    """
    body = _libdeflate.deflate_compress(block, level)
    return b"".join((header, body, struct.pack("<II", zlib.crc32(block) & 0xFFFFFFFF,
                                                len(block) & 0xFFFFFFFF)))


class ParallelGzipWriter:
    """A gzip file made of one member per block, compressed on a thread pool.

    The input is cut into blocks of `block_size` bytes by offset alone; each block
    becomes a complete gzip member (RFC 1952 allows any number of them; gunzip, tar
    and Python's gzip read them as one stream) compressed by libdeflate on its own.
    The members are written in input order, so the output bytes do not depend on the
    thread count, on timing or on how the caller sized its writes. At most
    `threads * IN_FLIGHT_PER_THREAD` blocks are in flight, which keeps memory flat
    whatever the input size. An empty input gives one empty member.

    `fileobj` is any object with write(bytes); it is never closed here. write()
    does not keep references to the caller's buffer.
    """

    def __init__(self, fileobj, level=DEFAULT_LEVEL, threads=None, block_size=DEFAULT_BLOCK_SIZE):
        _check_level(level)
        _check_block_size(block_size)
        require_libdeflate()
        self.threads = _check_threads(threads)
        self._out = fileobj
        self._level = level
        self._header = _gzip_header(level)
        self._block_size = block_size
        self._pending = bytearray()
        self._size = 0
        self._members = 0
        self._queue = collections.deque()
        self._max_queue = self.threads * IN_FLIGHT_PER_THREAD
        self._pool = None
        if self.threads > 1:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads,
                                                               thread_name_prefix="cap-gzip")
        self._closed = False
        self.compressed_bytes = 0

    @property
    def uncompressed_bytes(self):
        return self._size

    @property
    def members(self):
        """gzip members written so far (all of them after close())."""
        return self._members

    def write(self, data):
        if self._closed:
            raise ValueError("write to a closed ParallelGzipWriter")
        view = memoryview(data).cast("B")
        total = len(view)
        if not total:
            return 0
        self._size += total
        pos = 0
        size = self._block_size
        if self._pending:
            pos = min(size - len(self._pending), total)
            self._pending += view[:pos]
            if len(self._pending) == size:
                self._submit(bytes(self._pending))
                self._pending = bytearray()
        while total - pos >= size:
            self._submit(view[pos:pos + size].tobytes())
            pos += size
        if pos < total:
            self._pending += view[pos:]
        return total

    def _submit(self, block):
        if self._pool is None:
            self._emit(_gzip_member(block, self._header, self._level))
            return
        # Write finished members in order; wait for the oldest when the queue is full.
        while self._queue and (len(self._queue) >= self._max_queue or self._queue[0].done()):
            self._emit(self._queue.popleft().result())
        self._queue.append(self._pool.submit(_gzip_member, block, self._header, self._level))

    def _emit(self, member):
        self._out.write(member)
        self.compressed_bytes += len(member)
        self._members += 1

    def close(self):
        """Compress what is left and write the last members (one empty member for no input)."""
        if self._closed:
            return
        try:
            if self._pending or not self._size:
                self._submit(bytes(self._pending))
                self._pending = bytearray()
            while self._queue:
                self._emit(self._queue.popleft().result())
        finally:
            self._closed = True
            self._shutdown(cancel=False)

    def abort(self):
        """Stop without finishing the stream (after a failure elsewhere)."""
        self._closed = True
        self._shutdown(cancel=True)
        self._queue.clear()

    def _shutdown(self, cancel):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


# ---------------------------------------------------------------------------
# Tar writing


def _ustar_header(name, mode, size, mtime, typeflag):
    """One 512-byte ustar header with uid/gid 0 and empty user and group names."""
    header = bytearray(BLOCK)
    header[0:len(name)] = name
    header[100:108] = b"%07o\x00" % mode
    header[108:116] = b"0000000\x00"
    header[116:124] = b"0000000\x00"
    header[124:136] = b"%011o\x00" % size
    header[136:148] = b"%011o\x00" % mtime
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:263] = b"ustar\x00"
    header[263:265] = b"00"
    header[329:337] = b"0000000\x00"
    header[337:345] = b"0000000\x00"
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header)


def _pax_record(key, value):
    """'<length> <key>=<value>\\n', where length counts the whole record."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d" % length + body


def _padding(size):
    return bytes(-size % BLOCK)


class TarWriter:
    """Writes a POSIX.1-2001 (pax) tar stream with normalised metadata.

    Every header has the same mtime, uid/gid 0 and empty owner names. Names that
    are not ASCII or longer than 100 bytes, and sizes of 8 GiB or more, go into
    a pax extended header; nothing else does. The caller supplies members in
    the order they should appear.
    """

    def __init__(self, sink, mtime=0):
        _check_mtime(mtime)
        self._sink = sink
        self._mtime = mtime
        self.offset = 0
        self.members = 0

    def _write(self, data):
        self._sink.write(data)
        self.offset += len(data)

    def _header(self, name, mode, size, typeflag):
        name_bytes = name.encode("utf-8")
        records = []
        header_name = name_bytes
        header_size = size
        if len(name_bytes) > 100 or not name_bytes.isascii():
            records.append(_pax_record(b"path", name_bytes))
            header_name = name.encode("ascii", "replace")[:100]
        if size > MAX_OCTAL_SIZE:
            records.append(_pax_record(b"size", b"%d" % size))
            header_size = 0
        if records:
            data = b"".join(records)
            self._write(_ustar_header(PAX_HEADER_NAME, FILE_MODE, len(data), self._mtime, b"x"))
            self._write(data + _padding(len(data)))
        self._write(_ustar_header(header_name, mode, header_size, self._mtime, typeflag))
        self.members += 1

    def add_directory(self, name):
        check_member_path(name)
        self._header(name + "/", DIR_MODE, 0, b"5")

    def add_file(self, name, handle, size, mode):
        """Add a regular file: exactly `size` bytes read from the binary `handle`.

        A file that ends early or has more data than `size` changed while it
        was archived; that is an error, not a silently inconsistent archive.
        """
        check_member_path(name)
        self._header(name, _normalised_mode(mode), size, b"0")
        buf = bytearray(min(COPY_BLOCK, max(size, 1)))
        view = memoryview(buf)
        left = size
        while left:
            n = handle.readinto(view[:min(left, len(buf))])
            if not n:
                raise ArchiveError("%s shrank while it was being archived" % name, member=name)
            self._write(view[:n])
            left -= n
        if handle.read(1):
            raise ArchiveError("%s grew while it was being archived" % name, member=name)
        self._write(_padding(size))

    def close(self):
        """End-of-archive marker (two zero blocks), padded to a 10240-byte record."""
        end = self.offset + 2 * BLOCK
        self._write(bytes(2 * BLOCK + (-end % RECORD)))


# ---------------------------------------------------------------------------
# Packing


class TreeEntry:
    """A directory or regular file below the tree being packed."""

    __slots__ = ("rel", "path", "is_dir")

    def __init__(self, rel, path, is_dir):
        self.rel = rel
        self.path = path
        self.is_dir = is_dir


def scan_tree(src_dir):
    """Every directory and regular file below src_dir, in archive order.

    Archive order is the byte order of the UTF-8 relative path. Symbolic links,
    devices, FIFOs and sockets are refused (never followed), and so are names
    that extract() would refuse.
    """
    root = os.path.abspath(src_dir)
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise ArchiveError("src %s does not exist" % root)
    if not stat.S_ISDIR(st.st_mode):
        raise ArchiveError("src %s is not a directory" % root)
    entries = []
    stack = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as listing:
            for item in listing:
                rel = rel_dir + "/" + item.name if rel_dir else item.name
                kind = _kind_of_mode(item.stat(follow_symlinks=False).st_mode)
                if kind not in ("file", "dir"):
                    raise ArchiveError("cannot archive %s: it is a %s; only regular files and "
                                       "directories are archived" % (item.path, kind), member=rel)
                problem = path_problem(rel)
                if problem:
                    raise ArchiveError("cannot archive %s: %s" % (item.path, problem), member=rel)
                entries.append(TreeEntry(rel, item.path, kind == "dir"))
                if kind == "dir":
                    stack.append((rel, item.path))
    entries.sort(key=lambda entry: entry.rel.encode("utf-8"))
    return entries


def _open_regular(path, rel):
    # O_NOFOLLOW and O_NONBLOCK: a file swapped for a link or a FIFO after the
    # scan must fail, not be followed or block.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArchiveError("cannot archive %s: it became a symbolic link" % path, member=rel)
        raise ArchiveError("cannot read %s: %s" % (path, exc.strerror), member=rel)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ArchiveError("cannot archive %s: it is no longer a regular file" % path, member=rel)
    return os.fdopen(fd, "rb", buffering=0), st


class HashingSink:
    """Passes writes on to `inner` (or drops them) while hashing them with SHA3-256."""

    def __init__(self, inner=None):
        self._inner = inner
        self._hash = hashlib.sha3_256()
        self.size = 0

    def write(self, data):
        self._hash.update(data)
        self.size += len(data)
        if self._inner is not None:
            self._inner.write(data)
        return len(data)

    @property
    def sha3_256(self):
        return hex_to_prefixed(self._hash.hexdigest())


def write_archive(src_dir, sink, level=DEFAULT_LEVEL, threads=None, mtime=0, compression="gzip",
                  block_size=DEFAULT_BLOCK_SIZE, entries=None):
    """Stream the deterministic archive of src_dir into `sink` (anything with write()).

    sink.write() must consume or copy the bytes before it returns, as files,
    hashes and io.BytesIO do; the buffer is reused. The sink is not closed.
    Returns a dict with members, file_count, directories, total_bytes (sum of
    file sizes), tar_bytes (uncompressed stream size), compressor and
    gzip_members (0 without compression).
    """
    _check_compression(compression)
    _check_level(level)
    _check_mtime(mtime)
    if entries is None:
        entries = scan_tree(src_dir)
    gz = None
    out = sink
    if compression == "gzip":
        gz = ParallelGzipWriter(sink, level=level, threads=threads, block_size=block_size)
        out = gz
    files = 0
    total = 0
    try:
        tar = TarWriter(out, mtime)
        for entry in entries:
            if entry.is_dir:
                tar.add_directory(entry.rel)
                continue
            handle, st = _open_regular(entry.path, entry.rel)
            with handle:
                tar.add_file(entry.rel, handle, st.st_size, st.st_mode)
            files += 1
            total += st.st_size
        tar.close()
        if gz is not None:
            gz.close()
    except BaseException:
        if gz is not None:
            gz.abort()
        raise
    return dict(members=tar.members, file_count=files, directories=tar.members - files,
                total_bytes=total, tar_bytes=tar.offset, compressor=compressor_name(compression),
                gzip_members=gz.members if gz is not None else 0)


def _existing_archive(dest):
    """(sha3, mode) of the regular file at dest, None when there is none."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise ArchiveError("dest %s is a symbolic link; refusing to write through it" % dest)
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveError("dest %s exists and is not a regular file" % dest)
    return sha3_file(dest)[0], stat.S_IMODE(st.st_mode)


def plan_pack(src_dir, dest, level=DEFAULT_LEVEL, threads=None, mtime=0, compression="gzip",
              mode=0o600, block_size=DEFAULT_BLOCK_SIZE):
    """Check the options and paths of packing src_dir into dest; list the tree.

    Returns (src, dest, mode, options): absolute paths, the mode as an int, and the
    keyword arguments of write_archive (threads resolved, entries scanned).
    """
    _check_compression(compression)
    _check_level(level)
    _check_mtime(mtime)
    threads = _check_threads(threads)
    mode = parse_mode(mode)
    src = os.path.abspath(src_dir)
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise ArchiveError("the directory of dest %s does not exist" % dest)
    if _is_within(os.path.realpath(parent), os.path.realpath(src)):
        raise ArchiveError("dest %s is inside src %s; the archive would contain itself"
                           % (dest, src))
    options = dict(level=level, threads=threads, mtime=mtime, compression=compression,
                   block_size=block_size, entries=scan_tree(src))
    return src, dest, mode, options


def pack(src_dir, dest, level=DEFAULT_LEVEL, threads=None, mtime=0, compression="gzip",
         mode=0o600, check=False, block_size=DEFAULT_BLOCK_SIZE):
    """Write the deterministic archive of src_dir to the file dest.

    The archive is written under a temporary name (0600) and renamed into
    place; when dest already holds exactly these bytes it is left untouched
    (changed False, apart from fixing its mode). With check=True nothing is
    written and `changed` says whether it would be.
    """
    src, dest, mode, options = plan_pack(src_dir, dest, level=level, threads=threads, mtime=mtime,
                                         compression=compression, mode=mode,
                                         block_size=block_size)
    existing = _existing_archive(dest)
    if check:
        sink = HashingSink()
        info = write_archive(src, sink, **options)
        changed = existing is None or existing != (sink.sha3_256, mode)
    else:
        out = AtomicFile(dest, mode)
        try:
            sink = HashingSink(out)
            info = write_archive(src, sink, **options)
            if existing is not None and existing[0] == sink.sha3_256:
                changed = existing[1] != mode
                if changed:
                    os.chmod(dest, mode)
            else:
                out.commit()
                changed = True
        finally:
            out.abort()
    result = dict(changed=changed, src=src, dest=dest, sha3_256=sink.sha3_256,
                  size_bytes=sink.size, compression=compression, mode="%04o" % mode,
                  threads=options["threads"])
    result.update(info)
    return result


# ---------------------------------------------------------------------------
# Reading: the tar byte stream of an archive file


class _ArchiveSource:
    """The tar byte stream inside an archive file (plain or gzip), read once from the start.

    The raw bytes are hashed (SHA3-256) as they are read. Every gzip member's
    header is parsed and its CRC32 and ISIZE are checked when it ends;
    concatenated members are read in turn, anything else after a member is an
    error. Producing more than `limit` tar bytes is refused (gzip bombs).
    """

    def __init__(self, fileobj, limit):
        self._raw = fileobj
        self._limit = limit
        self._hash = hashlib.sha3_256()
        self.raw_bytes = 0
        self.tar_bytes = 0
        self._buf = b""
        self._pos = 0
        self._out = b""
        self._out_pos = 0
        self._z = None
        self._crc = 0
        self._isize = 0
        self._gz_members = 0
        self._state = "header"
        head = self._peek_raw(265)
        if head[:2] == GZIP_MAGIC:
            self.compression = "gzip"
        elif len(head) >= 262 and head[257:262] == b"ustar":
            self.compression = "none"
        elif not head:
            raise ArchiveError("the archive is empty")
        else:
            raise ArchiveError("not a gzip or tar archive (it starts with 0x%s)" % head[:8].hex())

    @property
    def sha3_256(self):
        return hex_to_prefixed(self._hash.hexdigest())

    @property
    def raw_offset(self):
        return self.raw_bytes - (len(self._buf) - self._pos)

    # raw input -----------------------------------------------------------

    def _refill(self):
        chunk = self._raw.read(RAW_CHUNK)
        if chunk:
            self._hash.update(chunk)
            self.raw_bytes += len(chunk)
        self._buf = self._buf[self._pos:] + chunk
        self._pos = 0
        return bool(chunk)

    def _raw_view(self, size):
        if self._pos >= len(self._buf):
            self._refill()
        return memoryview(self._buf)[self._pos:self._pos + size]

    def _peek_raw(self, size):
        while len(self._buf) - self._pos < size and self._refill():
            pass
        return self._buf[self._pos:self._pos + size]

    def _take_raw(self, size):
        data = self._peek_raw(size)
        self._pos += len(data)
        return data

    def _take_exact(self, size, what):
        data = self._take_raw(size)
        if len(data) < size:
            raise ArchiveError("the gzip stream is truncated: %s is incomplete" % what)
        return data

    def _take_cstring(self, what):
        parts = []
        total = 0
        while True:
            byte = self._take_exact(1, what)
            if byte == b"\x00":
                return b"".join(parts) + byte
            parts.append(byte)
            total += 1
            if total > MAX_GZIP_FIELD:
                raise ArchiveError("the gzip header's %s is longer than %d bytes"
                                   % (what, MAX_GZIP_FIELD))

    # gzip ------------------------------------------------------------------

    def _gzip_header(self):
        start = self.raw_offset
        fixed = self._take_raw(10)
        if self._gz_members and (len(fixed) < 10 or fixed[:2] != GZIP_MAGIC):
            raise ArchiveError("unexpected data after the end of the gzip stream at byte %d"
                               % start)
        if len(fixed) < 10:
            raise ArchiveError("the gzip stream is truncated: the gzip header is incomplete")
        if fixed[:2] != GZIP_MAGIC:
            raise ArchiveError("not a gzip stream at byte %d" % start)
        if fixed[2] != 8:
            raise ArchiveError("unsupported gzip compression method %d at byte %d"
                               % (fixed[2], start))
        flags = fixed[3]
        if flags & _GZ_RESERVED:
            raise ArchiveError("the gzip header at byte %d sets reserved flags" % start)
        parts = [fixed]
        if flags & _GZ_FEXTRA:
            length = self._take_exact(2, "the gzip extra field")
            size = struct.unpack("<H", length)[0]
            parts += [length, self._take_exact(size, "the gzip extra field")]
        if flags & _GZ_FNAME:
            parts.append(self._take_cstring("file name"))
        if flags & _GZ_FCOMMENT:
            parts.append(self._take_cstring("comment"))
        if flags & _GZ_FHCRC:
            stored = struct.unpack("<H", self._take_exact(2, "the gzip header CRC"))[0]
            if zlib.crc32(b"".join(parts)) & 0xFFFF != stored:
                raise ArchiveError("the gzip header CRC at byte %d does not match: the archive "
                                   "is corrupt" % start)
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = 0
        self._isize = 0

    def _gzip_trailer(self):
        crc, isize = struct.unpack("<II", self._take_exact(8, "the gzip trailer (CRC32 and size)"))
        if crc != self._crc:
            raise ArchiveError("gzip CRC32 mismatch (stored %08x, computed %08x): the archive "
                               "is corrupt" % (crc, self._crc))
        if isize != self._isize & 0xFFFFFFFF:
            raise ArchiveError("gzip size mismatch (stored %d, computed %d): the archive is corrupt"
                               % (isize, self._isize & 0xFFFFFFFF))
        self._gz_members += 1

    def _next_gzip_output(self):
        while True:
            if self._state == "header":
                self._gzip_header()
                self._state = "body"
            elif self._state == "body":
                view = self._raw_view(INFLATE_FEED)
                try:
                    out = self._z.decompress(view, INFLATE_OUT)
                except zlib.error as exc:
                    raise ArchiveError("the gzip stream is corrupt near byte %d: %s"
                                       % (self.raw_offset, exc))
                # At the end of the stream the leftover input is in unused_data, and
                # CPython may leave a stale copy of it in unconsumed_tail as well.
                if self._z.eof:
                    self._pos += len(view) - len(self._z.unused_data)
                else:
                    self._pos += len(view) - len(self._z.unconsumed_tail)
                if out:
                    self._crc = zlib.crc32(out, self._crc)
                    self._isize += len(out)
                if self._z.eof:
                    self._state = "trailer"
                elif not out and not view:
                    raise ArchiveError("the gzip stream is truncated: it ends inside the "
                                       "compressed data")
                if out:
                    return out
            elif self._state == "trailer":
                self._gzip_trailer()
                self._state = "between"
            elif self._state == "between":
                self._state = "header" if self._peek_raw(1) else "end"
            else:
                return b""

    # tar bytes -------------------------------------------------------------

    def read(self, size):
        """Up to `size` tar bytes; b'' only at the end of the stream."""
        if self._out_pos >= len(self._out):
            if self.compression == "gzip":
                self._out = self._next_gzip_output()
            else:
                self._out = self._take_raw(INFLATE_OUT)
            self._out_pos = 0
            if not self._out:
                return b""
        data = self._out[self._out_pos:self._out_pos + size]
        self._out_pos += len(data)
        self.tar_bytes += len(data)
        if self.tar_bytes > self._limit:
            raise ArchiveError("the archive expands to more than %d bytes (max_size_bytes); "
                               "refusing it as a possible decompression bomb" % self._limit)
        return data

    def read_exact(self, size, what):
        parts = []
        got = 0
        while got < size:
            chunk = self.read(size - got)
            if not chunk:
                raise ArchiveError("the archive is truncated: it ends inside %s at tar offset %d"
                                   % (what, self.tar_bytes))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


# ---------------------------------------------------------------------------
# Reading: tar headers


def _cstr(field):
    return field.split(b"\x00", 1)[0]


def _tar_number(field, what, offset):
    if field[0] & 0x80:
        # GNU base-256: first byte 0x80 for positive numbers, 0xff for negative.
        if field[0] == 0xFF:
            raise ArchiveError("tar header at offset %d has a negative %s" % (offset, what))
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = _cstr(field).strip(b" ")
    if not text:
        return 0
    if text.strip(b"01234567"):
        raise ArchiveError("tar header at offset %d has a malformed %s field %r"
                           % (offset, what, text))
    return int(text, 8)


def _parse_header(block, offset):
    stored = _tar_number(block[148:156], "checksum", offset)
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise ArchiveError("corrupt tar header at offset %d (checksum mismatch)" % offset)
    if block[257:263] == b"ustar\x00":
        name = _cstr(block[0:100])
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    elif block[257:265] == b"ustar  \x00":
        name = _cstr(block[0:100])
    else:
        raise ArchiveError("unsupported tar header at offset %d (not ustar, pax or GNU)" % offset)
    return dict(
        name=name,
        mode=_tar_number(block[100:108], "mode", offset),
        size=_tar_number(block[124:136], "size", offset),
        mtime=_tar_number(block[136:148], "mtime", offset),
        type=block[156:157],
        linkname=_cstr(block[157:257]),
    )


def _parse_pax(data, offset):
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        length_text = data[pos:space] if space > 0 else b""
        if not _PAX_INT_RE.match(length_text):
            raise ArchiveError("malformed pax header at offset %d" % offset)
        end = pos + int(length_text)
        if end > len(data) or end <= space or data[end - 1:end] != b"\n":
            raise ArchiveError("malformed pax record in the header at offset %d" % offset)
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq:
            raise ArchiveError("malformed pax record in the header at offset %d" % offset)
        records[key.decode("utf-8", "replace")] = value
        pos = end
    return records


class Member:
    """One archive member as the tar headers describe it."""

    __slots__ = ("name", "kind", "size", "mode", "mtime", "linkname", "offset")

    def __init__(self, name, kind, size, mode, mtime, linkname, offset):
        self.name = name
        self.kind = kind
        self.size = size
        self.mode = mode
        self.mtime = mtime
        self.linkname = linkname
        self.offset = offset


class _TarReader:
    """Tar headers (ustar, pax, GNU long names) from an _ArchiveSource, one member at a time.

    next() skips whatever data of the previous member was not read, and after
    the end-of-archive marker checks that only zero padding follows, so a
    corrupt header or a missing end is an error, never a silent early end.
    """

    def __init__(self, source):
        self._src = source
        self._left = 0
        self._pad = 0
        self._globals = {}

    def next(self):
        self._skip()
        pax = {}
        long_name = None
        long_link = None
        while True:
            offset = self._src.tar_bytes
            block = self._src.read_exact(BLOCK, "a tar header (the end-of-archive marker is "
                                                "missing)")
            if block == ZERO_BLOCK:
                self._end(offset)
                return None
            header = _parse_header(block, offset)
            typeflag = header["type"]
            if typeflag in (b"x", b"g", b"L", b"K"):
                size = header["size"]
                if size > MAX_EXTENSION_BYTES:
                    raise ArchiveError("tar extension header at offset %d is %d bytes, more than %d"
                                       % (offset, size, MAX_EXTENSION_BYTES))
                data = self._src.read_exact(size, "a tar extension header")
                self._src.read_exact(-size % BLOCK, "tar padding")
                if typeflag == b"x":
                    pax.update(_parse_pax(data, offset))
                elif typeflag == b"g":
                    for key, value in _parse_pax(data, offset).items():
                        if value:
                            self._globals[key] = value
                        else:
                            self._globals.pop(key, None)
                elif typeflag == b"L":
                    long_name = _cstr(data)
                else:
                    long_link = _cstr(data)
                continue
            return self._member(header, pax, long_name, long_link, offset)

    def _member(self, header, pax, long_name, long_link, offset):
        fields = dict(self._globals)
        fields.update(pax)
        raw_name = fields.get("path", long_name if long_name is not None else header["name"])
        raw_link = fields.get("linkpath",
                              long_link if long_link is not None else header["linkname"])
        size = header["size"]
        if "size" in fields:
            if not _PAX_INT_RE.match(fields["size"]):
                raise ArchiveError("malformed pax size in the header at offset %d" % offset)
            size = int(fields["size"])
        mtime = header["mtime"]
        if "mtime" in fields:
            match = _PAX_TIME_RE.match(fields["mtime"])
            if not match:
                raise ArchiveError("malformed pax mtime in the header at offset %d" % offset)
            mtime = int(match.group(1))
        # Times before 1970 or beyond the octal field (year 2242) are clamped, not refused.
        mtime = max(0, min(mtime, MAX_MTIME))
        typeflag = header["type"]
        name = raw_name.decode("utf-8", "surrogateescape")
        kind = _TAR_KINDS.get(typeflag,
                              "member of unsupported type %r" % typeflag.decode("latin-1"))
        if typeflag == b"\x00" and name.endswith("/"):
            kind = "dir"
        if any(key.startswith("GNU.sparse.") for key in fields) or typeflag == b"S":
            kind = "sparse file"
        if typeflag in _NO_DATA_TYPES:
            self._left, self._pad = 0, 0
        else:
            self._left, self._pad = size, -size % BLOCK
        return Member(name, kind, size if kind == "file" else 0, header["mode"], mtime,
                      raw_link.decode("utf-8", "surrogateescape"), offset)

    @property
    def data_size(self):
        """Data bytes of the current member still to be read."""
        return self._left

    def read(self, size):
        """Up to `size` data bytes of the current member; b'' at its end."""
        if not self._left:
            return b""
        data = self._src.read(min(size, self._left))
        if not data:
            raise ArchiveError("the archive is truncated: it ends inside member data")
        self._left -= len(data)
        return data

    def _skip(self):
        while self._left:
            self.read(COPY_BLOCK)
        if self._pad:
            self._src.read_exact(self._pad, "tar padding")
            self._pad = 0

    def _end(self, offset):
        second = self._src.read_exact(BLOCK, "the end-of-archive marker")
        if second != ZERO_BLOCK:
            raise ArchiveError("corrupt tar stream at offset %d: a zero block followed by data"
                               % offset)
        while True:
            chunk = self._src.read(COPY_BLOCK)
            if not chunk:
                return
            if chunk.count(0) != len(chunk):
                raise ArchiveError("unexpected data after the end-of-archive marker (tar offset %d)"
                                   % offset)


# ---------------------------------------------------------------------------
# Validation and extraction


def _normalise_name(name, kind):
    """Strip a directory's trailing slashes and leading './'; '' means the archive root."""
    if kind == "dir" and name.endswith("/"):
        name = name.rstrip("/") or "/"
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name


def _plan_mode(kind, mode):
    if kind == "file":
        return _normalised_mode(mode)
    if kind == "dir":
        return DIR_MODE
    return 0


def _describe_kind(member):
    if member.kind in ("symbolic link", "hard link"):
        return "a %s to %r" % (member.kind, member.linkname)
    return "a %s" % member.kind


class _Rules:
    """The per-member rules of docs/archive.md, applied in archive order."""

    def __init__(self):
        # name -> "file", "dir", "implicit" (a parent no member named) or the refused kind
        self.seen = {}

    def problem(self, member, name):
        if name == "":
            if member.kind == "dir":
                return None
            return "it names the archive root but is %s" % _describe_kind(member)
        reason = path_problem(name)
        if reason:
            return reason
        refused = None
        if member.kind not in ("file", "dir"):
            refused = ("it is %s; only regular files and directories are extracted"
                       % _describe_kind(member))
        previous = self.seen.get(name)
        parts = name.split("/")
        through = None
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            kind = self.seen.get(parent)
            if kind is None:
                self.seen[parent] = "implicit"
            elif kind not in ("dir", "implicit") and through is None:
                through = (parent, kind)
        if previous is None or (previous == "implicit" and member.kind == "dir"):
            self.seen[name] = member.kind
        if refused:
            return refused
        if previous is not None:
            if previous == "implicit":
                if member.kind != "dir":
                    return "it is a file, but earlier members use it as a directory"
            else:
                return "it appears more than once in the archive"
        if through is not None:
            if through[1] == "file":
                return "its parent %r is a regular file in the archive" % through[0]
            return "its path goes through %r, which is a %s" % through
        return None


class _TreeComparer:
    """Checks, during the validation pass, whether dest already holds the archive's content.

    Compared: the set of entries, their types, file bytes and normalised modes.
    Not compared: times and owners, and the mode of dest itself.
    """

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.expected = set()
        self.difference = None

    def _differ(self, name, why):
        if self.difference is None:
            self.difference = "%r %s" % (name, why)

    def member(self, name, kind, mode, size, reader):
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            self.expected.add("/".join(parts[:depth]))
        if self.difference is not None:
            return
        path = os.path.join(self.root, name)
        if os.path.realpath(path) != path:
            return self._differ(name, "goes through a symbolic link in dest")
        try:
            st = os.lstat(path)
        except OSError:
            return self._differ(name, "is missing from dest")
        if kind == "dir":
            if not stat.S_ISDIR(st.st_mode):
                return self._differ(name, "is not a directory in dest")
            if stat.S_IMODE(st.st_mode) != mode:
                return self._differ(name, "has mode %04o in dest, %04o in the archive"
                                    % (stat.S_IMODE(st.st_mode), mode))
            return None
        if not stat.S_ISREG(st.st_mode):
            return self._differ(name, "is not a regular file in dest")
        if st.st_size != size:
            return self._differ(name, "has %d bytes in dest, %d in the archive"
                                % (st.st_size, size))
        if stat.S_IMODE(st.st_mode) != mode:
            return self._differ(name, "has mode %04o in dest, %04o in the archive"
                                % (stat.S_IMODE(st.st_mode), mode))
        try:
            handle, _st = _open_regular(path, name)
        except ArchiveError:
            return self._differ(name, "cannot be read in dest")
        with handle:
            while True:
                chunk = reader.read(COPY_BLOCK)
                if not chunk:
                    return None
                if handle.read(len(chunk)) != chunk:
                    return self._differ(name, "has different content in dest")

    def finish(self):
        if self.difference is not None:
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            for item in sorted(dirnames + filenames):
                full = os.path.join(dirpath, item)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                if rel not in self.expected:
                    return self._differ(rel, "is in dest but not in the archive")
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    return self._differ(rel, "is a symbolic link in dest")
                if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != DIR_MODE:
                    return self._differ(rel, "has mode %04o in dest, %04o expected"
                                        % (stat.S_IMODE(st.st_mode), DIR_MODE))


class _Scan:
    """What the validation pass learnt about an archive."""

    def __init__(self):
        self.plan = []
        self.problems = []
        self.problem_members = []
        self.files = []
        self.directories = 0
        self.total_bytes = 0
        self.sha3_256 = None
        self.size_bytes = 0
        self.compression = None
        self.difference = None


def _scan(fileobj, max_size_bytes, max_members, compare_root=None):
    """First pass: read every header, apply every rule, verify the whole stream.

    Member data is skipped without being kept, unless compare_root is given and
    still matches, in which case file data is compared with the files there.
    """
    source = _ArchiveSource(fileobj, max_size_bytes)
    reader = _TarReader(source)
    rules = _Rules()
    comparer = _TreeComparer(compare_root) if compare_root else None
    scan = _Scan()
    scan.compression = source.compression
    members = 0
    while True:
        member = reader.next()
        if member is None:
            break
        name = _normalise_name(member.name, member.kind)
        mode = _plan_mode(member.kind, member.mode)
        scan.plan.append((name, member.kind, member.size, mode))
        if name == "" and member.kind == "dir":
            continue
        members += 1
        if members > max_members:
            raise ArchiveError("the archive has more than %d members (max_members)" % max_members,
                               member=member.name)
        if source.tar_bytes + reader.data_size > max_size_bytes:
            raise ArchiveError("member %r (%d bytes) would make the archive expand to more "
                               "than %d bytes (max_size_bytes)"
                               % (member.name, member.size, max_size_bytes), member=member.name)
        problem = rules.problem(member, name)
        if problem:
            scan.problems.append("member %r: %s" % (member.name, problem))
            scan.problem_members.append(member.name)
            continue
        if member.kind == "dir":
            scan.directories += 1
        else:
            scan.files.append(name)
            scan.total_bytes += member.size
        if comparer is not None and not scan.problems:
            comparer.member(name, member.kind, mode, member.size, reader)
    if comparer is not None and not scan.problems:
        comparer.finish()
        scan.difference = comparer.difference
    scan.sha3_256 = source.sha3_256
    scan.size_bytes = source.raw_bytes
    return scan


def _refusal(scan):
    shown = scan.problems[:MAX_REPORTED]
    more = len(scan.problems) - len(shown)
    text = "; ".join(shown) + (" (and %d more)" % more if more else "")
    return ArchiveError("archive refused, nothing was written: %s" % text,
                        member=scan.problem_members[0], problems=scan.problems)


def _make_dirs(root, rel):
    """Create root/rel and its parents as private (0700) directories while extracting."""
    path = root
    for part in rel.split("/"):
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise ArchiveError("cannot create directory %s: a file is in the way" % path)
            continue
        os.chmod(path, 0o700)


def _write_file(path, reader, mode, mtime):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        while True:
            chunk = reader.read(COPY_BLOCK)
            if not chunk:
                break
            handle.write(chunk)
        handle.flush()
        os.fchmod(fd, mode)
        os.utime(fd, (mtime, mtime))
        os.fsync(fd)


def _unpack(fileobj, root, scan, max_size_bytes):
    """Second pass: write the members below root, checking they are the validated ones."""
    source = _ArchiveSource(fileobj, max_size_bytes)
    reader = _TarReader(source)
    dir_times = {}
    index = 0
    while True:
        member = reader.next()
        if member is None:
            break
        name = _normalise_name(member.name, member.kind)
        mode = _plan_mode(member.kind, member.mode)
        if index >= len(scan.plan) or scan.plan[index] != (name, member.kind, member.size, mode):
            raise ArchiveError("the archive changed between validation and extraction "
                               "(at member %r)" % member.name, member=member.name)
        index += 1
        if name == "":
            continue
        if member.kind == "dir":
            _make_dirs(root, name)
            dir_times[name] = member.mtime
            continue
        if "/" in name:
            _make_dirs(root, name.rsplit("/", 1)[0])
        _write_file(os.path.join(root, name), reader, mode, member.mtime)
    if index != len(scan.plan) or source.sha3_256 != scan.sha3_256:
        raise ArchiveError("the archive changed between validation and extraction")
    # Modes and times of directories last, deepest first: writing into a
    # directory changes its mtime, and 0700 kept it private until now.
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        os.chmod(dirpath, DIR_MODE)
        if rel in dir_times:
            os.utime(dirpath, (dir_times[rel], dir_times[rel]))
        fsync_dir(dirpath)


def _dest_state(dest):
    """'absent', 'empty' or 'non-empty'; errors for anything that is not a plain directory."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(dest)):
            raise ArchiveError("the parent directory of dest %s does not exist" % dest)
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        raise ArchiveError("dest %s is a symbolic link; refusing to extract through it" % dest)
    if not stat.S_ISDIR(st.st_mode):
        raise ArchiveError("dest %s exists and is not a directory" % dest)
    with os.scandir(dest) as listing:
        return "non-empty" if any(True for _item in listing) else "empty"


def _exchange(path_a, path_b):
    """Swap two paths atomically with Linux renameat2(RENAME_EXCHANGE).

    Returns False where the kernel, C library or file system lacks it.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(path_a), at_fdcwd, os.fsencode(path_b),
                 rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), path_b)


def _place(tmp, dest, state):
    """Move the finished tree at tmp to dest. Returns the path of a replaced tree, or None."""
    if state != "non-empty":
        # rename(2) replaces an empty directory atomically.
        os.rename(tmp, dest)
        return None
    if _exchange(tmp, dest):
        return tmp
    aside = tempfile.mkdtemp(prefix=".%s." % os.path.basename(dest), suffix=".old",
                             dir=os.path.dirname(dest))
    os.rmdir(aside)
    os.rename(dest, aside)
    try:
        os.rename(tmp, dest)
    except OSError:
        os.rename(aside, dest)
        raise
    return aside


def _summary(scan, src):
    return dict(src=src, sha3_256=scan.sha3_256, size_bytes=scan.size_bytes,
                compression=scan.compression, members=len(scan.files) + scan.directories,
                directories=scan.directories, files=list(scan.files), file_count=len(scan.files),
                total_bytes=scan.total_bytes)


def _extract_result(scan, src, dest, changed, replaced=False, warnings=None):
    result = _summary(scan, src)
    result.update(changed=changed, dest=dest, replaced=replaced, warnings=list(warnings or []))
    return result


def validate_archive(src, max_size_bytes=DEFAULT_MAX_SIZE, max_members=DEFAULT_MAX_MEMBERS):
    """Check an archive fully (every rule, the whole stream) without extracting it.

    Returns what extract() would report for it; raises ArchiveError when it
    would refuse the archive.
    """
    _check_limit(max_size_bytes, "max_size_bytes")
    _check_limit(max_members, "max_members")
    src = os.path.abspath(src)
    with open(src, "rb") as handle:
        scan = _scan(handle, max_size_bytes, max_members)
    if scan.problems:
        raise _refusal(scan)
    return _summary(scan, src)


def extract(src, dest, max_size_bytes=DEFAULT_MAX_SIZE, max_members=DEFAULT_MAX_MEMBERS,
            force=False, check=False):
    """Extract the archive src into the directory dest, safely and all-or-nothing.

    A validation pass reads every header and the whole stream first; any
    refused member or stream error raises ArchiveError before anything is
    written. The members are then written into a fresh private directory next
    to dest, which replaces dest only when everything succeeded.

    dest absent or empty: extracted. dest non-empty: when it already holds
    exactly the archive's content nothing changes; otherwise it is replaced
    atomically with force=True and refused without. check=True validates and
    compares but writes nothing.
    """
    _check_limit(max_size_bytes, "max_size_bytes")
    _check_limit(max_members, "max_members")
    src = os.path.abspath(src)
    dest = os.path.abspath(dest)
    if os.path.dirname(dest) == dest:
        raise ArchiveError("dest must not be the root directory")
    state = _dest_state(dest)
    with open(src, "rb") as handle:
        scan = _scan(handle, max_size_bytes, max_members,
                     compare_root=dest if state == "non-empty" else None)
        if scan.problems:
            raise _refusal(scan)
        if state == "non-empty":
            if scan.difference is None:
                return _extract_result(scan, src, dest, changed=False)
            if not force:
                raise ArchiveError("dest %s is not empty and differs from the archive (%s); set "
                                   "force to replace it" % (dest, scan.difference))
            if _is_within(os.path.realpath(src), os.path.realpath(dest)):
                raise ArchiveError("src %s is inside dest %s; replacing dest would delete the "
                                   "archive" % (src, dest))
        if check:
            return _extract_result(scan, src, dest, changed=True, replaced=state == "non-empty")
        handle.seek(0)
        tmp = tempfile.mkdtemp(prefix=".%s." % os.path.basename(dest), suffix=".extracting",
                               dir=os.path.dirname(dest))
        try:
            _unpack(handle, tmp, scan, max_size_bytes)
            old = _place(tmp, dest, state)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    fsync_dir(os.path.dirname(dest))
    warnings = []
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        if os.path.lexists(old):
            warnings.append("the previous content of %s was moved to %s and could not be removed"
                            % (dest, old))
    return _extract_result(scan, src, dest, changed=True, replaced=old is not None,
                           warnings=warnings)
