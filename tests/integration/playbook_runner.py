"""Run the project's playbooks against a sandbox, as an SRE would from the project root.

    from tests.integration.playbook_runner import run_playbook, output_of

    proc = run_playbook(sandbox.state_dir, "playbooks/backup.yml",
                        extra_vars={"cap_backup_output_dir": str(tmp_path)})
    assert proc.returncode == 0, output_of(proc)

The playbook runs with `-i inventories/sandbox`, the project's ansible.cfg and
`CAP_SANDBOX_DIR` set to the given state directory, so the inventory reads that
sandbox's endpoints.json. Output is Ansible's normal text output (the project's
callback settings, no colour); nothing is parsed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
INVENTORY = ROOT / "inventories" / "sandbox"
DEFAULT_TIMEOUT = 600


def playbook_env(state_dir, env=None):
    """Environment of a playbook run against the sandbox in state_dir; env entries win."""
    merged = dict(os.environ)
    merged.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "CAP_SANDBOX_DIR": str(state_dir),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
        "PATH": "%s%s%s" % (VENV_BIN, os.pathsep, os.environ.get("PATH", "")),
    })
    # A caller's callback choice (tests/conftest.py's ansible_env) must not leak in.
    for name in ("ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACKS_ENABLED",
                 "ANSIBLE_LOAD_CALLBACK_PLUGINS", "ANSIBLE_INVENTORY"):
        merged.pop(name, None)
    merged.update({k: str(v) for k, v in (env or {}).items()})
    return merged


def _extra_var_args(extra_vars):
    """-e arguments: a dict becomes JSON; a string ("@file" or "k=v") is passed as is."""
    if extra_vars is None:
        return []
    if isinstance(extra_vars, (dict, str, os.PathLike)):
        extra_vars = [extra_vars]
    args = []
    for item in extra_vars:
        if isinstance(item, dict):
            args += ["-e", json.dumps(item)]
        else:
            args += ["-e", str(item)]
    return args


def run_playbook(state_dir, playbook, extra_vars=None, check=False, env=None,
                 timeout=DEFAULT_TIMEOUT):
    """Run ansible-playbook PLAYBOOK -i inventories/sandbox against the sandbox in state_dir.

    playbook is relative to the project root (or absolute). extra_vars is None, a dict
    (passed as JSON), a string ("@vars.json", "name=value") or a list of those, applied
    in order. check adds --check. env adds or overrides environment variables. Returns
    the subprocess.CompletedProcess (returncode, stdout, stderr, args); never raises
    for a failed play.
    """
    cmd = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(INVENTORY)]
    cmd += _extra_var_args(extra_vars)
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, cwd=ROOT, env=playbook_env(state_dir, env), capture_output=True,
                          text=True, timeout=timeout)


def output_of(proc, tail=150):
    """The command and the last lines of its output, for assertion messages."""
    lines = (proc.stdout + "\n--- stderr ---\n" + proc.stderr).splitlines()
    shown = lines[-tail:]
    cmd = " ".join(str(a) for a in proc.args) if isinstance(proc.args, (list, tuple)) else proc.args
    return "%s\nexit %s; last %d of %d lines:\n%s" % (cmd, proc.returncode, len(shown), len(lines),
                                                      "\n".join(shown))
