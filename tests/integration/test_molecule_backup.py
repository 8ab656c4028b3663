"""`molecule test -s backup` from pytest: create (a sandbox of its own), converge
(playbooks/backup.yml), verify (testinfra), destroy, all without a container engine."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SCENARIO = ROOT / "molecule" / "backup"
TESTINFRA = SCENARIO / "tests" / "testinfra_backup.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def count_testinfra_tests():
    tree = ast.parse(TESTINFRA.read_text())
    return sum(1 for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))


def processes_mentioning(text):
    """PIDs whose command line contains text (a sandbox left running would)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry), cmdline))
    return found


@pytest.mark.sandbox
@pytest.mark.slow
def test_molecule_backup_scenario_passes():
    # A short private ephemeral directory: the scenario's sandbox lives inside it, and
    # SeaweedFS's unix socket paths there must stay under 108 bytes.
    ephemeral = tempfile.mkdtemp(prefix="mol-backup-")
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("MOLECULE_", "ANSIBLE_")) or name == "CAP_SANDBOX_DIR":
            del env[name]
    env.update({
        "PATH": "%s%s%s" % (VENV_BIN, os.pathsep, os.environ.get("PATH", "")),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral,
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
    })
    try:
        proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", "backup"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=1200)
        output = ANSI.sub("", proc.stdout + "\n" + proc.stderr)
        tail = "\n".join(output.splitlines()[-200:])
        assert proc.returncode == 0, "molecule test -s backup failed (exit %d):\n%s" % (
            proc.returncode, tail)
        # The verifier really ran every testinfra test (molecule passes when it finds none).
        assert "Skipping, no tests found" not in output, tail
        count = count_testinfra_tests()
        assert count > 0
        assert re.search(r"\b%d passed\b" % count, output), "expected %d testinfra tests to pass:\n%s" % (
            count, tail)
        assert "Verifier completed successfully" in output, tail
        # Destroy stopped the scenario's sandbox.
        assert not (Path(ephemeral) / "sandbox" / "endpoints.json").exists()
        assert processes_mentioning(ephemeral) == []
    finally:
        # A run cut short (timeout) may not have reached destroy: stop what it started.
        sandbox_dir = Path(ephemeral) / "sandbox"
        if (sandbox_dir / "endpoints.json").exists():
            subprocess.run([sys.executable, "-m", "sandbox", "down", "--state-dir", str(sandbox_dir)],
                           cwd=ROOT, capture_output=True, timeout=120)
        shutil.rmtree(ephemeral, ignore_errors=True)
