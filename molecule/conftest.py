"""Fixtures shared by the scenarios' testinfra verifiers (molecule/*/tests/).

Molecule's testinfra verifier passes the scenario's environment: CAP_SANDBOX_DIR names
the sandbox that the scenario's create step brought up.
"""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(scope="module")
def endpoints(host):
    """The scenario sandbox's endpoints.json."""
    state_dir = os.environ.get("CAP_SANDBOX_DIR", "")
    assert state_dir, "CAP_SANDBOX_DIR is not set; run this through molecule"
    doc = host.file(os.path.join(state_dir, "endpoints.json"))
    assert doc.exists, "the scenario's sandbox is not up"
    return json.loads(doc.content_string)
