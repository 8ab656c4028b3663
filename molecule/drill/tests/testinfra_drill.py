"""Molecule verify for the drill scenario: what one backup and one DR drill left behind.

Runs under molecule's testinfra verifier (local connection to the controller), which
passes the scenario's environment: CAP_SANDBOX_DIR names the scenario's sandbox and the
converge wrote its reports to $MOLECULE_EPHEMERAL_DIRECTORY/reports.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import xml.etree.ElementTree as ET

import pytest

STATE_DIR = os.environ.get("CAP_SANDBOX_DIR", "")
REPORT_DIR = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "reports")


@pytest.fixture(scope="module")
def drill_dir():
    found = glob.glob(os.path.join(REPORT_DIR, "drill-*"))
    assert len(found) == 1, "expected one drill report directory in %s: %s" % (REPORT_DIR, found)
    return found[0]


@pytest.fixture(scope="module")
def report(host, drill_dir):
    return json.loads(host.file(os.path.join(drill_dir, "drill-report.json")).content_string)


def test_drill_passed_every_check_and_objective(report, endpoints):
    assert report["schema"] == "cap-drill-report.v1"
    assert report["result"] == "passed" and report["error"] is None
    failed = [c["id"] for c in report["checks"] if c["passed"] is not True]
    assert not failed, failed
    assert {"drill.policies", "drill.registry"} <= {c["id"] for c in report["checks"]}
    assert report["objectives"]["rto"]["met"] and report["objectives"]["rpo"]["met"]
    assert report["source"]["url"] == endpoints["cap_source_url"]


def test_report_is_written_in_four_formats(host, drill_dir):
    for name in ("drill-report.json", "drill-report.md", "drill-report.html", "drill-report.xml"):
        assert host.file(os.path.join(drill_dir, name)).is_file, name
    assert "<svg" in host.file(os.path.join(drill_dir, "drill-report.html")).content_string
    suites = ET.fromstring(host.file(os.path.join(drill_dir, "drill-report.xml")).content)
    assert suites.tag == "testsuites" and suites.get("failures") == "0"


def test_drill_target_is_gone(host, endpoints, report):
    target = report["target"]["name"]
    assert target.startswith("cap-drill-")
    assert target not in endpoints["targets"]
    assert not host.file(os.path.join(STATE_DIR, "targets", target)).exists
    assert report["teardown"]["done"] is True


def test_no_key_material_is_left(host, report, drill_dir):
    for directory in (drill_dir, os.path.join(STATE_DIR, "drill")):
        found = host.run("find %s -name '*.ed25519' -o -name '*.tar.gz'", directory)
        assert found.stdout.strip() == "", found.stdout
    restore = glob.glob(os.path.join(drill_dir, "restore-*", "restore-report.json"))
    assert len(restore) == 1
    restore_id = json.loads(host.file(restore[0]).content_string)["restore_id"]
    assert glob.glob(os.path.join(tempfile.gettempdir(), "cap-restore-key.%s.*" % restore_id)) == []
    assert report["teardown"]["key_material_removed"] is True


def test_drill_metrics_record_the_pass(host):
    metrics = host.file(os.path.join(STATE_DIR, "metrics", "cap_drill.prom")).content_string
    assert "cap_drill_last_result 1" in metrics.splitlines()
