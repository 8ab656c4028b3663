"""Molecule verify for the restore scenario: what one backup and one restore left behind.

Runs under molecule's testinfra verifier (local connection to the controller), which
passes the scenario's environment: CAP_SANDBOX_DIR names the scenario's sandbox and the
converge wrote its reports to $MOLECULE_EPHEMERAL_DIRECTORY/reports.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import tempfile
import urllib.request

import pytest

STATE_DIR = os.environ.get("CAP_SANDBOX_DIR", "")
REPORT_DIR = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "reports")
TARGET = "cap-restore"
LISTING = "SELECT id, manifest_hash, proof_hash, policy_hash, kid, signature FROM registry_entries ORDER BY id;"


@pytest.fixture(scope="module")
def report(host):
    found = glob.glob(os.path.join(REPORT_DIR, "restore-*", "restore-report.json"))
    assert len(found) == 1, "expected one restore report in %s: %s" % (REPORT_DIR, found)
    return json.loads(host.file(found[0]).content_string)


@pytest.fixture(scope="module")
def target(endpoints):
    assert TARGET in endpoints["targets"], "target %s is not running" % TARGET
    return endpoints["targets"][TARGET]


def listing(host, db):
    result = host.run("sqlite3 -batch -noheader %s %s", db, LISTING)
    assert result.rc == 0, result.stderr
    return result.stdout.splitlines()


def test_report_says_passed_with_every_check(report, endpoints):
    assert report["schema"] == "cap-restore-report.v1"
    assert report["result"] == "passed" and report["error"] is None
    failed = [c["id"] for c in report["checks"] if c["passed"] is not True]
    assert not failed, failed
    assert report["differences_total"] == 0
    assert report["backup"]["signature_kid"] == endpoints["backup_signing_kid"]
    assert report["backup"]["location"].startswith("s3://%s/" % endpoints["s3_bucket"])
    assert report["target"]["name"] == TARGET


def test_target_holds_the_sources_registry(host, endpoints, target):
    source = listing(host, os.path.join(endpoints["cap_source_data_dir"], "build", "registry.sqlite"))
    restored = listing(host, os.path.join(target["data_dir"], "build", "registry.sqlite"))
    assert len(source) == endpoints["seed"]["entries"]
    assert restored == source


def test_target_answers_ready(host, endpoints, target):
    token = host.file(endpoints["cap_token_file"]).content_string.strip()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(target["url"] + "/readyz", headers={"Authorization": "Bearer " + token})
    with opener.open(request, timeout=30) as answer:
        body = json.loads(answer.read().decode())
    assert answer.status == 200 and body["status"] == "OK", body


def test_private_key_is_in_the_target_only(host, endpoints, target):
    key = host.file(os.path.join(target["data_dir"], "keys", "company.ed25519"))
    assert key.is_file and key.mode == 0o600
    source_key = host.file(os.path.join(endpoints["cap_source_data_dir"], "keys", "company.ed25519"))
    assert key.content == source_key.content
    needle = base64.b64encode(key.content).decode()
    for directory in (REPORT_DIR, os.path.join(STATE_DIR, "restore"), endpoints["backup_dir"]):
        found = host.run("find %s -name '*.ed25519' -o -name archive.tar.gz", directory)
        assert found.rc == 0 and found.stdout.strip() == "", found.stdout
        grep = host.run("grep -rlF %s %s", needle, directory)
        assert grep.rc == 1, "the private key's base64 is in %s" % grep.stdout


def test_no_temporary_key_copy_is_left(report):
    pattern = os.path.join(tempfile.gettempdir(), "cap-restore-key.%s.*" % report["restore_id"])
    assert glob.glob(pattern) == []
