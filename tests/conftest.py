"""Shared pytest fixtures: import paths, running modules through Ansible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Let plain Python import the project's module_utils as Ansible modules do.
import ansible.module_utils  # noqa: E402

if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VENV_BIN = Path(sys.executable).parent


def ansible_env(**extra):
    """Environment for ansible commands run by the tests: the project's config, JSON output."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "PATH": "%s%s%s" % (VENV_BIN, os.pathsep, env.get("PATH", "")),
    })
    env.update(extra)
    return env


class ModuleRun:
    """Result of one module invocation through `ansible localhost -m`."""

    def __init__(self, result, proc):
        self.result = result
        self.proc = proc

    def __getitem__(self, key):
        return self.result[key]

    def get(self, key, default=None):
        return self.result.get(key, default)

    @property
    def failed(self):
        return bool(self.result.get("failed"))

    @property
    def changed(self):
        return bool(self.result.get("changed"))

    @property
    def msg(self):
        return str(self.result.get("msg", ""))


def run_module(name, args, check=False, diff=False, env=None):
    """Run library/<name>.py on localhost through Ansible and return its result.

    env: variables added to Ansible's environment, which the module process inherits.
    """
    cmd = [str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-m", name, "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(ansible_env(), **(env or {})),
                          capture_output=True, text=True, timeout=600)
    try:
        doc = json.loads(proc.stdout)
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("ansible gave no JSON result (rc=%s)\nstdout:\n%s\nstderr:\n%s"
                             % (proc.returncode, proc.stdout, proc.stderr))
    return ModuleRun(result, proc)


@pytest.fixture
def module():
    """Call as module('cap_backup_verify', {...}, check=False)."""
    return run_module
