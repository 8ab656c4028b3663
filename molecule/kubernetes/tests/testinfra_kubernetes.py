"""Molecule verify for the kubernetes scenario: the restore through the kubernetes
adapter passed, its namespace runs the API, and no key copy is left on the controller.

Only reached when create.yml found a cluster (otherwise the scenario is skipped before
converge). Runs under molecule's testinfra verifier with the scenario's environment.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile

import pytest

REPORT_DIR = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "reports")
NAMESPACE = os.environ.get("CAP_K8S_NAMESPACE") or "cap-molecule-restore"


@pytest.fixture(scope="module")
def report(host):
    found = glob.glob(os.path.join(REPORT_DIR, "restore-*", "restore-report.json"))
    assert len(found) == 1, "expected one restore report in %s: %s" % (REPORT_DIR, found)
    return json.loads(host.file(found[0]).content_string)


def test_report_says_passed_on_kubernetes(report):
    assert report["result"] == "passed" and report["error"] is None
    assert report["target"]["platform"] == "kubernetes" and report["target"]["name"] == NAMESPACE
    failed = [c["id"] for c in report["checks"] if c["passed"] is not True]
    assert not failed, failed


def test_namespace_runs_the_api():
    from kubernetes import client, config

    config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    pods = client.CoreV1Api().list_namespaced_pod(NAMESPACE, label_selector="app=cap-verifier-api").items
    assert pods, "no API pod in namespace %s" % NAMESPACE
    assert all(p.status.phase == "Running" for p in pods), [(p.metadata.name, p.status.phase) for p in pods]


def test_no_temporary_key_copy_is_left(report):
    pattern = os.path.join(tempfile.gettempdir(), "cap-restore-key.%s.*" % report["restore_id"])
    assert glob.glob(pattern) == []
