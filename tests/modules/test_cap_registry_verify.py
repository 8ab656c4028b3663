"""cap_registry_verify run through Ansible."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess

import pytest

from tests import helpers_cap
from tests.conftest import ROOT, VENV_BIN, ansible_env
from tests.unit.test_registry_verify import cli_listing_sha256, rows_of, sqlite_cli


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("seeded") / "app"
    return data_dir, helpers_cap.seed(data_dir)


@pytest.fixture
def app(seeded, tmp_path):
    return helpers_cap.copy_tree(seeded[0], tmp_path / "app")


def args(app, **extra):
    options = dict(path=str(app / "build" / "registry.sqlite"), keys_dir=str(app / "keys"))
    options.update(extra)
    return options


def test_seeded_registry_passes(module, seeded):
    data_dir, summary = seeded
    res = module("cap_registry_verify", args(data_dir))
    assert not res.failed, res.msg
    assert not res.changed
    assert res["entries"] == 300 and res["policies"] == 30
    assert res["signatures"] == {"valid": 300, "invalid": 0, "unknown_kid": 0}
    assert res["invalid"] == []
    assert res["kids"] == sorted(summary["kids"]) == res["trusted_kids"]
    assert res["listing_sha256"] == cli_listing_sha256(str(data_dir / "build" / "registry.sqlite"))
    assert res["listing_query"] == ("SELECT manifest_hash, proof_hash, kid FROM registry_entries "
                                    "ORDER BY manifest_hash;")
    assert [s["id"] for s in res["samples"]] == [1, 300]
    assert res["samples"][0]["manifest_hash"] == summary["sample_manifest_hash"]
    assert res["row_counts"] == {"policies": 30, "registry_entries": 300}
    assert res["format"] == "sqlite"


def test_check_mode_gives_the_same_result(module, seeded):
    normal = module("cap_registry_verify", args(seeded[0]))
    checked = module("cap_registry_verify", args(seeded[0]), check=True)
    assert not checked.failed and not checked.changed
    for key in ("entries", "signatures", "listing_sha256", "samples", "kids"):
        assert checked[key] == normal[key]


def test_tampered_entries_fail_and_are_named(module, app):
    db = str(app / "build" / "registry.sqlite")
    row = rows_of(db, "id = 42")[0]
    raw = bytearray(base64.b64decode(row["signature"]))
    raw[31] ^= 0x04
    sqlite_cli(db, "UPDATE registry_entries SET signature = '%s' WHERE id = 42;"
               % base64.b64encode(bytes(raw)).decode("ascii"))
    altered = rows_of(db, "id = 43")[0]
    sqlite_cli(db, "UPDATE registry_entries SET proof_hash = '0x%s' WHERE id = 43;" % ("0f" * 32))
    res = module("cap_registry_verify", args(app))
    assert res.failed
    assert "2 of 300 entries fail verification (2 invalid, 0 with an unknown kid)" in res.msg
    assert row["manifest_hash"] in res.msg and db in res.msg
    assert [i["manifest_hash"] for i in res["invalid"]] == [row["manifest_hash"], altered["manifest_hash"]]
    assert res["signatures"] == {"valid": 298, "invalid": 2, "unknown_kid": 0}
    assert res["listing_sha256"] == cli_listing_sha256(db)

    reported = module("cap_registry_verify", args(app, fail_on_invalid=False))
    assert not reported.failed
    assert reported["signatures"]["invalid"] == 2


def test_unknown_kid_fails(module, app, seeded):
    legacy = [k for k in seeded[1]["kids"] if k.startswith("cap-legacy-")][0]
    os.unlink(str(app / "keys" / ("%s.v1.json" % legacy)))
    os.unlink(str(app / "keys" / "trusted" / ("%s.pub" % legacy)))
    res = module("cap_registry_verify", args(app))
    assert res.failed
    count = res["signatures"]["unknown_kid"]
    assert count == len(rows_of(str(app / "build" / "registry.sqlite"), "kid = '%s'" % legacy)) > 0
    assert "(0 invalid, %d with an unknown kid)" % count in res.msg
    assert "kid %s is not among the trusted public keys" % legacy in res.msg
    assert legacy not in res["trusted_kids"] and legacy in res["kids"]


def test_json_registry(module, tmp_path):
    data_dir = tmp_path / "app"
    helpers_cap.seed(data_dir, seed=5, registry_format="json")
    res = module("cap_registry_verify", dict(path=str(data_dir / "build" / "registry.json"),
                                             keys_dir=str(data_dir / "keys"), sample=3))
    assert not res.failed, res.msg
    assert res["format"] == "json"
    assert res["signatures"]["valid"] == 300
    assert len(res["samples"]) == 3


def test_samples_feed_cap_api_verify_entries(module, seeded):
    res = module("cap_registry_verify", args(seeded[0]))
    conn = sqlite3.connect(str(seeded[0] / "build" / "registry.sqlite"))
    try:
        for sample in res["samples"]:
            proof, kid = conn.execute("SELECT proof_hash, kid FROM registry_entries WHERE manifest_hash = ?",
                                      (sample["manifest_hash"],)).fetchone()
            assert (proof, kid) == (sample["proof_hash"], sample["kid"])
    finally:
        conn.close()


@pytest.mark.parametrize("change, message", [
    (lambda app: (app / "keys" / "extra.v1.json").write_text("{not json"), "cannot load public keys from"),
    (lambda app: (app / "build" / "registry.sqlite").write_bytes(b"garbage"),
     "neither an SQLite database nor cap-registry.v1 JSON"),
])
def test_unusable_inputs_fail_with_the_path(module, app, change, message):
    change(app)
    res = module("cap_registry_verify", args(app))
    assert res.failed
    assert message in res.msg
    assert str(app) in res.msg


def test_options_are_checked(module, app):
    assert "sample must not be negative" in module("cap_registry_verify", args(app, sample=-1)).msg
    missing = module("cap_registry_verify", dict(path=str(app / "build" / "registry.sqlite")))
    assert missing.failed and "keys_dir" in missing.msg
    empty = app / "nokeys"
    empty.mkdir()
    assert "no public keys in %s" % empty in module("cap_registry_verify", args(app, keys_dir=str(empty))).msg


def test_ansible_doc_renders():
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "cap_registry_verify"], cwd=ROOT,
                          env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "listing_sha256" in proc.stdout and "keys_dir" in proc.stdout
