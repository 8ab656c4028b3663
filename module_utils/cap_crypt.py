# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming AES-256-GCM encryption of backup archives: the CAPCRYPT v1 format.

A file is a header followed by chunks. Each chunk is sealed with AES-256-GCM
under a per-file key (HKDF-SHA256 of the user's key and a random salt), with a
nonce made of a random per-file prefix, the chunk index and a final-chunk flag
(the STREAM construction), and with the whole header as associated data. So a
changed header, a flipped bit, reordered chunks, a stream cut short or data
appended after the final chunk all fail authentication, and memory use does
not depend on the file size.

docs/encryption.md describes the format byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
import traceback

from ansible.module_utils.cap_fsutil import AtomicFile
from ansible.module_utils.cap_hashing import hex_to_prefixed, sha3_file

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

MAGIC = b"CAPCRYPT"
FORMAT_VERSION = 1
# Algorithm 1: AES-256-GCM chunks, HKDF-SHA256 per-file key, STREAM nonces.
ALGORITHM_ID = 1
ALGORITHM_NAME = "aes-256-gcm"
HKDF_INFO = b"CAPCRYPT v1 file key"

KEY_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 16
# The upper bound also caps what a hostile header can make a reader allocate.
MAX_CHUNK_SIZE = 64 * 1024 * 1024
# The chunk index is a 32-bit field of the nonce.
MAX_CHUNKS = 2 ** 32
MAX_KEY_ID_LENGTH = 128
MAX_WRAPPED_KEY_LENGTH = 65535
MAX_KEY_FILE_SIZE = 4096

# magic, version, algorithm, chunk size, salt, nonce prefix, key id length
_FIXED = struct.Struct(">8sBBI%ds%dsB" % (SALT_SIZE, NONCE_PREFIX_SIZE))
_WRAPPED_LEN = struct.Struct(">H")

# '/' and ':' allow Vault names such as "transit:transit/cap-backup".
KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
DERIVED_KEY_ID_RE = re.compile(r"^k-[0-9a-f]{16}$")
# Vault Transit ciphertext ("vault:v1:...") and similar tokens: printable ASCII, no spaces.
WRAPPED_KEY_RE = re.compile(r"^[\x21-\x7e]+$")
_BASE64_RE = re.compile(rb"^[A-Za-z0-9+/]+={0,2}$")


class CapCryptError(Exception):
    """Base class: a CAPCRYPT stream could not be written or read."""


class CapCryptKeyError(CapCryptError):
    """A key, key file or key id is malformed."""


class CapCryptFormatError(CapCryptError):
    """The input is not a valid CAPCRYPT v1 header or chunk layout."""


class CapCryptAuthError(CapCryptError):
    """A chunk did not authenticate: wrong key or changed bytes."""


class CapCryptWrongKeyError(CapCryptAuthError):
    """The header names a derived key id that is not the given key's."""


class CapCryptTruncatedError(CapCryptAuthError):
    """The stream ends before its final chunk."""


class CapCryptTrailingDataError(CapCryptAuthError):
    """Bytes follow the final chunk."""


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise CapCryptError("the Python library 'cryptography' is required")


def _random_bytes(size):
    # One indirection so known-answer tests can fix salt and nonce prefix.
    return os.urandom(size)


# ---------------------------------------------------------------------------
# Keys and key ids
# ---------------------------------------------------------------------------

def generate_key():
    """A fresh random 32-byte key."""
    return os.urandom(KEY_SIZE)


def check_key(key):
    """Return key when it is exactly 32 bytes; never echo its value."""
    if not isinstance(key, (bytes, bytearray)):
        raise CapCryptKeyError("key must be bytes, got %s" % type(key).__name__)
    if len(key) != KEY_SIZE:
        raise CapCryptKeyError("key is %d bytes; AES-256 needs exactly %d" % (len(key), KEY_SIZE))
    return bytes(key)


def parse_key(value, source="key"):
    """32-byte key from its base64 text (str or bytes); source names it in errors."""
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise CapCryptKeyError("%s is not valid base64 (expected the base64 of 32 bytes)"
                                   % source)
    stripped = bytes(value).strip()
    if not _BASE64_RE.match(stripped):
        raise CapCryptKeyError("%s is not valid base64 (expected the base64 of 32 bytes)" % source)
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise CapCryptKeyError("%s is not valid base64 (expected the base64 of 32 bytes)" % source)
    if len(raw) != KEY_SIZE:
        raise CapCryptKeyError("%s decodes to %d bytes; AES-256 needs exactly %d"
                               % (source, len(raw), KEY_SIZE))
    return raw


def load_key_file(path):
    """Read a key file holding the base64 of the key or the 32 raw bytes.

    Returns (key, warning); warning is a sentence when the file is readable by
    group or others, else None.
    """
    try:
        st = os.stat(path)
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise CapCryptKeyError("cannot read key file %s: %s" % (path, exc.strerror))
    if len(data) > MAX_KEY_FILE_SIZE:
        raise CapCryptKeyError("key file %s is larger than %d bytes; it should hold a 32-byte "
                               "key or its base64" % (path, MAX_KEY_FILE_SIZE))
    # 32 bytes that are all base64 characters are base64 text of 24 bytes, not
    # a random raw key; let parse_key report the wrong length.
    if len(data) == KEY_SIZE and not _BASE64_RE.match(data):
        key = bytes(data)
    else:
        key = parse_key(data, "key file %s" % path)
    warning = None
    if st.st_mode & 0o077:
        warning = ("key file %s is accessible by group or others (mode %04o); restrict it to 0600"
                   % (path, st.st_mode & 0o7777))
    return key, warning


def derive_key_id(key):
    """The default key id: 'k-' and the first 16 hex digits of SHA3-256 of the key.

    Reproducible with `base64 -d key.b64 | sha3sum -a 256 | cut -c1-16`. The hash
    of a 256-bit random key reveals nothing usable about it.
    """
    return "k-" + hashlib.sha3_256(check_key(key)).hexdigest()[:16]


def is_derived_key_id(key_id):
    return isinstance(key_id, str) and DERIVED_KEY_ID_RE.match(key_id) is not None


def resolve_key_id(key, key_id=None):
    """The key id to store: key_id when given and valid, else derive_key_id(key).

    A given key id of the derived form must be this key's, or a reader would
    later reject the right key as the wrong one.
    """
    derived = derive_key_id(key)
    if key_id is None or key_id == "":
        return derived
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise CapCryptKeyError("key_id %r must be 1-128 letters, digits, '.', '_', ':', '/' or "
                               "'-', starting with a letter or digit" % (key_id,))
    if is_derived_key_id(key_id) and key_id != derived:
        raise CapCryptKeyError("key_id %s has the derived form k-<16 hex> but the key's derived id "
                               "is %s; omit key_id or choose another name" % (key_id, derived))
    return key_id


# ---------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------

class Header(object):
    """A parsed or freshly built CAPCRYPT header; raw holds its exact bytes."""

    __slots__ = ("version", "algorithm", "chunk_size", "salt", "nonce_prefix", "key_id",
                 "wrapped_key", "raw")

    def __init__(self, version, algorithm, chunk_size, salt, nonce_prefix, key_id, wrapped_key,
                 raw):
        self.version = version
        self.algorithm = algorithm
        self.chunk_size = chunk_size
        self.salt = salt
        self.nonce_prefix = nonce_prefix
        self.key_id = key_id
        self.wrapped_key = wrapped_key
        self.raw = raw

    @property
    def size(self):
        return len(self.raw)

    def to_dict(self):
        """Public fields of the header (nothing here is secret)."""
        return {
            "format_version": self.version,
            "algorithm": ALGORITHM_NAME,
            "chunk_size": self.chunk_size,
            "key_id": self.key_id,
            "key_id_derived": is_derived_key_id(self.key_id),
            "wrapped_key": self.wrapped_key,
            "header_size_bytes": self.size,
        }


def check_chunk_size(chunk_size):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) \
            or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise CapCryptError("chunk_size %r must be an integer from %d to %d"
                            % (chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE))
    return chunk_size


def check_wrapped_key(wrapped_key):
    """None for no wrapped key, else the validated ASCII token."""
    if wrapped_key is None or wrapped_key == "":
        return None
    if not isinstance(wrapped_key, str) or not WRAPPED_KEY_RE.match(wrapped_key):
        raise CapCryptKeyError("wrapped_key must be printable ASCII without spaces "
                               "(a Vault Transit ciphertext such as vault:v1:...)")
    if len(wrapped_key) > MAX_WRAPPED_KEY_LENGTH:
        raise CapCryptKeyError("wrapped_key is %d characters; at most %d fit in the header"
                               % (len(wrapped_key), MAX_WRAPPED_KEY_LENGTH))
    return wrapped_key


def build_header(chunk_size, key_id, wrapped_key=None):
    """A new header with a fresh random salt and nonce prefix."""
    check_chunk_size(chunk_size)
    if not KEY_ID_RE.match(key_id or ""):
        raise CapCryptKeyError("key_id %r is not a valid key id" % (key_id,))
    wrapped_key = check_wrapped_key(wrapped_key)
    salt = _random_bytes(SALT_SIZE)
    nonce_prefix = _random_bytes(NONCE_PREFIX_SIZE)
    kid = key_id.encode("ascii")
    wrapped = (wrapped_key or "").encode("ascii")
    raw = (_FIXED.pack(MAGIC, FORMAT_VERSION, ALGORITHM_ID, chunk_size, salt, nonce_prefix,
                       len(kid))
           + kid + _WRAPPED_LEN.pack(len(wrapped)) + wrapped)
    return Header(FORMAT_VERSION, ALGORITHM_ID, chunk_size, salt, nonce_prefix, key_id,
                  wrapped_key, raw)


def _read_exact(src, size):
    """Read up to size bytes, looping over short reads; fewer only at end of stream."""
    parts = []
    remaining = size
    while remaining > 0:
        block = src.read(remaining)
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


def parse_header(src, source="<stream>"):
    """Read and validate a header from a binary stream positioned at its start."""
    fixed = _read_exact(src, _FIXED.size)
    if len(fixed) < len(MAGIC) or fixed[:len(MAGIC)] != MAGIC:
        hint = ""
        if fixed[:2] == b"\x1f\x8b":
            hint = "; it looks like an unencrypted gzip file"
        elif not fixed:
            hint = "; it is empty"
        raise CapCryptFormatError("%s is not a CAPCRYPT encrypted file (no CAPCRYPT magic bytes%s)"
                                  % (source, hint))
    if len(fixed) < _FIXED.size:
        raise CapCryptFormatError("truncated header in %s: %d bytes, the fixed part alone is %d"
                                  % (source, len(fixed), _FIXED.size))
    _magic, version, algorithm, chunk_size, salt, prefix, kid_len = _FIXED.unpack(fixed)
    if version != FORMAT_VERSION:
        raise CapCryptFormatError("%s has format version %d; this module reads version %d"
                                  % (source, version, FORMAT_VERSION))
    if algorithm != ALGORITHM_ID:
        raise CapCryptFormatError("%s names algorithm id %d; only %d (%s) is known"
                                  % (source, algorithm, ALGORITHM_ID, ALGORITHM_NAME))
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise CapCryptFormatError("header of %s gives chunk size %d, outside %d-%d"
                                  % (source, chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE))
    rest = _read_exact(src, kid_len + _WRAPPED_LEN.size)
    if len(rest) < kid_len + _WRAPPED_LEN.size:
        raise CapCryptFormatError("truncated header in %s: the key id field is cut off" % source)
    kid_raw = rest[:kid_len]
    (wrapped_len,) = _WRAPPED_LEN.unpack(rest[kid_len:])
    wrapped_raw = _read_exact(src, wrapped_len)
    if len(wrapped_raw) < wrapped_len:
        raise CapCryptFormatError("truncated header in %s: the wrapped key field is cut off"
                                  % source)
    try:
        key_id = kid_raw.decode("ascii")
        wrapped_key = wrapped_raw.decode("ascii") if wrapped_len else None
    except UnicodeDecodeError:
        raise CapCryptFormatError("header of %s has non-ASCII bytes in the key id or wrapped key"
                                  % source)
    if not KEY_ID_RE.match(key_id):
        raise CapCryptFormatError("header of %s has an invalid key id %r" % (source, key_id))
    if wrapped_key is not None and not WRAPPED_KEY_RE.match(wrapped_key):
        raise CapCryptFormatError("header of %s has an invalid wrapped key field" % source)
    return Header(version, algorithm, chunk_size, salt, prefix, key_id, wrapped_key,
                  fixed + rest + wrapped_raw)


def read_header(path):
    """Read and validate the header of the file at path (nothing else is read)."""
    try:
        with open(path, "rb") as handle:
            return parse_header(handle, path)
    except OSError as exc:
        raise CapCryptError("cannot read %s: %s" % (path, exc.strerror))


# ---------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------

class _ChunkCipher(object):
    """AES-256-GCM under the per-file key, STREAM nonces, the header as associated data."""

    def __init__(self, key, header):
        file_key = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=header.salt,
                        info=HKDF_INFO).derive(key)
        self._aead = AESGCM(file_key)
        self._prefix = header.nonce_prefix
        self._aad = header.raw

    def _nonce(self, index, final):
        return self._prefix + struct.pack(">IB", index, 1 if final else 0)

    def seal(self, index, final, plaintext):
        return self._aead.encrypt(self._nonce(index, final), plaintext, self._aad)

    def open(self, index, final, sealed):
        """Plaintext, or None when the tag does not verify under (index, final)."""
        try:
            return self._aead.decrypt(self._nonce(index, final), sealed, self._aad)
        except InvalidTag:
            return None


class EncryptingWriter(object):
    """A write-only sink that encrypts whatever is written to it into dst.

    Usable wherever a binary file object is written to, for example
    tarfile.open(fileobj=writer, mode="w|gz"). The header is written at once;
    chunks are written as soon as they are full. close() seals the final chunk;
    dst itself is neither flushed to disk nor closed (the caller owns it).

    Nothing here finalises implicitly: leaving a `with` block by an exception,
    or dropping the object, never writes a final chunk, so a half-written
    stream always reads as truncated instead of as a shorter valid file.
    """

    def __init__(self, dst, key, key_id=None, wrapped_key=None, chunk_size=DEFAULT_CHUNK_SIZE):
        require_cryptography()
        key = check_key(key)
        self.key_id = resolve_key_id(key, key_id)
        self.header = build_header(chunk_size, self.key_id, wrapped_key)
        self._cipher = _ChunkCipher(key, self.header)
        self._dst = dst
        self._buffer = bytearray()
        self._digest = hashlib.sha3_256()
        self.chunks = 0
        self.plaintext_bytes = 0
        self.size_bytes = 0
        self.closed = False
        self.aborted = False
        self._emit(self.header.raw)

    def writable(self):
        return True

    def write(self, data):
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        size = memoryview(data).nbytes
        self._buffer += data
        self.plaintext_bytes += size
        chunk_size = self.header.chunk_size
        # A full chunk is sealed only once a byte beyond it exists: until then it
        # may still turn out to be the final chunk.
        while len(self._buffer) > chunk_size:
            self._seal(bytes(self._buffer[:chunk_size]), final=False)
            del self._buffer[:chunk_size]
        return size

    def flush(self):
        if hasattr(self._dst, "flush"):
            self._dst.flush()

    def close(self):
        """Seal the final chunk (empty only when nothing was written). Idempotent."""
        if self.closed:
            return
        self._seal(bytes(self._buffer), final=True)
        self._buffer = bytearray()
        self.closed = True
        self.flush()

    def abort(self):
        """Stop without a final chunk; what was written reads as truncated."""
        self._buffer = bytearray()
        self.closed = True
        self.aborted = True

    @property
    def sha3_256(self):
        """SHA3-256 of every byte written to dst so far."""
        return hex_to_prefixed(self._digest.hexdigest())

    def result(self):
        return {"key_id": self.key_id, "chunks": self.chunks, "chunk_size": self.header.chunk_size,
                "plaintext_bytes": self.plaintext_bytes, "size_bytes": self.size_bytes,
                "sha3_256": self.sha3_256, "wrapped_key": self.header.wrapped_key}

    def _seal(self, data, final):
        if self.chunks >= MAX_CHUNKS:
            raise CapCryptError("input too large: more than %d chunks of %d bytes"
                                % (MAX_CHUNKS, self.header.chunk_size))
        self._emit(self._cipher.seal(self.chunks, final, data))
        self.chunks += 1

    def _emit(self, data):
        self._dst.write(data)
        self._digest.update(data)
        self.size_bytes += len(data)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class StreamDecryptor(object):
    """Reads a CAPCRYPT stream: the header on construction, then chunk by chunk.

    Each block yielded by blocks() has been authenticated on its own, but the
    stream as a whole is only known to be complete once blocks() has finished
    without an exception (complete is then True). A consumer must not treat
    its output as final before that.
    """

    def __init__(self, src, key, source="<stream>", expected_key_id=None):
        require_cryptography()
        key = check_key(key)
        self.source = source
        self.header = parse_header(src, source)
        if expected_key_id and self.header.key_id != expected_key_id:
            raise CapCryptWrongKeyError("%s was encrypted with key id %s, expected key id %s"
                                        % (source, self.header.key_id, expected_key_id))
        given = derive_key_id(key)
        if is_derived_key_id(self.header.key_id) and self.header.key_id != given:
            raise CapCryptWrongKeyError(
                "wrong key: archive %s encrypted with key id %s, the key given has key id %s"
                % (source, self.header.key_id, given))
        self._src = src
        self._cipher = _ChunkCipher(key, self.header)
        self.chunks = 0
        self.plaintext_bytes = 0
        self.complete = False

    def __iter__(self):
        return self.blocks()

    def _span(self, index, length):
        start = self.header.size + index * (self.header.chunk_size + TAG_SIZE)
        return start, start + length

    def _auth_error(self, index, length):
        start, end = self._span(index, length)
        if index == 0:
            why = "wrong key or corrupted data"
        else:
            why = ("corrupted, reordered, cut or appended data (chunk 0 authenticated, so "
                   "the key is right)")
        return CapCryptAuthError("authentication failed at chunk %d of %s (bytes %d-%d): %s"
                                 % (index, self.source, start, end, why))

    def blocks(self):
        record = self.header.chunk_size + TAG_SIZE
        index = 0
        sealed = _read_exact(self._src, record)
        while True:
            if index >= MAX_CHUNKS:
                raise CapCryptFormatError("%s has more than %d chunks" % (self.source, MAX_CHUNKS))
            if not sealed:
                if index == 0:
                    raise CapCryptTruncatedError("truncated: no final chunk; %s ends right after "
                                                 "its header" % self.source)
                _start, end = self._span(index - 1, record)
                raise CapCryptTruncatedError(
                    "truncated: no final chunk; %s ends after chunk %d at byte %d"
                    % (self.source, index - 1, end))
            if len(sealed) < TAG_SIZE:
                start, _end = self._span(index, 0)
                raise CapCryptTruncatedError(
                    "truncated: chunk %d of %s (from byte %d) is %d bytes, shorter than its "
                    "%d-byte tag" % (index, self.source, start, len(sealed), TAG_SIZE))
            if len(sealed) < record:
                # A short chunk can only be the final one.
                following = b""
            else:
                following = _read_exact(self._src, record)
            final = not following
            plain = self._cipher.open(index, final, sealed)
            if plain is None:
                # Name the two structural attacks the final flag exists for.
                if len(sealed) == record and self._cipher.open(index, not final, sealed) is not None:
                    _start, end = self._span(index, len(sealed))
                    if final:
                        raise CapCryptTruncatedError(
                            "truncated: no final chunk; %s ends after chunk %d at byte %d"
                            % (self.source, index, end))
                    raise CapCryptTrailingDataError(
                        "trailing data: %s continues after its final chunk %d, which ends at "
                        "byte %d" % (self.source, index, end))
                raise self._auth_error(index, len(sealed))
            self.chunks += 1
            self.plaintext_bytes += len(plain)
            yield plain
            if final:
                self.complete = True
                return
            index += 1
            sealed = following

    def result(self):
        return {"key_id": self.header.key_id, "chunks": self.chunks,
                "chunk_size": self.header.chunk_size, "plaintext_bytes": self.plaintext_bytes,
                "wrapped_key": self.header.wrapped_key}


def encrypt_stream(src, dst, key, key_id=None, wrapped_key=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """Encrypt the binary stream src into dst. Returns EncryptingWriter.result()."""
    writer = EncryptingWriter(dst, key, key_id=key_id, wrapped_key=wrapped_key,
                              chunk_size=chunk_size)
    with writer:
        while True:
            block = src.read(writer.header.chunk_size)
            if not block:
                break
            writer.write(block)
    return writer.result()


def decrypt_stream(src, dst, key, source="<stream>", expected_key_id=None):
    """Decrypt src into dst (None: authenticate only).

    Returns the stream's key_id, chunks, chunk_size, plaintext_bytes, wrapped_key
    and sha3_256 of the plaintext. Raises CapCryptError on any failure; by then
    dst may hold a prefix of the plaintext, so callers write to a temporary file
    (decrypt_file does).
    """
    decryptor = StreamDecryptor(src, key, source, expected_key_id)
    digest = hashlib.sha3_256()
    for block in decryptor.blocks():
        digest.update(block)
        if dst is not None:
            dst.write(block)
    result = decryptor.result()
    result["sha3_256"] = hex_to_prefixed(digest.hexdigest())
    return result


# ---------------------------------------------------------------------------
# Files: what the module does
# ---------------------------------------------------------------------------

class _FileComparer(object):
    """Compares a sequence of written blocks against an existing file, streaming."""

    def __init__(self, path):
        self.equal = True
        try:
            self._handle = open(path, "rb")
        except OSError:
            self._handle = None
            self.equal = False

    def write(self, data):
        if self.equal and _read_exact(self._handle, len(data)) != data:
            self.equal = False

    def finish(self):
        """True when the blocks written are exactly the file's whole content."""
        equal = self.equal and self._handle is not None and not self._handle.read(1)
        self.close()
        return equal

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _open_source(path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise CapCryptError("cannot read src %s: %s" % (path, exc.strerror))


def _existing_encryption(dest, src, key, key_id, wrapped_key, chunk_size):
    """Chunk count of dest when it is a CAPCRYPT file with these header settings
    that decrypts under key to exactly the bytes of src; None on any doubt."""
    comparer = None
    try:
        header = read_header(dest)
        if (header.key_id, header.wrapped_key, header.chunk_size) != (key_id, wrapped_key,
                                                                      chunk_size):
            return None
        comparer = _FileComparer(src)
        with open(dest, "rb") as handle:
            decryptor = StreamDecryptor(handle, key, dest)
            for block in decryptor.blocks():
                comparer.write(block)
                if not comparer.equal:
                    return None
        return decryptor.chunks if comparer.finish() else None
    except (CapCryptError, OSError):
        return None
    finally:
        if comparer is not None:
            comparer.close()


def encrypt_file(src, dest, key, key_id=None, wrapped_key=None, chunk_size=DEFAULT_CHUNK_SIZE,
                 file_mode=0o600, force=False, check_mode=False):
    """Encrypt the file src to dest, atomically.

    Encryption is randomised, so an unchanged dest is recognised by decrypting
    it: when dest exists, force is False, its header has the same key id,
    wrapped key and chunk size, and it decrypts to exactly src, it is left
    alone and 'changed' is False. Returns a dict with changed, dest, key_id,
    chunks, chunk_size, wrapped_key and, unless only planned in check mode,
    sha3_256 and size_bytes of dest.
    """
    require_cryptography()
    key = check_key(key)
    key_id = resolve_key_id(key, key_id)
    wrapped_key = check_wrapped_key(wrapped_key)
    check_chunk_size(chunk_size)
    if _same_path(src, dest):
        raise CapCryptError("src and dest are the same file: %s" % src)
    with _open_source(src):
        pass
    result = {"dest": dest, "key_id": key_id, "chunk_size": chunk_size, "wrapped_key": wrapped_key}
    existing = None
    if not force and os.path.exists(dest):
        existing = _existing_encryption(dest, src, key, key_id, wrapped_key, chunk_size)
    if existing is not None:
        digest, size = sha3_file(dest)
        result.update(changed=False, sha3_256=digest, size_bytes=size, chunks=existing)
        return result
    if check_mode:
        # The writer's rule: full chunks, then a final one of 1..chunk_size bytes
        # (0 only for empty input).
        plain_size = os.path.getsize(src)
        result.update(changed=True, chunks=max(1, -(-plain_size // chunk_size)))
        return result
    try:
        with _open_source(src) as handle, AtomicFile(dest, file_mode) as out:
            stats = encrypt_stream(handle, out, key, key_id=key_id, wrapped_key=wrapped_key,
                                   chunk_size=chunk_size)
    except OSError as exc:
        raise CapCryptError("cannot encrypt %s to %s: %s" % (src, dest, exc.strerror or exc))
    result.update(changed=True, sha3_256=stats["sha3_256"], size_bytes=stats["size_bytes"],
                  chunks=stats["chunks"])
    return result


def decrypt_file(src, dest, key, expected_key_id=None, file_mode=0o600, force=False,
                 check_mode=False):
    """Decrypt the file src to dest.

    The plaintext goes to a temporary file that is renamed over dest only after
    the final chunk authenticated, so any failure leaves dest as it was. When
    dest exists and force is False, the plaintext is compared with it on the
    way through; if equal, dest is left alone and 'changed' is False. In check
    mode the whole stream is still authenticated, but nothing is written.
    Returns a dict with changed, dest, key_id, chunks, chunk_size, wrapped_key,
    and sha3_256 and size_bytes of the plaintext (dest's content).
    """
    require_cryptography()
    key = check_key(key)
    if _same_path(src, dest):
        raise CapCryptError("src and dest are the same file: %s" % src)
    comparer = _FileComparer(dest) if (not force and os.path.exists(dest)) else None
    digest = hashlib.sha3_256()
    out = None
    try:
        with _open_source(src) as handle:
            decryptor = StreamDecryptor(handle, key, src, expected_key_id)
            if not check_mode:
                out = AtomicFile(dest, file_mode)
            for block in decryptor.blocks():
                digest.update(block)
                if comparer is not None:
                    comparer.write(block)
                if out is not None:
                    out.write(block)
        unchanged = comparer is not None and comparer.finish()
        if out is not None:
            if unchanged:
                out.abort()
            else:
                out.commit()
    except OSError as exc:
        raise CapCryptError("cannot decrypt %s to %s: %s" % (src, dest, exc.strerror or exc))
    finally:
        if comparer is not None:
            comparer.close()
        if out is not None:
            out.abort()
    result = decryptor.result()
    result.update(changed=not unchanged, dest=dest, sha3_256=hex_to_prefixed(digest.hexdigest()),
                  size_bytes=decryptor.plaintext_bytes)
    del result["plaintext_bytes"]
    return result


def inspect_file(path):
    """Header fields of an encrypted file, read without a key."""
    header = read_header(path)
    result = header.to_dict()
    result["src"] = path
    try:
        result["size_bytes"] = os.path.getsize(path)
    except OSError as exc:
        raise CapCryptError("cannot read %s: %s" % (path, exc.strerror))
    return result
