"""Unit tests for module_utils/cap_crypt.py (the CAPCRYPT v1 format, docs/encryption.md)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import struct
import tarfile
import tracemalloc

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ansible.module_utils import cap_crypt
from ansible.module_utils.cap_crypt import (
    DEFAULT_CHUNK_SIZE,
    TAG_SIZE,
    CapCryptAuthError,
    CapCryptError,
    CapCryptFormatError,
    CapCryptKeyError,
    CapCryptTrailingDataError,
    CapCryptTruncatedError,
    CapCryptWrongKeyError,
    EncryptingWriter,
    StreamDecryptor,
    decrypt_file,
    decrypt_stream,
    derive_key_id,
    encrypt_file,
    encrypt_stream,
    inspect_file,
    load_key_file,
    parse_header,
    parse_key,
    read_header,
    resolve_key_id,
)
from ansible.module_utils.cap_hashing import sha3_bytes, sha3_file

SMALL = 64  # chunk size that makes multi-chunk files tiny


@pytest.fixture
def key():
    return os.urandom(32)


def encrypt(data, key, **kwargs):
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key, **kwargs)
    return out.getvalue()


def decrypt(blob, key, **kwargs):
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, key, source="test.enc", **kwargs)
    return out.getvalue()


def layout(blob):
    """(header_size, chunk_size) of an encrypted blob."""
    header = parse_header(io.BytesIO(blob))
    return header.size, header.chunk_size


def chunk_bounds(blob):
    """[(start, end)] of every chunk record in blob."""
    hsize, csize = layout(blob)
    record = csize + TAG_SIZE
    bounds = []
    start = hsize
    while start < len(blob):
        bounds.append((start, min(start + record, len(blob))))
        start += record
    return bounds


def flip(blob, offset, bit=0):
    data = bytearray(blob)
    data[offset] ^= 1 << bit
    return bytes(data)


def reference_decrypt(blob, key):
    """An independent reader written from docs/encryption.md only."""
    assert blob[:8] == b"CAPCRYPT"
    version, algorithm, chunk_size = struct.unpack(">BBI", blob[8:14])
    assert (version, algorithm) == (1, 1)
    salt, prefix = blob[14:46], blob[46:53]
    kid_len = blob[53]
    (wrapped_len,) = struct.unpack(">H", blob[54 + kid_len:56 + kid_len])
    header_end = 56 + kid_len + wrapped_len
    header = blob[:header_end]
    file_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                    info=b"CAPCRYPT v1 file key").derive(key)
    aead = AESGCM(file_key)
    record = chunk_size + 16
    body = blob[header_end:]
    records = [body[i:i + record] for i in range(0, len(body), record)] or [b""]
    plain = []
    for index, sealed in enumerate(records):
        final = index == len(records) - 1
        nonce = prefix + struct.pack(">IB", index, 1 if final else 0)
        plain.append(aead.decrypt(nonce, sealed, header))
    return b"".join(plain)


# --- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("size, chunks", [
    (0, 1),
    (1, 1),
    (DEFAULT_CHUNK_SIZE, 1),
    (DEFAULT_CHUNK_SIZE + 1, 2),
    (5 * DEFAULT_CHUNK_SIZE + 12345, 6),
])
def test_round_trip_default_chunk_size(key, size, chunks):
    data = os.urandom(size)
    out = io.BytesIO()
    stats = encrypt_stream(io.BytesIO(data), out, key)
    blob = out.getvalue()
    hsize, _ = layout(blob)
    assert stats["chunks"] == chunks
    assert len(blob) == hsize + size + TAG_SIZE * chunks == stats["size_bytes"]
    assert stats["sha3_256"] == sha3_bytes(blob)
    if size >= 32:  # shorter inputs could occur in random bytes by chance
        assert data[:32] not in blob
    back = io.BytesIO()
    result = decrypt_stream(io.BytesIO(blob), back, key)
    assert back.getvalue() == data
    assert result["chunks"] == chunks
    assert result["sha3_256"] == sha3_bytes(data)


def test_round_trip_every_small_size(key):
    for size in range(0, 4 * SMALL + 2):
        data = os.urandom(size)
        blob = encrypt(data, key, chunk_size=SMALL)
        assert decrypt(blob, key) == data, size
        assert reference_decrypt(blob, key) == data, size


def test_encryption_is_randomised(key):
    data = b"same input"
    first, second = encrypt(data, key), encrypt(data, key)
    assert first != second
    assert decrypt(first, key) == decrypt(second, key) == data


def test_known_answer_vector_from_docs(monkeypatch):
    fixed = iter([bytes(range(0xa0, 0xc0)), bytes(range(0xc0, 0xc7))])
    monkeypatch.setattr(cap_crypt, "_random_bytes", lambda size: next(fixed))
    key = bytes(range(32))
    blob = encrypt(b"CAP backup test vector\n", key, wrapped_key="vault:v1:dGVzdA==",
                   chunk_size=16)
    expected = bytes.fromhex(
        "4341504352595054" "01" "01" "00000010"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6" "12" "6b2d30353061343837333362643563323735"
        "0011" "7661756c743a76313a6447567a64413d3d"
        "178c4d4f67f7df76f567bcb95f245836d254ce64a1fd959907330d4f84d3a078"
        "98975ec566d67d57df5d7267027bd0e920bd1833508b54")
    assert blob == expected
    assert sha3_bytes(blob) == "0x133a4e5eed2936c5f37176c668f9bfe2054e62b6b71f5d926fe45a94476c8053"
    assert reference_decrypt(blob, key) == b"CAP backup test vector\n"


def test_reference_reader_agrees_on_multi_mib_stream(key):
    data = os.urandom(2 * DEFAULT_CHUNK_SIZE + 7)
    assert reference_decrypt(encrypt(data, key), key) == data


# --- streaming -------------------------------------------------------------------------------

class ZeroSource(object):
    """A readable stream of size zero bytes that never exists in memory as a whole."""

    def __init__(self, size):
        self.left = size
        self.largest_read = 0

    def read(self, size):
        self.largest_read = max(self.largest_read, size)
        size = min(size, self.left)
        self.left -= size
        return bytes(size)


class HashSink(object):
    def __init__(self):
        self.digest = hashlib.sha3_256()
        self.size = 0

    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def test_encrypt_memory_does_not_grow_with_input(key):
    size = 48 * DEFAULT_CHUNK_SIZE
    src, sink = ZeroSource(size), HashSink()
    tracemalloc.start()
    try:
        stats = encrypt_stream(src, sink, key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["plaintext_bytes"] == size
    assert src.largest_read <= DEFAULT_CHUNK_SIZE
    assert peak < 8 * DEFAULT_CHUNK_SIZE


def test_decrypt_memory_does_not_grow_with_input(key, tmp_path):
    enc = tmp_path / "big.enc"
    with open(enc, "wb") as out:
        encrypt_stream(ZeroSource(48 * DEFAULT_CHUNK_SIZE), out, key)
    tracemalloc.start()
    try:
        with open(enc, "rb") as src:
            result = decrypt_stream(src, HashSink(), key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["plaintext_bytes"] == 48 * DEFAULT_CHUNK_SIZE
    assert peak < 8 * DEFAULT_CHUNK_SIZE


def test_writer_as_tarfile_sink(key, tmp_path):
    staging = tmp_path / "staging"
    (staging / "keys").mkdir(parents=True)
    (staging / "registry.sqlite").write_bytes(os.urandom(300000))
    (staging / "keys" / "company.v1.json").write_text('{"kid": "company"}\n')
    raw = io.BytesIO()
    with EncryptingWriter(raw, key, chunk_size=4096) as enc:
        with tarfile.open(fileobj=enc, mode="w|gz") as tar:
            tar.add(str(staging), arcname=".")
    assert enc.closed and not enc.aborted
    assert enc.sha3_256 == sha3_bytes(raw.getvalue())
    plain = io.BytesIO(decrypt(raw.getvalue(), key))
    with tarfile.open(fileobj=plain, mode="r:gz") as tar:
        names = sorted(tar.getnames())
        assert tar.extractfile("./registry.sqlite").read() == \
            (staging / "registry.sqlite").read_bytes()
    assert "./keys/company.v1.json" in names


def test_writer_small_writes_equal_one_big_write(key):
    data = os.urandom(10 * SMALL + 5)
    raw = io.BytesIO()
    writer = EncryptingWriter(raw, key, chunk_size=SMALL)
    for i in range(0, len(data), 7):
        writer.write(data[i:i + 7])
    writer.close()
    writer.close()  # idempotent
    assert writer.chunks == 11
    assert decrypt(raw.getvalue(), key) == data
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_writer_left_by_exception_reads_as_truncated(key):
    raw = io.BytesIO()
    with pytest.raises(RuntimeError):
        with EncryptingWriter(raw, key, chunk_size=SMALL) as writer:
            writer.write(os.urandom(5 * SMALL))
            raise RuntimeError("archive failed")
    assert writer.aborted
    with pytest.raises(CapCryptTruncatedError, match="truncated: no final chunk"):
        decrypt(raw.getvalue(), key)


def test_stream_decryptor_marks_completion_last(key):
    blob = encrypt(os.urandom(3 * SMALL), key, chunk_size=SMALL)
    decryptor = StreamDecryptor(io.BytesIO(blob), key)
    seen = []
    for block in decryptor:
        seen.append(decryptor.complete)
    assert seen == [False, False, False] and decryptor.complete


# --- tampering -------------------------------------------------------------------------------

@pytest.fixture
def sample(key):
    data = os.urandom(5 * SMALL + 10)
    return data, encrypt(data, key, chunk_size=SMALL, wrapped_key="vault:v1:abc")


def test_every_header_byte_is_protected(key, sample):
    _, blob = sample
    hsize, _ = layout(blob)
    for offset in range(hsize):
        for bit in (0, 7):
            with pytest.raises(CapCryptError):
                decrypt(flip(blob, offset, bit), key)


@pytest.mark.parametrize("where", ["first byte", "middle", "tag", "final chunk", "final tag"])
def test_bit_flip_in_chunk_is_detected(key, sample, where):
    _, blob = sample
    bounds = chunk_bounds(blob)
    offset = {
        "first byte": bounds[0][0],
        "middle": bounds[2][0] + SMALL // 2,
        "tag": bounds[2][1] - 1,
        "final chunk": bounds[-1][0],
        "final tag": len(blob) - 1,
    }[where]
    index = next(i for i, (start, end) in enumerate(bounds) if start <= offset < end)
    with pytest.raises(CapCryptAuthError, match="authentication failed at chunk %d of test.enc"
                       % index):
        decrypt(flip(blob, offset), key)


def test_dropping_the_final_chunk_is_truncation(key, sample):
    _, blob = sample
    bounds = chunk_bounds(blob)
    with pytest.raises(CapCryptTruncatedError, match="truncated: no final chunk"):
        decrypt(blob[:bounds[-1][0]], key)


@pytest.mark.parametrize("keep_chunks", [1, 3])
def test_cut_at_chunk_boundary_is_truncation(key, sample, keep_chunks):
    _, blob = sample
    cut = chunk_bounds(blob)[keep_chunks - 1][1]
    with pytest.raises(CapCryptTruncatedError, match="ends after chunk %d" % (keep_chunks - 1)):
        decrypt(blob[:cut], key)


def test_cut_after_header_is_truncation(key, sample):
    _, blob = sample
    hsize, _ = layout(blob)
    with pytest.raises(CapCryptTruncatedError, match="ends right after its header"):
        decrypt(blob[:hsize], key)


@pytest.mark.parametrize("back", [1, 10, TAG_SIZE, TAG_SIZE + 3])
def test_cut_mid_chunk_is_detected(key, sample, back):
    _, blob = sample
    start, _ = chunk_bounds(blob)[2]
    with pytest.raises(CapCryptAuthError):
        decrypt(blob[:start + SMALL + TAG_SIZE - back], key)


def test_cut_inside_header_is_a_format_error(key, sample):
    _, blob = sample
    for cut in (3, 20, 54, layout(blob)[0] - 1):
        with pytest.raises(CapCryptFormatError):
            decrypt(blob[:cut], key)


def test_reordered_chunks_are_detected(key, sample):
    _, blob = sample
    bounds = chunk_bounds(blob)
    (a0, a1), (b0, b1) = bounds[1], bounds[2]
    swapped = blob[:a0] + blob[b0:b1] + blob[a0:a1] + blob[b1:]
    with pytest.raises(CapCryptAuthError, match="at chunk 1 "):
        decrypt(swapped, key)


def test_dropped_middle_chunk_is_detected(key, sample):
    _, blob = sample
    a0, a1 = chunk_bounds(blob)[2]
    with pytest.raises(CapCryptAuthError, match="at chunk 2 "):
        decrypt(blob[:a0] + blob[a1:], key)


@pytest.mark.parametrize("extra", [b"\x00", random.Random(1).randbytes(SMALL + TAG_SIZE),
                                   random.Random(2).randbytes(500)], ids=["one_byte", "a_chunk", "500_bytes"])
def test_appended_data_is_detected(key, sample, extra):
    _, blob = sample
    with pytest.raises(CapCryptAuthError):
        decrypt(blob + extra, key)


def test_appended_data_after_full_final_chunk_is_named(key):
    blob = encrypt(os.urandom(4 * SMALL), key, chunk_size=SMALL)
    with pytest.raises(CapCryptTrailingDataError, match="trailing data"):
        decrypt(blob + b"more", key)


def test_appending_a_copy_of_the_last_chunk_is_detected(key, sample):
    _, blob = sample
    start, end = chunk_bounds(blob)[-1]
    with pytest.raises(CapCryptAuthError):
        decrypt(blob + blob[start:end], key)


def test_header_of_another_file_does_not_fit(key):
    one = encrypt(os.urandom(3 * SMALL), key, chunk_size=SMALL)
    two = encrypt(os.urandom(3 * SMALL), key, chunk_size=SMALL)
    hsize, _ = layout(one)
    with pytest.raises(CapCryptAuthError, match="at chunk 0"):
        decrypt(two[:hsize] + one[hsize:], key)


def test_not_an_encrypted_file(key):
    with pytest.raises(CapCryptFormatError, match="not a CAPCRYPT encrypted file"):
        decrypt(b"just some text", key)
    with pytest.raises(CapCryptFormatError, match="unencrypted gzip"):
        decrypt(b"\x1f\x8b\x08\x00" + bytes(100), key)
    with pytest.raises(CapCryptFormatError, match="it is empty"):
        decrypt(b"", key)


def test_unsupported_version_and_algorithm(key, sample):
    _, blob = sample
    with pytest.raises(CapCryptFormatError, match="format version 2"):
        decrypt(blob[:8] + b"\x02" + blob[9:], key)
    with pytest.raises(CapCryptFormatError, match="algorithm id 9"):
        decrypt(blob[:9] + b"\x09" + blob[10:], key)
    with pytest.raises(CapCryptFormatError, match="chunk size"):
        decrypt(blob[:10] + struct.pack(">I", 2 ** 31) + blob[14:], key)


# --- keys ------------------------------------------------------------------------------------

def test_wrong_key_with_derived_key_id_fails_fast(key, sample):
    _, blob = sample
    other = os.urandom(32)
    with pytest.raises(CapCryptWrongKeyError) as info:
        decrypt(blob, other)
    assert str(info.value) == (
        "wrong key: archive test.enc encrypted with key id %s, the key given has key id %s"
        % (derive_key_id(key), derive_key_id(other)))


def test_wrong_key_with_named_key_id_fails_on_first_tag(key):
    blob = encrypt(os.urandom(100), key, key_id="transit-cap-backup", chunk_size=SMALL)
    with pytest.raises(CapCryptAuthError, match="at chunk 0 .*wrong key or corrupted data"):
        decrypt(blob, os.urandom(32))


def test_expected_key_id_is_enforced(key):
    blob = encrypt(b"data", key, key_id="backup-2025")
    assert decrypt(blob, key, expected_key_id="backup-2025") == b"data"
    with pytest.raises(CapCryptWrongKeyError, match="expected key id backup-2026"):
        decrypt(blob, key, expected_key_id="backup-2026")


def test_derived_key_id_is_sha3_of_the_key(key):
    assert derive_key_id(key) == "k-" + hashlib.sha3_256(key).hexdigest()[:16]
    assert resolve_key_id(key) == derive_key_id(key)
    assert resolve_key_id(key, "custom.id:1") == "custom.id:1"
    assert resolve_key_id(key, "transit:transit/cap-backup") == "transit:transit/cap-backup"
    assert resolve_key_id(key, derive_key_id(key)) == derive_key_id(key)


@pytest.mark.parametrize("bad", ["", "-x", "/x", "has space", "x" * 129, "k-0123456789abcdef"])
def test_invalid_key_ids(key, bad):
    if bad == "":
        assert resolve_key_id(key, bad) == derive_key_id(key)
        return
    with pytest.raises(CapCryptKeyError):
        resolve_key_id(key, bad)


def test_parse_key_accepts_base64_of_32_bytes(key):
    text = base64.b64encode(key).decode()
    assert parse_key(text) == key
    assert parse_key(text + "\n") == key
    assert parse_key(text.encode()) == key


@pytest.mark.parametrize("value, message", [
    ("not base64 at all!", "not valid base64"),
    ("ééé", "not valid base64"),
    (base64.b64encode(b"x" * 16).decode(), "decodes to 16 bytes; AES-256 needs exactly 32"),
    (base64.b64encode(b"x" * 33).decode(), "decodes to 33 bytes"),
    ("", "not valid base64"),
])
def test_parse_key_errors_are_clear_and_secret_free(value, message):
    with pytest.raises(CapCryptKeyError, match=message) as info:
        parse_key(value)
    if value:
        assert value not in str(info.value)


def test_raw_key_bytes_must_be_32():
    with pytest.raises(CapCryptKeyError, match="16 bytes"):
        EncryptingWriter(io.BytesIO(), b"x" * 16)


def test_key_file_base64_and_raw(key, tmp_path):
    b64 = tmp_path / "b64.key"
    b64.write_text(base64.b64encode(key).decode() + "\n")
    b64.chmod(0o600)
    assert load_key_file(str(b64)) == (key, None)
    raw = tmp_path / "raw.key"
    raw.write_bytes(key)
    raw.chmod(0o600)
    assert load_key_file(str(raw)) == (key, None)


def test_key_file_warns_when_readable_by_others(key, tmp_path):
    path = tmp_path / "loose.key"
    path.write_text(base64.b64encode(key).decode())
    path.chmod(0o644)
    loaded, warning = load_key_file(str(path))
    assert loaded == key
    assert "accessible by group or others (mode 0644)" in warning


def test_key_file_errors(tmp_path):
    with pytest.raises(CapCryptKeyError, match="cannot read key file"):
        load_key_file(str(tmp_path / "missing.key"))
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"y" * 24).decode())  # 32 base64 characters
    with pytest.raises(CapCryptKeyError, match="decodes to 24 bytes"):
        load_key_file(str(short))
    big = tmp_path / "big.key"
    big.write_bytes(b"A" * 5000)
    with pytest.raises(CapCryptKeyError, match="larger than"):
        load_key_file(str(big))


# --- header, wrapped key ---------------------------------------------------------------------

def test_wrapped_key_round_trip_through_header(key, tmp_path):
    wrapped = "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w=="
    path = tmp_path / "a.enc"
    path.write_bytes(encrypt(b"payload", key, wrapped_key=wrapped, chunk_size=4096))
    header = read_header(str(path))
    assert header.wrapped_key == wrapped
    assert header.key_id == derive_key_id(key)
    assert header.chunk_size == 4096
    info = inspect_file(str(path))
    assert info["wrapped_key"] == wrapped
    assert info["key_id_derived"] is True
    assert info["format_version"] == 1
    assert info["header_size_bytes"] == header.size == 74 + len(wrapped)
    assert decrypt(path.read_bytes(), key) == b"payload"


def test_no_wrapped_key_reads_as_none(key):
    header = parse_header(io.BytesIO(encrypt(b"x", key)))
    assert header.wrapped_key is None and header.size == 74


@pytest.mark.parametrize("bad", ["has space", "tab\there", "ü", "x" * 70000])
def test_invalid_wrapped_keys(key, bad):
    with pytest.raises(CapCryptKeyError, match="wrapped_key"):
        encrypt(b"x", key, wrapped_key=bad)


@pytest.mark.parametrize("size", [0, 15, 64 * 1024 * 1024 + 1, True, "1024"])
def test_invalid_chunk_sizes(key, size):
    with pytest.raises(CapCryptError, match="chunk_size"):
        encrypt(b"x", key, chunk_size=size)


def test_read_header_of_missing_file(tmp_path):
    with pytest.raises(CapCryptError, match="cannot read"):
        read_header(str(tmp_path / "nope.enc"))


# --- files -----------------------------------------------------------------------------------

def listing(directory):
    return sorted(os.listdir(directory))


def test_encrypt_and_decrypt_files(key, tmp_path):
    src = tmp_path / "a.tar.gz"
    src.write_bytes(os.urandom(3 * SMALL + 1))
    enc, dec = tmp_path / "a.enc", tmp_path / "a.out"
    result = encrypt_file(str(src), str(enc), key, chunk_size=SMALL)
    assert result["changed"] is True and result["chunks"] == 4
    assert (result["sha3_256"], result["size_bytes"]) == sha3_file(str(enc))
    assert oct(enc.stat().st_mode & 0o777) == "0o600"
    result = decrypt_file(str(enc), str(dec), key)
    assert result["changed"] is True
    assert dec.read_bytes() == src.read_bytes()
    assert (result["sha3_256"], result["size_bytes"]) == sha3_file(str(src))
    assert listing(tmp_path) == ["a.enc", "a.out", "a.tar.gz"]


def test_encrypt_file_is_idempotent(key, tmp_path):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(os.urandom(200))
    encrypt_file(str(src), str(enc), key, chunk_size=SMALL)
    before = enc.read_bytes()
    again = encrypt_file(str(src), str(enc), key, chunk_size=SMALL)
    assert again["changed"] is False and again["chunks"] == 4
    assert again["sha3_256"] == sha3_bytes(before)
    assert enc.read_bytes() == before
    # Different content, key id, wrapped key or chunk size: rewritten.
    assert encrypt_file(str(src), str(enc), key, chunk_size=SMALL, key_id="other")["changed"]
    assert encrypt_file(str(src), str(enc), key, chunk_size=SMALL, key_id="other",
                        wrapped_key="vault:v1:x")["changed"]
    assert encrypt_file(str(src), str(enc), key, chunk_size=2 * SMALL, key_id="other",
                        wrapped_key="vault:v1:x")["changed"]
    src.write_bytes(os.urandom(200))
    assert encrypt_file(str(src), str(enc), key, chunk_size=2 * SMALL, key_id="other",
                        wrapped_key="vault:v1:x")["changed"]
    before = enc.read_bytes()
    forced = encrypt_file(str(src), str(enc), key, chunk_size=2 * SMALL, key_id="other",
                          wrapped_key="vault:v1:x", force=True)
    assert forced["changed"] and enc.read_bytes() != before


def test_encrypt_file_replaces_a_dest_under_another_key(key, tmp_path):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(b"content")
    encrypt_file(str(src), str(enc), os.urandom(32))
    assert encrypt_file(str(src), str(enc), key)["changed"] is True
    assert decrypt(enc.read_bytes(), key) == b"content"


def test_encrypt_file_check_mode_writes_nothing(key, tmp_path):
    src, enc = tmp_path / "a", tmp_path / "a.enc"
    src.write_bytes(os.urandom(3 * SMALL))
    result = encrypt_file(str(src), str(enc), key, chunk_size=SMALL, check_mode=True)
    assert result["changed"] is True and result["chunks"] == 3
    assert "sha3_256" not in result
    assert listing(tmp_path) == ["a"]
    encrypt_file(str(src), str(enc), key, chunk_size=SMALL)
    assert encrypt_file(str(src), str(enc), key, chunk_size=SMALL,
                        check_mode=True)["changed"] is False
    before = enc.read_bytes()
    src.write_bytes(b"new")
    assert encrypt_file(str(src), str(enc), key, chunk_size=SMALL,
                        check_mode=True)["changed"] is True
    assert enc.read_bytes() == before


def test_encrypt_file_unreadable_src_leaves_nothing(key, tmp_path):
    with pytest.raises(CapCryptError, match="cannot read src .*missing"):
        encrypt_file(str(tmp_path / "missing"), str(tmp_path / "out.enc"), key)
    assert listing(tmp_path) == []
    (tmp_path / "dir").mkdir()
    with pytest.raises(CapCryptError, match="cannot read src"):
        encrypt_file(str(tmp_path / "dir"), str(tmp_path / "out.enc"), key)
    assert listing(tmp_path) == ["dir"]


def test_same_src_and_dest_refused(key, tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"x")
    with pytest.raises(CapCryptError, match="same file"):
        encrypt_file(str(path), str(path), key)
    with pytest.raises(CapCryptError, match="same file"):
        decrypt_file(str(path), str(path), key)


def tampered_variants(blob):
    bounds = chunk_bounds(blob)
    return {
        "flipped chunk": flip(blob, bounds[1][0] + 3),
        "flipped header": flip(blob, 20),
        "flipped final tag": flip(blob, len(blob) - 1),
        "dropped final chunk": blob[:bounds[-1][0]],
        "cut mid chunk": blob[:bounds[2][0] + 5],
        "appended": blob + b"\x00" * 3,
        "reordered": blob[:bounds[0][0]] + blob[bounds[1][0]:bounds[1][1]]
        + blob[bounds[0][0]:bounds[0][1]] + blob[bounds[1][1]:],
        "not encrypted": b"plain text",
    }


@pytest.mark.parametrize("existing", [False, True])
def test_decrypt_file_failure_leaves_no_dest_and_keeps_existing(key, tmp_path, existing):
    data = os.urandom(5 * SMALL + 3)
    blob = encrypt(data, key, chunk_size=SMALL)
    variants = tampered_variants(blob)
    variants["wrong key"] = encrypt(data, os.urandom(32), chunk_size=SMALL)
    for name, bad in variants.items():
        enc, dec = tmp_path / "in.enc", tmp_path / "out"
        enc.write_bytes(bad)
        if existing:
            dec.write_bytes(b"previous restore")
            os.utime(dec, (1000000000, 1000000000))
        for check_mode in (False, True):
            with pytest.raises(CapCryptError):
                decrypt_file(str(enc), str(dec), key, check_mode=check_mode)
            if existing:
                assert dec.read_bytes() == b"previous restore", name
                assert dec.stat().st_mtime == 1000000000, name
                assert listing(tmp_path) == ["in.enc", "out"], name
            else:
                assert listing(tmp_path) == ["in.enc"], name


def test_decrypt_file_unchanged_dest_and_check_mode(key, tmp_path):
    data = os.urandom(3 * SMALL)
    enc, dec = tmp_path / "in.enc", tmp_path / "out"
    enc.write_bytes(encrypt(data, key, chunk_size=SMALL))
    planned = decrypt_file(str(enc), str(dec), key, check_mode=True)
    assert planned["changed"] is True and planned["sha3_256"] == sha3_bytes(data)
    assert not dec.exists()
    decrypt_file(str(enc), str(dec), key)
    os.utime(dec, (1000000000, 1000000000))
    assert decrypt_file(str(enc), str(dec), key)["changed"] is False
    assert decrypt_file(str(enc), str(dec), key, check_mode=True)["changed"] is False
    assert dec.stat().st_mtime == 1000000000
    dec.write_bytes(data + b"x")
    assert decrypt_file(str(enc), str(dec), key, check_mode=True)["changed"] is True
    assert dec.read_bytes() == data + b"x"
    assert decrypt_file(str(enc), str(dec), key)["changed"] is True
    assert dec.read_bytes() == data
    assert decrypt_file(str(enc), str(dec), key, force=True)["changed"] is True
    assert listing(tmp_path) == ["in.enc", "out"]


def test_decrypt_file_into_missing_directory(key, tmp_path):
    enc = tmp_path / "in.enc"
    enc.write_bytes(encrypt(b"x", key))
    with pytest.raises(CapCryptError, match="cannot decrypt .*No such file"):
        decrypt_file(str(enc), str(tmp_path / "no" / "out"), key)


def test_no_key_material_in_any_error(key, tmp_path):
    text = base64.b64encode(key).decode()
    blob = encrypt(os.urandom(3 * SMALL), key, chunk_size=SMALL)
    messages = []
    for bad in tampered_variants(blob).values():
        for k in (key, os.urandom(32)):
            try:
                decrypt(bad, k)
            except CapCryptError as exc:
                messages.append(str(exc))
    assert len(messages) >= 16
    for message in messages:
        assert text not in message and key.hex() not in message
