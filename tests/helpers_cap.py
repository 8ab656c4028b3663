"""Test helpers for the restore checks: CAP API stand-in instances, TLS material, a tampering proxy.

Instances run as `python -m sandbox.cap_api` on port 0 (the kernel picks a free
127.0.0.1 port, which the process prints), on data directories the tests seed,
and are stopped by PID. The TLS server and the proxy run in threads of the test
process, for tests that need an https endpoint or answers a real instance would
never give.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import sandbox  # noqa: F401  (makes ansible.module_utils.cap_* importable)
from sandbox import auth
from sandbox.cap_api import build_server
from sandbox.seed import seed_instance

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"restore-checks-secret-for-the-cap-stand-in"
START_TIMEOUT = 20.0
LISTENING_RE = re.compile(r"listening on (http://\S+) ")


def write_secret(directory, secret=SECRET):
    path = Path(directory) / "jwt.secret"
    path.write_bytes(secret + b"\n")
    path.chmod(0o600)
    return path


def mint(secret=SECRET, **kwargs):
    return auth.mint_token(secret, **kwargs)


def write_token(directory, token, name="token"):
    path = Path(directory) / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def seed(data_dir, **kwargs):
    """Seed a data directory (defaults: seed 42, 30 policies, 300 entries); returns the summary."""
    options = dict(seed=42, policies=30, entries=300)
    options.update(kwargs)
    return seed_instance(str(data_dir), **options)


def copy_tree(src, dest):
    shutil.copytree(str(src), str(dest))
    return Path(dest)


class Instance:
    """One `python -m sandbox.cap_api` process."""

    def __init__(self, data_dir, proc, url):
        self.data_dir = Path(data_dir)
        self.proc = proc
        self.pid = proc.pid
        self.url = url

    def request(self, method, path, token=None, body=None):
        """(status, parsed JSON body or None) of one request."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = "Bearer %s" % token
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def start_instance(data_dir, secret_file):
    """Start an instance on a kernel-chosen port and wait until /healthz answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cap_api", "--data-dir", str(data_dir), "--port", "0",
         "--jwt-secret-file", str(secret_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + START_TIMEOUT
    url = None
    try:
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError("instance on %s did not start: %s" % (
                    data_dir, proc.stderr.read().decode("utf-8", "replace") if proc.poll() is not None
                    else "no 'listening' line"))
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if ready:
                found = LISTENING_RE.search(proc.stdout.readline().decode("utf-8", "replace"))
                url = found.group(1) if found else None
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return Instance(data_dir, proc, url)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("instance on %s did not answer /healthz" % data_dir)
            time.sleep(0.05)
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        raise


class Launcher:
    """Starts instances and stops every one of them by PID in close()."""

    def __init__(self, secret_file):
        self.secret_file = secret_file
        self.instances = []

    def __call__(self, data_dir):
        instance = start_instance(data_dir, self.secret_file)
        self.instances.append(instance)
        return instance

    def close(self):
        for instance in self.instances:
            instance.stop()
        self.instances = []


# ---------------------------------------------------------------------------
# TLS

def make_tls_material(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it; returns (ca_pem, cert_pem, key_pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cap-test-ca")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory = Path(directory)
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class ThreadServer:
    """Runs an http.server in a daemon thread; url and stop()."""

    def __init__(self, server, scheme="http"):
        self.server = server
        host, port = server.server_address[:2]
        self.url = "%s://%s:%d" % (scheme, host, port)
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        api = getattr(self.server, "api", None)
        if api is not None:
            api.log.close()


def start_tls_instance(data_dir, cert, key, secret=SECRET):
    """The stand-in served over https from this process (the TLS layer wraps its listening socket)."""
    server = build_server(str(data_dir), 0, secret)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return ThreadServer(server, scheme="https")


# ---------------------------------------------------------------------------
# A proxy that alters answers

class TamperingProxy(ThreadServer):
    """Forwards every request to an upstream URL and lets tamper(method, path, status, headers, body)
    change the answer: it returns (status, headers, body), headers a list of (name, value) pairs.

    It stands for a restored system that serves wrong hashes or ETags, which the real
    stand-in never does.
    """

    def __init__(self, upstream_url, tamper):
        upstream = urllib.parse.urlsplit(upstream_url)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                """Quiet."""

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    status, out_headers = response.status, response.getheaders()
                finally:
                    conn.close()
                status, out_headers, data = tamper(self.command, self.path, status, list(out_headers), data)
                has_body = self.command != "HEAD" and status not in (204, 304)
                if has_body:
                    out_headers = set_header(out_headers, "content-length", str(len(data)))
                self.send_response(status)
                for name, value in out_headers:
                    if name.lower() not in ("connection", "transfer-encoding", "server", "date"):
                        self.send_header(name, value)
                self.send_header("connection", "close")
                self.end_headers()
                if has_body:
                    self.wfile.write(data)
                self.close_connection = True

            do_GET = do_HEAD = do_POST = _forward

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        super().__init__(server)


def set_header(headers, name, value):
    """headers (list of pairs) with name replaced by value."""
    return [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, value)]


def replace_json(body, **changes):
    """A JSON body with top-level keys changed (the proxy recomputes content-length)."""
    doc = json.loads(body)
    doc.update(changes)
    return json.dumps(doc).encode("utf-8") + b"\n"
