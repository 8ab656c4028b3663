"""Molecule verify for the backup scenario: what one converge (one backup) left behind.

Runs under molecule's testinfra verifier (local connection to the controller), which
passes the scenario's environment: CAP_SANDBOX_DIR names the scenario's sandbox.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import pytest

STATE_DIR = os.environ.get("CAP_SANDBOX_DIR", "")
ARCHIVE_RE = re.compile(r"^cap-backup-(\d{8}-\d{6})\.tar\.gz\.enc$")


@pytest.fixture(scope="module")
def backup(host, endpoints):
    """Paths of the one backup the converge wrote."""
    backup_dir = endpoints["backup_dir"]
    archives = [n for n in host.file(backup_dir).listdir() if ARCHIVE_RE.match(n)]
    assert len(archives) == 1, "expected exactly one archive in %s: %s" % (backup_dir, archives)
    name = archives[0]
    stem = name[:-len(".tar.gz.enc")]
    return {
        "dir": backup_dir,
        "id": "backup-" + ARCHIVE_RE.match(name).group(1),
        "archive": os.path.join(backup_dir, name),
        "sidecar": os.path.join(backup_dir, name + ".sha3"),
        "manifest": os.path.join(backup_dir, stem + ".manifest.json"),
        "signature": os.path.join(backup_dir, stem + ".manifest.json.sig"),
    }


def test_archive_is_present_and_private(host, backup):
    archive = host.file(backup["archive"])
    assert archive.is_file
    assert archive.mode == 0o600
    assert archive.size > 0
    assert archive.content[:8] == b"CAPCRYPT"


def test_sidecar_holds_the_archive_sha3(host, backup):
    digest = hashlib.sha3_256(host.file(backup["archive"]).content).hexdigest()
    assert host.file(backup["sidecar"]).content_string == "%s  %s\n" % (
        digest, os.path.basename(backup["archive"]))


def test_manifest_copy_describes_this_backup(host, backup):
    manifest = json.loads(host.file(backup["manifest"]).content_string)
    assert manifest["version"] == "backup.manifest.v1"
    assert manifest["backup_id"] == backup["id"]
    assert manifest["encryption"] == "aes-256-gcm"
    paths = {entry["path"] for entry in manifest["files"]}
    assert {"registry.sqlite", "policy_store.json"} <= paths
    assert not [p for p in paths if p.endswith(".ed25519")]


def test_signature_file_verifies_with_the_trusted_backup_key(host, backup, endpoints):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    signature = json.loads(host.file(backup["signature"]).content_string)
    assert signature["version"] == "backup.signature.v1"
    assert signature["kid"] == endpoints["backup_signing_kid"]
    manifest = host.file(backup["manifest"]).content
    assert signature["sha3_256"] == "0x" + hashlib.sha3_256(manifest).hexdigest()
    pem = host.file(os.path.join(endpoints["backup_trusted_keys_dir"],
                                 signature["kid"] + ".pub")).content
    # Raises InvalidSignature when the manifest or the signature was changed.
    load_pem_public_key(pem).verify(base64.b64decode(signature["signature"]), manifest)


def test_metrics_count_one_success(host, backup):
    text = host.file(os.path.join(STATE_DIR, "metrics", "cap_backup.prom")).content_string
    assert 'cap_backup_attempts_total{status="success"} 1\n' in text
    assert 'cap_backup_attempts_total{status="failure"} 0\n' in text
    size = host.file(backup["archive"]).size
    assert "cap_backup_size_bytes %d\n" % size in text
    assert re.search(r"^cap_backup_last_success_timestamp \d{10}$", text, re.M)


def test_audit_log_has_one_success_line(host, backup):
    lines = host.file(os.path.join(STATE_DIR, "audit", "cap-backup-audit.jsonl")).content_string.splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["result"] == "success"
    assert line["backup_id"] == backup["id"]
    assert line["archive"] == backup["archive"]


def test_lock_is_released_and_no_staging_is_left(host, backup):
    assert not host.file(os.path.join(backup["dir"], ".cap-backup.lock")).exists
    work = host.file(os.path.join(backup["dir"], ".work"))
    assert not work.exists or work.listdir() == []
