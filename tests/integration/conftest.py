"""Fixtures for tests that need the real sandbox: OpenBao, SeaweedFS and CAP API instances.

Every test session starts its own sandbox in a temporary state directory (never a
developer's .sandbox/), with a small seed, and stops it at the end; the teardown
fails when a process or a listener is left behind. Tests using these fixtures are
marked ``@pytest.mark.sandbox``.

    def test_something(sandbox):
        sandbox["vault_addr"]                # any endpoints.json key
        sandbox.vault_client().secrets...    # hvac, with the automation's token
        sandbox.s3_client().put_object(...)  # boto3, with the automation's credentials
        sandbox.cli("target-up", "cap-restore", "--json")

    def test_restore(sandbox_target):
        target = sandbox_target("cap-restore")   # {url, data_dir, pid, port, ...}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import ports as sandbox_ports
from sandbox.services import proc_cmdline

ROOT = Path(__file__).resolve().parents[2]
# Small enough to seed in well under a second, large enough to page through.
TEST_SEED = {"seed": 42, "policies": 30, "entries": 300}
CLI_TIMEOUT = 300


def _cli_env():
    """The caller's environment without CAP_SANDBOX_DIR: tests never touch a developer's sandbox."""
    env = dict(os.environ)
    env.pop("CAP_SANDBOX_DIR", None)
    return env


def run_cli(state_dir, *args, check=True, timeout=CLI_TIMEOUT):
    """Run `python -m sandbox ARGS --state-dir state_dir`; fail with its output when check fails."""
    cmd = [sys.executable, "-m", "sandbox", *[str(a) for a in args], "--state-dir", str(state_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_cli_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited with %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(cmd[1:]), proc.returncode, proc.stdout, proc.stderr))
    return proc


class SandboxHandle(dict):
    """endpoints.json of a running sandbox, plus clients bound to it."""

    def __init__(self, state_dir):
        super().__init__()
        self.state_dir = Path(state_dir)
        self.reload()

    def reload(self):
        with open(self.state_dir / "endpoints.json") as handle:
            doc = json.load(handle)
        self.clear()
        self.update(doc)
        return self

    def cli(self, *args, check=True):
        return run_cli(self.state_dir, *args, check=check)

    def read_file(self, key):
        """Text of the file an endpoints.json key names (a token or credentials file)."""
        with open(self[key]) as handle:
            return handle.read().strip()

    @property
    def cap_token(self):
        return self.read_file("cap_token_file")

    @property
    def s3_credentials(self):
        return json.loads(self.read_file("s3_credentials_file"))

    def vault_client(self, token=None):
        """hvac client; token defaults to the automation's policy token."""
        import hvac
        import requests

        session = requests.Session()
        session.trust_env = False
        return hvac.Client(url=self["vault_addr"], session=session, timeout=10,
                           token=token if token is not None else self.read_file("vault_token_file"))

    def s3_client(self, access_key=None, secret_key=None):
        """boto3 S3 client; credentials default to the automation's."""
        import boto3
        from botocore.config import Config

        creds = self.s3_credentials
        return boto3.client(
            "s3", endpoint_url=self["s3_endpoint"], region_name=self["s3_region"],
            aws_access_key_id=access_key or creds["access_key"],
            aws_secret_access_key=secret_key or creds["secret_key"],
            config=Config(s3={"addressing_style": "path"}, proxies={},
                          retries={"max_attempts": 1}))

    def all_pids(self):
        """name -> pid of every service and restore target."""
        pids = dict(self["pids"])
        pids.update({"target " + n: t["pid"] for n, t in self["targets"].items()})
        return pids

    def all_ports(self):
        ports = list(self["ports"].values())
        return ports + [t["port"] for t in self["targets"].values()]


def start_sandbox(state_dir, **seed):
    """`up` a sandbox in state_dir and return its handle; on failure clean up and fail."""
    options = dict(TEST_SEED, **seed)
    proc = run_cli(state_dir, "up", "--seed", options["seed"], "--policies", options["policies"],
                   "--entries", options["entries"], check=False)
    if proc.returncode != 0:
        run_cli(state_dir, "down", check=False)
        pytest.fail("sandbox up failed (exit %d)\nstdout:\n%s\nstderr:\n%s"
                    % (proc.returncode, proc.stdout, proc.stderr))
    return SandboxHandle(state_dir)


def assert_stopped(pids, ports):
    """No process of pids runs any more and nothing listens on ports."""
    alive = {name: pid for name, pid in pids.items() if proc_cmdline(pid) is not None}
    assert not alive, "processes still running after down: %s" % alive
    busy = sandbox_ports.busy_ports(ports)
    assert not busy, "ports still listening after down: %s" % busy


def stop_sandbox(handle):
    """`down` the sandbox and check that nothing it started is left."""
    handle.reload()
    pids, ports = handle.all_pids(), handle.all_ports()
    handle.cli("down")
    assert_stopped(pids, ports)
    assert not (handle.state_dir / "endpoints.json").exists()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """A running sandbox for the whole session (its endpoints.json as a dict-like handle)."""
    handle = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    try:
        yield handle
    finally:
        stop_sandbox(handle)


@pytest.fixture
def sandbox_target(sandbox):
    """Factory: start(name) brings up an empty restore target and returns its record;
    every target started this way is stopped and removed after the test."""
    started = []

    def start(name):
        record = json.loads(sandbox.cli("target-up", name, "--json").stdout)
        started.append(name)
        sandbox.reload()
        return record

    try:
        yield start
    finally:
        for name in started:
            sandbox.cli("target-down", name)
        sandbox.reload()


@pytest.fixture
def sandbox_cli():
    """run_cli(state_dir, *args, check=True) for tests that manage their own sandbox."""
    return run_cli


@pytest.fixture(scope="module")
def backup(sandbox):
    """A fresh backup of the sandbox source (restore_helpers.make_backup), one per test file."""
    from tests.integration.restore_helpers import make_backup
    return make_backup(sandbox)


@pytest.fixture(scope="module")
def opened(sandbox, backup, tmp_path_factory):
    """That backup decrypted and extracted by hand (runbook step 1), to compare a restore with."""
    from tests.integration.restore_helpers import open_backup
    return open_backup(sandbox, backup.archive, tmp_path_factory.mktemp("opened"))
