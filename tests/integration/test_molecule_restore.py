"""The molecule scenarios of the restore side: `molecule test -s restore`, `-s drill` and
`-s kubernetes`, run as a developer runs them from the project root.

restore and drill each start a sandbox of their own (molecule/shared/create.yml), back
up, restore or drill, verify with testinfra and stop the sandbox; they must pass, and
their verifier must really have run tests. kubernetes needs a cluster: when the one
KUBECONFIG names (or none) does not answer, its create step stops with the explicit
"MOLECULE SCENARIO SKIPPED" message and this test is skipped with that message; when a
cluster answers, the scenario runs for real and must pass.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.integration.playbook_runner import ROOT, VENV_BIN

SKIP_MARKER = "MOLECULE SCENARIO SKIPPED: no reachable Kubernetes cluster"
# One scenario is a sandbox start, a backup, a restore or drill and a stop.
TIMEOUT = 1800


def molecule_test(scenario):
    env = dict(os.environ)
    env["PATH"] = "%s%s%s" % (VENV_BIN, os.pathsep, env.get("PATH", ""))
    env["ANSIBLE_NOCOLOR"] = "1"
    env["NO_COLOR"] = "1"
    # Plain output: no frame around each command's lines, so messages can be searched.
    env["MOLECULE_COMMAND_BORDERS"] = "false"
    # The scenario starts its own sandbox; a developer's or the test session's must not leak in.
    for name in ("CAP_SANDBOX_DIR", "ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_STDOUT_CALLBACK",
                 "ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_LOAD_CALLBACK_PLUGINS", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    return proc, proc.stdout + "\n" + proc.stderr


def tail(text, lines=120):
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["restore", "drill"])
def test_molecule_scenario_passes(scenario):
    proc, output = molecule_test(scenario)
    assert proc.returncode == 0, tail(output)
    # The testinfra verifier really ran the scenario's checks, and all of them passed.
    summary = re.findall(r"=+ (.*?) in [\d.]+s", output)
    assert summary, "no testinfra summary in the output:\n%s" % tail(output)
    assert re.search(r"\b\d+ passed\b", summary[-1]) and "failed" not in summary[-1], summary[-1]
    assert "testinfra_%s.py" % scenario in output


@pytest.mark.sandbox
@pytest.mark.slow
def test_molecule_kubernetes_scenario_runs_or_says_why_not():
    proc, output = molecule_test("kubernetes")
    flat = " ".join(output.split())
    if SKIP_MARKER in flat:
        # Not a pass: molecule stopped at create, before any sandbox or converge.
        assert proc.returncode != 0, tail(output)
        assert "Bring the sandbox up" not in output and "Restore the CAP Verifier API" not in output
        reason = re.search(re.escape(SKIP_MARKER) + r".*?nothing was tested\.", flat)
        assert reason, tail(output)
        pytest.skip(reason.group(0))
    assert proc.returncode == 0, tail(output)
    assert re.search(r"\b\d+ passed\b", output), tail(output)
