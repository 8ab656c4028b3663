"""Hash rules: SHA3 forms, tree hashes, canonical JSON and ETags."""

import hashlib
import os
import subprocess

import pytest

from ansible.module_utils.cap_hashing import (
    CapHashError,
    canonical_json,
    etag_for,
    is_prefixed_hash,
    sha3_bytes,
    sha3_canonical,
    sha3_file,
    tree_hash,
)


def test_sha3_matches_openssl(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    out = subprocess.run(["openssl", "dgst", "-sha3-256", "-r", str(path)],
                         capture_output=True, text=True, check=True).stdout.split()[0]
    digest, size = sha3_file(str(path))
    assert digest == "0x" + out
    assert size == path.stat().st_size


def test_sha3_bytes_text_is_utf8():
    assert sha3_bytes("é") == "0x" + hashlib.sha3_256("é".encode()).hexdigest()
    assert is_prefixed_hash(sha3_bytes(b""))


@pytest.mark.parametrize("value, ok", [
    ("0x" + "a" * 64, True),
    ("0x" + "A" * 64, False),
    ("0x" + "a" * 63, False),
    ("a" * 64, False),
    ("0x" + "g" * 64, False),
    (None, False),
])
def test_prefixed_hash_form(value, ok):
    assert is_prefixed_hash(value) is ok


def test_canonical_json_sorts_and_compacts():
    assert canonical_json({"b": [1, {"d": 2, "c": None}], "a": "é"}) == '{"a":"é","b":[1,{"c":null,"d":2}]}'


def test_canonical_json_same_hash_whatever_key_order():
    assert sha3_canonical({"x": 1, "y": [True, "z"]}) == sha3_canonical({"y": [True, "z"], "x": 1})


@pytest.mark.parametrize("bad", [{"a": 1.5}, {"a": float("nan")}, {1: "int key"}, {"s": {1, 2}}])
def test_canonical_json_refuses_what_has_no_canonical_form(bad):
    with pytest.raises(CapHashError):
        canonical_json(bad)


def test_etag_is_quoted_first_16_hex():
    h = "0x0afcb402e74ff6a11601863fc4ae2f2d756124db71bc703f5889ecefcd371ff4"
    assert etag_for(h) == '"0afcb402e74ff6a1"'
    with pytest.raises(CapHashError):
        etag_for("0afcb402")


def _sha3sum_listing(root):
    """The documented recipe: sha3sum of each file, sorted by path, then SHA3 of that listing."""
    lines = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            lines.append((rel.encode(), "%s  %s\n" % (hashlib.sha3_256(open(full, "rb").read()).hexdigest(), rel)))
    lines.sort()
    return "0x" + hashlib.sha3_256("".join(l for _k, l in lines).encode()).hexdigest()


def test_tree_hash_matches_documented_recipe(tmp_path):
    (tmp_path / "trusted").mkdir()
    (tmp_path / "b.v1.json").write_text("{}")
    (tmp_path / "a.v1.json").write_text('{"kid": "a"}')
    (tmp_path / "trusted" / "a.pub").write_text("PEM")
    digest, size, count = tree_hash(str(tmp_path))
    assert digest == _sha3sum_listing(str(tmp_path))
    assert (size, count) == (2 + 12 + 3, 3)


def test_tree_hash_changes_with_content_name_and_layout(tmp_path):
    (tmp_path / "a").write_text("1")
    first = tree_hash(str(tmp_path))[0]
    (tmp_path / "a").write_text("2")
    assert tree_hash(str(tmp_path))[0] != first
    (tmp_path / "a").write_text("1")
    assert tree_hash(str(tmp_path))[0] == first
    (tmp_path / "a").rename(tmp_path / "b")
    assert tree_hash(str(tmp_path))[0] != first


def test_tree_hash_refuses_links(tmp_path):
    (tmp_path / "real").write_text("x")
    os.symlink(str(tmp_path / "real"), str(tmp_path / "link"))
    with pytest.raises(CapHashError, match="symbolic link"):
        tree_hash(str(tmp_path))
