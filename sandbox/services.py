"""The sandbox's processes: OpenBao, SeaweedFS and CAP Verifier API instances.

``Sandbox`` owns one state directory (``.sandbox/`` by default) and everything in
it: the processes it starts, their logs, the files holding credentials, and
``endpoints.json``, which tells scripts, tests and the Ansible inventory where each
service is. Every process is started in its own session, listens on 127.0.0.1
only, on ports picked at start, and is stopped by the PID recorded for it after
checking that the PID still runs a command line naming this state directory.

hvac and boto3 are imported where they are first needed, so status, down and
token stay quick. docs/sandbox.md describes the layout and the commands for people.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import stat
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request

import sandbox
from ansible.module_utils import cap_keys
from ansible.module_utils.cap_fsutil import atomic_write_bytes
from sandbox import ports

ENDPOINTS_SCHEMA = "cap-sandbox-endpoints.v1"
LOOPBACK = ports.LOOPBACK

# Vault layout the backup and restore roles rely on.
KV_MOUNT = "secret"
TRANSIT_MOUNT = "transit"
TRANSIT_KEY = "cap-backup"
VAULT_POLICY = "cap-backup-restore"
COMPANY_KEY_PATH = "cap/keys/company"
BACKUP_ENCRYPTION_PATH = "cap/backup/encryption"
BACKUP_SIGNING_PATH = "cap/backup/signing"
BACKUP_ENCRYPTION_KEY_ID = "cap-backup-enc-1"
BACKUP_SIGNING_KID = "cap-backup-signing-1"
# Within the server's default max lease TTL (768h), so the token is not capped silently.
VAULT_TOKEN_TTL = "720h"
VAULT_POLICY_HCL = """\
# What backup and restore need, nothing more: read the CAP keys, and use Transit
# for envelope encryption of backup archives.
path "%(kv)s/data/cap/*" {
  capabilities = ["read"]
}
# Key metadata (versions, not values): a restore checks the key exists before it starts.
path "%(kv)s/metadata/cap/*" {
  capabilities = ["read"]
}
path "%(transit)s/datakey/plaintext/%(key)s" {
  capabilities = ["update"]
}
path "%(transit)s/encrypt/%(key)s" {
  capabilities = ["update"]
}
path "%(transit)s/decrypt/%(key)s" {
  capabilities = ["update"]
}
""" % {"kv": KV_MOUNT, "transit": TRANSIT_MOUNT, "key": TRANSIT_KEY}

# S3 destinations named in the runbook: primary and cross-region replica.
S3_BUCKET = "cap-backups"
S3_REPLICA_BUCKET = "cap-backups-replica"
S3_REGION = "us-east-1"

SOURCE = "cap_source"
SOURCE_DIR = "cap-source"
CAP_TOKEN_TTL = 30 * 24 * 3600
CAP_TOKEN_SUBJECT = "cap-sandbox"
TARGET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TARGET_SKELETON = ("build", "keys", "keys/trusted", "logs")

# Seconds to wait for each service to answer after it was started.
READY_TIMEOUT = {"openbao": 30, "seaweedfs": 60, "cap": 30}
# Seconds between SIGTERM and SIGKILL. SeaweedFS closes its volume server and
# master within milliseconds of SIGTERM, but then its filer waits about 15 s on
# open metadata streams; everything it keeps is discarded on down anyway.
STOP_TIMEOUT = {"openbao": 10, "seaweedfs": 3, "cap": 10}
PORTS_FREE_TIMEOUT = 15

SEAWEEDFS_PORTS = ("seaweedfs_master", "seaweedfs_master_grpc", "seaweedfs_volume",
                   "seaweedfs_volume_grpc", "seaweedfs_filer", "seaweedfs_filer_grpc",
                   "seaweedfs_s3", "seaweedfs_s3_grpc")
# SeaweedFS always also serves each gRPC port on /tmp/seaweedfs-<kind>-grpc-<port>.sock.
SEAWEEDFS_GRPC_SOCKETS = (("master", "seaweedfs_master_grpc"), ("volume", "seaweedfs_volume_grpc"),
                          ("filer", "seaweedfs_filer_grpc"), ("s3", "seaweedfs_s3_grpc"))
# Unix socket paths are limited to 107 bytes.
MAX_SOCKET_PATH = 100

MARKER_NAME = ".cap-sandbox"
LOCK_NAME = ".lock"

# Requests to the sandbox go straight to 127.0.0.1, never through a proxy from the
# environment; the hvac and boto3 clients below are built the same way.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SandboxError(Exception):
    """A sandbox operation failed; the message says what failed and where to look."""

    exit_code = 1


class TargetRunning(SandboxError):
    """A restore target of that name already runs."""

    exit_code = 3


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_tail(path, lines=25):
    """The last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(no log: %s)" % (exc.strerror or exc)
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def http_status(url, token=None, timeout=2.0):
    """HTTP status of a GET, or None when nothing answers."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", "Bearer %s" % token)
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return None


def _binary(name):
    """Path of a tool installed in the project's venv (or else on PATH)."""
    venv_bin = os.path.dirname(sys.executable)
    candidate = os.path.join(venv_bin, name)
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if not found:
        raise SandboxError("%s is not installed; run `make setup` (requirements.txt pins it)"
                           % name)
    return found


def _write_secret(path, data):
    """A credential file: 0600, written atomically."""
    atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"), 0o600)


def _write_public(path, data):
    atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"), 0o644)


def _s3_credentials(prefix):
    """A random access key (20 characters, AWS style) and secret key."""
    alphabet = string.ascii_uppercase + string.digits
    access_key = prefix + "".join(secrets.choice(alphabet) for _ in range(20 - len(prefix)))
    return {"access_key": access_key, "secret_key": secrets.token_urlsafe(30)}


def _allocate_ports(names):
    try:
        return ports.allocate(names)
    except ports.PortError as exc:
        raise SandboxError(str(exc))


def _b64(data):
    return base64.b64encode(data).decode("ascii")


# --- processes ---------------------------------------------------------------

def proc_cmdline(pid):
    """Arguments of a live process, or None when it is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return None
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            raw = handle.read()
    except (OSError, IndexError):
        return None
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0") if arg] or None


def is_ours(pid, marker):
    """True when pid runs and its command line names marker (our state directory)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    args = proc_cmdline(pid)
    return bool(args) and any(marker in arg for arg in args)


def _reap(pid):
    """Collect pid's exit status if it is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if proc_cmdline(pid) is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_pid(pid, marker, timeout):
    """Stop a process we started: SIGTERM, then SIGKILL after timeout seconds.

    Signals only when the PID still runs a command line naming marker, so a
    reused PID is never touched. Services run in their own session, so the
    whole process group is signalled. Returns 'stopped', 'killed', 'not running'
    or 'not ours'.
    """
    if not isinstance(pid, int) or proc_cmdline(pid) is None:
        return "not running"
    if not is_ours(pid, marker):
        return "not ours"
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return "not running"

    def send(sig):
        try:
            if group == pid:
                os.killpg(group, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return "stopped"
    send(signal.SIGKILL)
    if not _wait_gone(pid, 10):
        raise SandboxError("pid %d survived SIGKILL" % pid)
    return "killed"


class Service:
    """One long-running sandbox process: start it and wait until it answers.

    Stopping goes through stop_pid with the PID recorded in endpoints.json and the
    service's STOP_TIMEOUT, because the command that stops a service is rarely the
    one that started it.
    """

    def __init__(self, name, argv, log_path, marker, cwd=None, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.marker = marker
        self.cwd = cwd
        self.env = env
        self.process = None

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def start(self):
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.cwd, env=self.env, start_new_session=True, close_fds=True)
            except OSError as exc:
                raise SandboxError("cannot start %s (%s): %s" % (self.name, self.argv[0], exc))
        return self.process.pid

    def failure(self, what):
        return SandboxError("%s %s\n--- last lines of %s ---\n%s"
                            % (self.name, what, self.log_path, log_tail(self.log_path)))

    def wait_ready(self, probe, timeout, waiting_for):
        """Poll probe() until it returns True; fail early when the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise self.failure("exited with code %s while starting" % code)
            if probe():
                return
            if time.monotonic() >= deadline:
                raise self.failure("did not answer (%s) within %d s" % (waiting_for, timeout))
            time.sleep(0.1)


def _child_env(drop_prefixes=()):
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(drop_prefixes):
            del env[key]
    return env


# --- OpenBao -----------------------------------------------------------------

class OpenBao:
    """OpenBao with in-memory storage, its API and cluster listeners on chosen loopback ports.

    `bao server -dev` always adds a listener of its own whose cluster port is the
    API port + 1, so the server runs from a config file instead: inmem storage
    (everything is gone when it stops, as in dev mode), initialised and unsealed
    through the API with one key share.
    """

    name = "openbao"

    def __init__(self, layout, api_port, cluster_port):
        self.layout = layout
        self.api_port = api_port
        self.cluster_port = cluster_port
        self.addr = "http://%s:%d" % (LOOPBACK, api_port)

    def config_text(self):
        return (
            "# Written by `python -m sandbox up`. In-memory storage: nothing survives a stop.\n"
            "storage \"inmem\" {}\n\n"
            "listener \"tcp\" {\n"
            "  address         = \"%(host)s:%(api)d\"\n"
            "  cluster_address = \"%(host)s:%(cluster)d\"\n"
            "  tls_disable     = true\n"
            "}\n\n"
            "api_addr     = \"http://%(host)s:%(api)d\"\n"
            "cluster_addr = \"https://%(host)s:%(cluster)d\"\n"
            "ui           = false\n"
            "log_level    = \"info\"\n"
        ) % {"host": LOOPBACK, "api": self.api_port, "cluster": self.cluster_port}

    def service(self):
        config = self.layout.path("openbao", "config.hcl")
        os.makedirs(os.path.dirname(config), exist_ok=True)
        _write_public(config, self.config_text())
        return Service(self.name, [_binary("bao"), "server", "-config=%s" % config],
                       self.layout.log(self.name), self.layout.marker,
                       cwd=os.path.dirname(config),
                       env=_child_env(("BAO_", "VAULT_")))

    def client(self, token=None):
        import hvac
        import requests

        session = requests.Session()
        session.trust_env = False
        return hvac.Client(url=self.addr, token=token, session=session, timeout=10)

    def initialize(self, service):
        """Initialise and unseal; return the root token."""
        import hvac.exceptions
        import requests

        service.wait_ready(lambda: http_status(self.addr + "/v1/sys/init") == 200,
                           READY_TIMEOUT["openbao"], "GET /v1/sys/init")
        client = self.client()
        try:
            if client.sys.is_initialized():
                raise service.failure("was already initialised; it is not the server this run "
                                      "started")
            result = client.sys.initialize(secret_shares=1, secret_threshold=1)
            client.sys.submit_unseal_key(result["keys_base64"][0])
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise service.failure("could not be initialised and unsealed: %s" % exc)
        # 200 only once unsealed and active.
        service.wait_ready(lambda: http_status(self.addr + "/v1/sys/health") == 200,
                           READY_TIMEOUT["openbao"], "GET /v1/sys/health == 200")
        return result["root_token"]

    def configure(self, root_token, company, encryption, signing):
        """Mount KV v2 and Transit, store the keys, write the policy; return a policy token."""
        import hvac.exceptions
        import requests

        client = self.client(root_token)
        try:
            client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
            client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
            client.secrets.transit.create_key(name=TRANSIT_KEY, key_type="aes256-gcm96",
                                              mount_point=TRANSIT_MOUNT)
            for path, data in ((COMPANY_KEY_PATH, company), (BACKUP_ENCRYPTION_PATH, encryption),
                               (BACKUP_SIGNING_PATH, signing)):
                self._write_kv(client, path, data)
            client.sys.create_or_update_policy(name=VAULT_POLICY, policy=VAULT_POLICY_HCL)
            created = client.auth.token.create(
                policies=[VAULT_POLICY], ttl=VAULT_TOKEN_TTL, renewable=True, no_parent=True,
                display_name=VAULT_POLICY, meta={"purpose": "cap backup and restore automation"})
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SandboxError("configuring OpenBao at %s failed: %s" % (self.addr, exc))
        return created["auth"]["client_token"]

    @staticmethod
    def _write_kv(client, path, data):
        import hvac.exceptions

        # A KV v2 mount takes a moment to become writable after it is enabled.
        deadline = time.monotonic() + 15
        while True:
            try:
                client.secrets.kv.v2.create_or_update_secret(path=path, secret=data,
                                                             mount_point=KV_MOUNT)
                return
            except hvac.exceptions.VaultError as exc:
                if time.monotonic() >= deadline:
                    raise SandboxError("writing %s/%s failed: %s" % (KV_MOUNT, path, exc))
                time.sleep(0.2)


# --- SeaweedFS ---------------------------------------------------------------

class SeaweedFS:
    """SeaweedFS master, volume, filer and S3 gateway in one `weed server` process."""

    name = "seaweedfs"

    def __init__(self, layout, port_map):
        self.layout = layout
        self.ports = {name: port_map[name] for name in SEAWEEDFS_PORTS}
        self.endpoint = "http://%s:%d" % (LOOPBACK, self.ports["seaweedfs_s3"])
        self.home = layout.path("seaweedfs")

    def identities(self, admin, backup):
        """S3 identities: an admin for the sandbox itself, and the automation's scoped one."""
        scoped = ["%s:%s" % (action, bucket) for bucket in (S3_BUCKET, S3_REPLICA_BUCKET)
                  for action in ("Read", "Write", "List", "Tagging")]

        def identity(name, creds, actions):
            return {"name": name, "actions": actions,
                    "credentials": [{"accessKey": creds["access_key"],
                                     "secretKey": creds["secret_key"]}]}

        return {"identities": [
            identity("cap-sandbox-admin", admin, ["Admin", "Read", "Write", "List", "Tagging"]),
            identity("cap-backup", backup, scoped),
        ]}

    def service(self, admin, backup):
        data = os.path.join(self.home, "data")
        tmp = os.path.join(self.home, "tmp")
        for directory in (data, tmp):
            os.makedirs(directory, exist_ok=True)
        config = os.path.join(self.home, "s3-identities.json")
        _write_secret(config, json.dumps(self.identities(admin, backup), indent=2))
        sockets = {kind: os.path.join(self.home, "%s.sock" % kind) for kind in ("filer", "s3")}
        too_long = [path for path in sockets.values() if len(path) > MAX_SOCKET_PATH]
        if too_long:
            raise SandboxError("state directory path is too long for SeaweedFS's unix sockets "
                               "(%s); choose a shorter --state-dir" % too_long[0])
        p = self.ports
        argv = [
            _binary("weed"),
            # Logs to our log file, and toml configuration only from our own directory.
            "-logtostderr", "-config_dir=%s" % self.home,
            "server",
            "-ip=%s" % LOOPBACK, "-ip.bind=%s" % LOOPBACK, "-dir=%s" % data,
            "-master.port=%d" % p["seaweedfs_master"],
            "-master.port.grpc=%d" % p["seaweedfs_master_grpc"],
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            "-volume.port=%d" % p["seaweedfs_volume"],
            "-volume.port.grpc=%d" % p["seaweedfs_volume_grpc"],
            "-volume.max=64", "-volume.preStopSeconds=0",
            "-filer", "-filer.port=%d" % p["seaweedfs_filer"],
            "-filer.port.grpc=%d" % p["seaweedfs_filer_grpc"],
            "-filer.localSocket=%s" % sockets["filer"],
            "-s3", "-s3.port=%d" % p["seaweedfs_s3"], "-s3.port.grpc=%d" % p["seaweedfs_s3_grpc"],
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.config=%s" % config, "-s3.localSocket=%s" % sockets["s3"],
        ]
        env = _child_env(("AWS_",))
        # Any scratch files SeaweedFS makes stay in the state directory.
        env["TMPDIR"] = tmp
        return Service(self.name, argv, self.layout.log(self.name), self.layout.marker,
                       cwd=self.home, env=env)

    def client(self, credentials):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=S3_REGION,
            aws_access_key_id=credentials["access_key"],
            aws_secret_access_key=credentials["secret_key"],
            config=Config(s3={"addressing_style": "path"}, proxies={},
                          retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10))

    def prepare(self, service, admin):
        """Wait until S3 accepts the admin's requests, then create both buckets."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(admin)

        def answers():
            try:
                client.list_buckets()
                return True
            except (BotoCoreError, ClientError):
                return False

        service.wait_ready(answers, READY_TIMEOUT["seaweedfs"],
                           "S3 ListBuckets at %s" % self.endpoint)
        for bucket in (S3_BUCKET, S3_REPLICA_BUCKET):
            try:
                client.create_bucket(Bucket=bucket)
            except (BotoCoreError, ClientError) as exc:
                raise service.failure("refused to create bucket %s: %s" % (bucket, exc))

    @staticmethod
    def remove_grpc_sockets(port_map):
        """Remove the gRPC sockets a killed SeaweedFS leaves in /tmp (it ignores TMPDIR there)."""
        for kind, name in SEAWEEDFS_GRPC_SOCKETS:
            if name not in port_map:
                continue
            path = "/tmp/seaweedfs-%s-grpc-%d.sock" % (kind, port_map[name])
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)


# --- CAP Verifier API instances ----------------------------------------------

def cap_service(layout, name, data_dir, port, jwt_secret_file):
    """A CAP Verifier API stand-in serving data_dir on 127.0.0.1:port."""
    argv = [sys.executable, "-m", "sandbox.cap_api", "--data-dir", data_dir, "--port", str(port),
            "--jwt-secret-file", jwt_secret_file, "--host", LOOPBACK,
            # The request log goes to the state's logs/ so it outlives the data directory.
            "--log-file", layout.path("logs", "%s.requests.log" % name)]
    env = _child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (sandbox.ROOT, env.get("PYTHONPATH")) if p)
    return Service(name, argv, layout.log(name), layout.marker, cwd=sandbox.ROOT, env=env)


def cap_url(port):
    return "http://%s:%d" % (LOOPBACK, port)


# --- the state directory -----------------------------------------------------

def default_state_dir():
    return os.environ.get("CAP_SANDBOX_DIR") or os.path.join(sandbox.ROOT, ".sandbox")


class Layout:
    """Paths inside one state directory."""

    def __init__(self, state_dir):
        self.state_dir = os.path.realpath(os.path.abspath(state_dir))
        # Every process we start names a path inside the state directory on its command line.
        self.marker = self.state_dir + os.sep

    def path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    def log(self, name):
        return self.path("logs", "%s.log" % name)

    @property
    def endpoints(self):
        return self.path("endpoints.json")

    def target_dir(self, name):
        return self.path("targets", name)


class Sandbox:
    """Start, inspect and stop the sandbox that lives in one state directory."""

    def __init__(self, state_dir=None, say=None):
        self.layout = Layout(state_dir or default_state_dir())
        self.say = say or (lambda message: print(message, file=sys.stderr))

    @property
    def state_dir(self):
        return self.layout.state_dir

    # State directory and endpoints.json.

    def _check_state_dir(self):
        """Refuse a directory that holds something other than a sandbox."""
        path = self.state_dir
        if not os.path.exists(path):
            return
        if not os.path.isdir(path):
            raise SandboxError("%s is not a directory" % path)
        entries = set(os.listdir(path)) - {LOCK_NAME}
        if entries and MARKER_NAME not in entries:
            raise SandboxError("%s exists and is not a sandbox state directory (no %s); "
                               "refusing to use it" % (path, MARKER_NAME))

    @contextlib.contextmanager
    def _locked(self):
        """Serialise every change to the state directory, across processes."""
        self._check_state_dir()
        os.makedirs(self.state_dir, exist_ok=True)
        fd = os.open(self.layout.path(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self):
        """endpoints.json as a dict, or None when there is none."""
        try:
            with open(self.layout.endpoints, "rb") as handle:
                return json.loads(handle.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SandboxError("cannot read %s: %s" % (self.layout.endpoints, exc))

    def _save(self, doc):
        _write_public(self.layout.endpoints, json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def _wipe(self, keep):
        """Remove everything in the state directory except the names in keep."""
        for name in os.listdir(self.state_dir):
            if name in keep:
                continue
            path = self.layout.path(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)

    # Health.

    def _service_health(self, doc):
        # name -> (URL, path probed, status expected); S3 refuses anonymous requests, so
        # any answer from it will do.
        checks = {
            "openbao": (doc.get("vault_addr"), "/v1/sys/health", 200),
            "seaweedfs": (doc.get("s3_endpoint"), "/", None),
            SOURCE: (doc.get("cap_source_url"), "/healthz", 200),
        }
        report = {}
        for name, (url, path, expected) in checks.items():
            pid = doc.get("pids", {}).get(name)
            running = is_ours(pid, self.layout.marker)
            healthy = False
            if running and url:
                status = http_status(url + path)
                healthy = status is not None and expected in (None, status)
            report[name] = {"pid": pid, "url": url, "running": running, "healthy": healthy}
        return report

    def _target_health(self, doc):
        report = {}
        for name, record in sorted(doc.get("targets", {}).items()):
            running = is_ours(record.get("pid"), self.layout.marker)
            healthy = running and http_status(record["url"] + "/healthz") == 200
            report[name] = dict(record, running=running, healthy=healthy)
        return report

    def status(self):
        """What runs, and whether it answers."""
        doc = None if not os.path.isdir(self.state_dir) else self.load()
        if doc is None:
            return {"state_dir": self.state_dir, "status": "down", "services": {}, "targets": {}}
        services = self._service_health(doc)
        healthy = all(s["healthy"] for s in services.values())
        if doc.get("status") == "up" and healthy:
            overall = "up"
        elif doc.get("status") == "starting" and any(s["running"] for s in services.values()):
            overall = "starting"
        else:
            overall = "degraded"
        return {"state_dir": self.state_dir, "status": overall, "services": services,
                "targets": self._target_health(doc), "endpoints": doc}

    # up.

    def up(self, seed=42, policies=30, entries=300, registry_format="sqlite"):
        """Start everything; return (endpoints, already_up)."""
        with self._locked():
            current = self.load()
            if current is not None:
                services = self._service_health(current)
                if current.get("status") == "up" and all(s["healthy"] for s in services.values()):
                    return current, True
                broken = sorted(n for n, s in services.items() if not s["healthy"])
                self.say("sandbox in %s is stale (not answering: %s); cleaning it up"
                         % (self.state_dir, ", ".join(broken) or "start did not finish"))
                self._stop_everything(current)
            self._wipe(keep=(LOCK_NAME,))
            _write_public(self.layout.path(MARKER_NAME),
                          "State of the CAP sandbox; managed by `python -m sandbox`.\n")
            doc = self._new_document(seed, policies, entries, registry_format)
            # The backup volume (the runbook's /backup PVC) the backup role writes to.
            os.makedirs(doc["backup_dir"], mode=0o700, exist_ok=True)
            started = time.monotonic()
            try:
                self._start(doc)
            except BaseException:
                self.say("start failed; stopping what was started (logs stay in %s)"
                         % self.layout.path("logs"))
                try:
                    self._stop_everything(doc, quiet=True)
                except SandboxError as exc:
                    self.say(str(exc))
                self._wipe(keep=(LOCK_NAME, MARKER_NAME, "logs"))
                raise
            doc["status"] = "up"
            doc["startup_seconds"] = round(time.monotonic() - started, 2)
            self._save(doc)
            return doc, False

    def _new_document(self, seed, policies, entries, registry_format):
        layout = self.layout
        return {
            "schema": ENDPOINTS_SCHEMA,
            "status": "starting",
            "created_at": utc_now(),
            "state_dir": self.state_dir,
            "backup_dir": layout.path("backups"),
            "seed": {"seed": seed, "policies": policies, "entries": entries,
                     "registry_format": registry_format},
            "cap_source_url": None,
            "cap_source_data_dir": layout.path(SOURCE_DIR),
            "cap_token_file": layout.path("cap-token"),
            "jwt_secret_file": layout.path("jwt-secret"),
            "company_kid": None,
            "vault_addr": None,
            "vault_token_file": layout.path("vault-token"),
            "vault_root_token_file": layout.path("vault-root-token"),
            "vault_kv_mount": KV_MOUNT,
            "vault_transit_mount": TRANSIT_MOUNT,
            "vault_transit_key": TRANSIT_KEY,
            "vault_policy": VAULT_POLICY,
            "vault_company_key_path": COMPANY_KEY_PATH,
            "vault_backup_encryption_path": BACKUP_ENCRYPTION_PATH,
            "vault_backup_signing_path": BACKUP_SIGNING_PATH,
            "backup_encryption_key_id": BACKUP_ENCRYPTION_KEY_ID,
            "backup_signing_kid": BACKUP_SIGNING_KID,
            "backup_trusted_keys_dir": layout.path("trusted-backup-keys"),
            "s3_endpoint": None,
            "s3_bucket": S3_BUCKET,
            "s3_replica_bucket": S3_REPLICA_BUCKET,
            "s3_region": S3_REGION,
            "s3_credentials_file": layout.path("s3-credentials.json"),
            "s3_admin_credentials_file": layout.path("s3-admin-credentials.json"),
            "logs": {},
            "pids": {},
            "ports": {},
            "targets": {},
        }

    def _start(self, doc):
        layout = self.layout
        t0 = time.monotonic()
        port_map = _allocate_ports(["openbao", "openbao_cluster"] + list(SEAWEEDFS_PORTS)
                                   + [SOURCE])
        doc["ports"] = port_map
        self._save(doc)

        def launch(service):
            doc["pids"][service.name] = service.start()
            doc["logs"][service.name] = service.log_path
            self._save(doc)
            return service

        # The servers boot while this process seeds the source instance.
        bao = OpenBao(layout, port_map["openbao"], port_map["openbao_cluster"])
        doc["vault_addr"] = bao.addr
        bao_service = launch(bao.service())

        weed = SeaweedFS(layout, port_map)
        doc["s3_endpoint"] = weed.endpoint
        admin = _s3_credentials("CAPADMIN")
        backup = _s3_credentials("CAPBACKUP")
        weed_service = launch(weed.service(admin, backup))
        for path, creds in ((doc["s3_admin_credentials_file"], admin),
                            (doc["s3_credentials_file"], backup)):
            _write_secret(path, json.dumps(dict(creds, region=S3_REGION), indent=2) + "\n")

        company_seed, company_kid = self._seed_source(doc)
        doc["company_kid"] = company_kid
        t_seeded = time.monotonic()
        self.say("seeded %s in %.1f s" % (doc["cap_source_data_dir"], t_seeded - t0))

        _write_secret(doc["jwt_secret_file"], secrets.token_urlsafe(48))
        _write_secret(doc["cap_token_file"], self._mint(doc["jwt_secret_file"], CAP_TOKEN_TTL))
        doc["cap_source_url"] = cap_url(port_map[SOURCE])
        cap = launch(cap_service(layout, SOURCE, doc["cap_source_data_dir"], port_map[SOURCE],
                                 doc["jwt_secret_file"]))

        root_token = bao.initialize(bao_service)
        _write_secret(doc["vault_root_token_file"], root_token)
        signing_seed = cap_keys.generate_seed()
        signing_public = cap_keys.public_from_seed(signing_seed)
        token = bao.configure(
            root_token,
            company={"private_key": _b64(company_seed), "kid": company_kid,
                     "public_key": _b64(cap_keys.public_from_seed(company_seed))},
            encryption={"key": _b64(os.urandom(32)), "key_id": BACKUP_ENCRYPTION_KEY_ID},
            signing={"private_key": _b64(signing_seed), "kid": BACKUP_SIGNING_KID,
                     "public_key": _b64(signing_public)})
        _write_secret(doc["vault_token_file"], token)
        os.makedirs(doc["backup_trusted_keys_dir"], exist_ok=True)
        _write_public(os.path.join(doc["backup_trusted_keys_dir"], BACKUP_SIGNING_KID + ".pub"),
                      cap_keys.public_pem(signing_public))
        self.say("OpenBao ready at %s (%.1f s)" % (bao.addr, time.monotonic() - t0))

        weed.prepare(weed_service, admin)
        self.say("SeaweedFS S3 ready at %s (%.1f s)" % (weed.endpoint, time.monotonic() - t0))

        with open(doc["cap_token_file"]) as handle:
            cap_token = handle.read().strip()
        cap.wait_ready(lambda: http_status(doc["cap_source_url"] + "/healthz") == 200,
                       READY_TIMEOUT["cap"], "GET /healthz")
        cap.wait_ready(lambda: http_status(doc["cap_source_url"] + "/readyz", cap_token) == 200,
                       READY_TIMEOUT["cap"], "GET /readyz with the sandbox token")
        self.say("CAP source ready at %s (%.1f s)" % (doc["cap_source_url"], time.monotonic() - t0))

    def _seed_source(self, doc):
        """Seed the source instance; return its company key seed and kid."""
        from sandbox.seed import seed_instance

        data_dir = doc["cap_source_data_dir"]
        options = doc["seed"]
        summary = seed_instance(data_dir, seed=options["seed"], policies=options["policies"],
                                entries=options["entries"],
                                registry_format=options["registry_format"])
        # The full hash list grows with --policies; the source API serves it on demand.
        summary.pop("policy_hashes", None)
        doc["cap_source_seed_summary"] = _jsonable(summary)
        keys_dir = os.path.join(data_dir, "keys")
        key_file = os.path.join(keys_dir, "company.ed25519")
        try:
            with open(key_file, "rb") as handle:
                company_seed = cap_keys.parse_private_key(handle.read())
            public = cap_keys.public_from_seed(company_seed)
            published = cap_keys.load_key_tree(keys_dir)
            kids = sorted(kid for kid, raw in published.items() if raw == public)
        except (OSError, cap_keys.CapKeyError) as exc:
            raise SandboxError("seeded company key in %s is unusable: %s" % (keys_dir, exc))
        if not kids:
            raise SandboxError("the seeder wrote no public key metadata for %s in %s"
                               % (key_file, keys_dir))
        return company_seed, kids[0]

    # Tokens.

    @staticmethod
    def _mint(secret_file, ttl):
        from sandbox.auth import SecretError, mint_token, read_secret_file

        try:
            secret = read_secret_file(secret_file)
        except SecretError as exc:
            raise SandboxError(str(exc))
        return mint_token(secret, subject=CAP_TOKEN_SUBJECT, ttl_seconds=ttl)

    def token(self, ttl=3600):
        """A fresh API token for the sandbox's instances."""
        path = self.layout.path("jwt-secret")
        if not os.path.exists(path):
            raise SandboxError("no JWT secret in %s; start the sandbox with `python -m sandbox up`"
                               % self.state_dir)
        return self._mint(path, ttl)

    # down.

    def down(self):
        """Stop every process this state directory started; return what happened to each."""
        if not os.path.isdir(self.state_dir):
            return {}
        with self._locked():
            doc = self.load()
            if doc is None:
                return {}
            results = self._stop_everything(doc)
            self._wipe(keep=(LOCK_NAME, MARKER_NAME, "logs"))
        return results

    def _stop_everything(self, doc, quiet=False):
        """Stop targets, then services in reverse start order; wait until their ports are free."""
        results = {}
        for name, record in sorted(doc.get("targets", {}).items()):
            results["target " + name] = stop_pid(record.get("pid"), self.layout.marker,
                                                 STOP_TIMEOUT["cap"])
        pids = doc.get("pids", {})
        order = (SOURCE, "seaweedfs", "openbao")
        for name in sorted(pids, key=lambda n: order.index(n) if n in order else -1):
            timeout = STOP_TIMEOUT.get(name, STOP_TIMEOUT["cap"])
            results[name] = stop_pid(pids[name], self.layout.marker, timeout)
        all_ports = list(doc.get("ports", {}).values())
        all_ports += [r["port"] for r in doc.get("targets", {}).values() if r.get("port")]
        busy = ports.wait_until_free(all_ports, PORTS_FREE_TIMEOUT)
        SeaweedFS.remove_grpc_sockets(doc.get("ports", {}))
        if not quiet:
            for name, result in results.items():
                self.say("%s: %s" % (name, result))
        if busy:
            raise SandboxError("ports %s still have listeners after stopping the sandbox; "
                               "`ss -ltnp` shows who holds them" % ", ".join(map(str, busy)))
        return results

    # Restore targets.

    @staticmethod
    def _check_target_name(name):
        if not TARGET_NAME_RE.match(name or ""):
            raise SandboxError("target name %r must be 1-63 lower-case letters, digits or '-', "
                               "starting with a letter or digit" % (name,))

    def _require_up(self):
        doc = self.load() if os.path.isdir(self.state_dir) else None
        if doc is None or doc.get("status") != "up":
            raise SandboxError("the sandbox in %s is not up; run `python -m sandbox up` first"
                               % self.state_dir)
        return doc

    def target_up(self, name, force=False):
        """Start an empty CAP instance named name; return its record."""
        self._check_target_name(name)
        with self._locked():
            doc = self._require_up()
            targets = doc.setdefault("targets", {})
            data_dir = self.layout.target_dir(name)
            record = targets.get(name)
            if record is not None:
                if is_ours(record.get("pid"), self.layout.marker) and not force:
                    raise TargetRunning("target %s already runs at %s (pid %s); "
                                        "`target-down %s` first or pass --force"
                                        % (name, record["url"], record["pid"], name))
                self._stop_target(record)
                del targets[name]
                self._save(doc)
            if os.path.exists(data_dir):
                shutil.rmtree(data_dir)
            for sub in TARGET_SKELETON:
                os.makedirs(os.path.join(data_dir, sub))
            port = _allocate_ports([name])[name]
            # "target-" keeps its log names apart from the services' (a target may be "openbao").
            service = cap_service(self.layout, "target-" + name, data_dir, port,
                                  doc["jwt_secret_file"])
            record = {"url": cap_url(port), "data_dir": data_dir, "pid": service.start(),
                      "port": port, "log": service.log_path, "created_at": utc_now()}
            targets[name] = record
            self._save(doc)
            try:
                service.wait_ready(lambda: http_status(record["url"] + "/healthz") == 200,
                                   READY_TIMEOUT["cap"], "GET /healthz")
            except BaseException:
                self._stop_target(record)
                del targets[name]
                self._save(doc)
                shutil.rmtree(data_dir, ignore_errors=True)
                raise
            return record

    def _stop_target(self, record):
        result = stop_pid(record.get("pid"), self.layout.marker, STOP_TIMEOUT["cap"])
        if record.get("port"):
            busy = ports.wait_until_free([record["port"]], PORTS_FREE_TIMEOUT)
            if busy:
                raise SandboxError("port %d still has a listener after stopping pid %s"
                                   % (record["port"], record.get("pid")))
        return result

    def target_down(self, name, keep_data=False):
        """Stop target name and remove its data dir (unless keep_data); True when it ran."""
        self._check_target_name(name)
        if not os.path.isdir(self.state_dir):
            return False
        with self._locked():
            doc = self.load()
            record = (doc or {}).get("targets", {}).get(name)
            result = "not running"
            if record is not None:
                result = self._stop_target(record)
            data_dir = self.layout.target_dir(name)
            if not keep_data and os.path.exists(data_dir):
                shutil.rmtree(data_dir)
            if record is not None:
                del doc["targets"][name]
                self._save(doc)
            return result in ("stopped", "killed")


    # Stopping and starting an instance on its data: the platform's "scale" for a host.

    def _instance(self, doc, name):
        """(pid, data_dir, port, url) of "source" or a target."""
        if name == "source":
            return (doc.get("pids", {}).get(SOURCE), doc["cap_source_data_dir"],
                    doc["ports"][SOURCE], doc["cap_source_url"])
        self._check_target_name(name)
        record = doc.get("targets", {}).get(name)
        if record is None:
            raise SandboxError("no instance named %s; `target-up %s` first" % (name, name))
        return record.get("pid"), record["data_dir"], record["port"], record["url"]

    def _set_pid(self, doc, name, pid):
        if name == "source":
            doc["pids"][SOURCE] = pid
        else:
            doc["targets"][name]["pid"] = pid

    def instance_stop(self, name):
        """Stop instance name (the source or a target), keeping its data; True when it ran."""
        with self._locked():
            doc = self._require_up()
            pid, _data_dir, port, _url = self._instance(doc, name)
            result = stop_pid(pid, self.layout.marker, STOP_TIMEOUT["cap"])
            busy = ports.wait_until_free([port], PORTS_FREE_TIMEOUT)
            if busy:
                raise SandboxError("port %d still has a listener after stopping %s" % (port, name))
            self._set_pid(doc, name, None)
            self._save(doc)
            return result in ("stopped", "killed")

    def instance_start(self, name):
        """Start instance name again on its data and port; False when it already ran."""
        with self._locked():
            doc = self._require_up()
            pid, data_dir, port, url = self._instance(doc, name)
            if is_ours(pid, self.layout.marker):
                return False
            log_name = SOURCE if name == "source" else "target-" + name
            service = cap_service(self.layout, log_name, data_dir, port, doc["jwt_secret_file"])
            self._set_pid(doc, name, service.start())
            self._save(doc)
            try:
                service.wait_ready(lambda: http_status(url + "/healthz") == 200,
                                   READY_TIMEOUT["cap"], "GET /healthz")
            except BaseException:
                stop_pid(service.pid, self.layout.marker, STOP_TIMEOUT["cap"])
                self._set_pid(doc, name, None)
                self._save(doc)
                raise
            return True


def _jsonable(value):
    """value if it survives JSON, else its text form."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
