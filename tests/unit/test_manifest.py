"""backup.manifest.v1: building, byte stability, validation and verification."""

import copy
import json
import os

import pytest

from ansible.module_utils.cap_manifest import (
    ManifestError,
    build_manifest,
    load_manifest,
    report_lines,
    serialize_manifest,
    validate_manifest,
    verify_tree,
)

CREATED = "2025-11-10T12:00:00Z"


def stage(root):
    files = {
        "registry.sqlite": b"SQLite format 3\x00" + b"\x01" * 100,
        "policy_store.json": b'{"version":"cap-policy-store.v1","policies":[]}\n',
        "keys/metadata/cap-company.v1.json": b'{"kid":"cap-company"}',
        "keys/metadata/trusted/cap-company.pub": b"-----BEGIN PUBLIC KEY-----\n",
        "config/helm/values-prod.yaml": b"replicaCount: 3\n",
        "config/prometheus/alerts.yml": b"groups: []\n",
        "docs/operations.md": b"# Operations\n",
        "runbooks/backup-restore.md": b"# Runbook\n",
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    return files


def build(root, **kw):
    args = dict(backup_id="backup-20251110-120000", created_at=CREATED, system_version="0.11.0")
    args.update(kw)
    return build_manifest(str(root), **args)


def test_layout_types_and_counts(tmp_path):
    files = stage(tmp_path)
    m = build(tmp_path)
    paths = [e["path"] for e in m["files"]]
    assert paths == sorted(paths)
    assert "keys/metadata/" in paths and not any(p.startswith("keys/metadata/c") for p in paths)
    types = {e["path"]: e["type"] for e in m["files"]}
    assert types["registry.sqlite"] == "database"
    assert types["policy_store.json"] == "policy_store"
    assert types["keys/metadata/"] == "key_metadata"
    assert types["config/helm/values-prod.yaml"] == "configuration"
    assert types["runbooks/backup-restore.md"] == "documentation"
    assert m["total_files"] == len(files)
    assert m["total_size_bytes"] == sum(len(v) for v in files.values())
    assert list(m)[0] == "version" and m["version"] == "backup.manifest.v1"


def test_serialisation_is_byte_stable(tmp_path):
    stage(tmp_path / "a")
    # Same content created in the opposite order, with other mtimes.
    files = stage(tmp_path / "b")
    for rel in reversed(list(files)):
        os.utime(os.path.join(tmp_path, "b", rel), (1, 1))
    one = serialize_manifest(build(tmp_path / "a"))
    two = serialize_manifest(build(tmp_path / "b"))
    assert one == two
    assert one.endswith(b"\n")
    assert json.loads(one)["files"][0]["path"] == "config/helm/values-prod.yaml"


def test_untyped_file_is_refused(tmp_path):
    stage(tmp_path)
    (tmp_path / "stray.bin").write_bytes(b"x")
    with pytest.raises(ManifestError, match="no type for stray.bin"):
        build(tmp_path)


def test_control_files_are_not_listed(tmp_path):
    stage(tmp_path)
    (tmp_path / "backup.manifest.json").write_text("{}")
    (tmp_path / "backup.manifest.json.sig").write_text("{}")
    assert all(not e["path"].startswith("backup.manifest") for e in build(tmp_path)["files"])


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.update(version="backup.manifest.v2"), "version"),
    (lambda m: m["files"][0].update(sha3_256="0x1234"), "sha3_256"),
    (lambda m: m["files"][0].update(sha3_256="0x" + "A" * 64), "sha3_256"),
    (lambda m: m["files"][0].update(size_bytes=-1), "size_bytes"),
    (lambda m: m["files"][0].update(path="../etc/passwd"), "'..'"),
    (lambda m: m["files"][0].update(path="/etc/passwd"), "absolute"),
    (lambda m: m["files"][0].update(type="secrets"), "type"),
    (lambda m: m.update(created_at="2025-11-10 12:00:00"), "created_at"),
    (lambda m: m.update(total_size_bytes=1), "total_size_bytes"),
    (lambda m: m["files"].append(dict(m["files"][0])), "duplicate"),
    (lambda m: m.pop("encryption"), "missing field"),
    (lambda m: m.update(extra=1), "unknown field"),
    (lambda m: m.update(total_files=True), "total_files"),
])
def test_malformed_manifest_is_rejected(tmp_path, mutate, message):
    stage(tmp_path)
    m = copy.deepcopy(build(tmp_path))
    mutate(m)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(m)


def test_load_rejects_non_json(tmp_path):
    path = tmp_path / "backup.manifest.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(str(path))


def test_verify_ok_and_runbook_lines(tmp_path):
    files = stage(tmp_path)
    m = build(tmp_path)
    report = verify_tree(m, str(tmp_path))
    assert report["ok"]
    lines = report_lines(report)
    assert lines[0] == "\U0001F50D Verifying backup integrity..."
    assert lines[-1] == "\u2705 All %d files verified successfully" % len(files)
    assert any(l.startswith("\u2705 registry.sqlite: SHA3-256 matches (0x") for l in lines)


def test_verify_reports_one_changed_byte_with_both_hashes(tmp_path):
    stage(tmp_path)
    m = build(tmp_path)
    path = tmp_path / "registry.sqlite"
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_tree(m, str(tmp_path))
    assert not report["ok"]
    bad = [r for r in report["results"] if r["status"] != "ok"]
    assert [r["path"] for r in bad] == ["registry.sqlite"]
    assert bad[0]["status"] == "mismatch"
    assert bad[0]["expected"] != bad[0]["actual"]
    assert any("\u274C registry.sqlite: SHA3-256 mismatch" in l for l in report_lines(report))


def test_verify_missing_and_extra(tmp_path):
    stage(tmp_path)
    m = build(tmp_path)
    os.unlink(tmp_path / "policy_store.json")
    (tmp_path / "config" / "injected.yaml").write_text("x: 1\n")
    report = verify_tree(m, str(tmp_path))
    assert not report["ok"]
    assert {r["path"]: r["status"] for r in report["results"]}["policy_store.json"] == "missing"
    assert report["extra"] == ["config/injected.yaml"]


def test_verify_file_added_inside_directory_entry(tmp_path):
    stage(tmp_path)
    m = build(tmp_path)
    (tmp_path / "keys" / "metadata" / "company.ed25519").write_bytes(b"\x00" * 32)
    report = verify_tree(m, str(tmp_path))
    assert {r["path"]: r["status"] for r in report["results"]}["keys/metadata/"] == "mismatch"
