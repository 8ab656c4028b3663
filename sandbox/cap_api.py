"""A local stand-in for the CAP Verifier API, faithful to the backup & restore runbook.

One process serves one data directory (the pod's /app) on a loopback address:

    python -m sandbox.cap_api --data-dir DIR --port PORT --jwt-secret-file FILE
                              [--host 127.0.0.1] [--log-file PATH]

docs/cap-api-contract.md documents every route, status code and file format;
openapi/openapi.yaml (seeded from sandbox/content/) describes the same routes.
Only the standard library serves HTTP.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import sqlite3
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sandbox  # noqa: F401  (makes ansible.module_utils.cap_* importable)
from ansible.module_utils.cap_hashing import etag_for, is_prefixed_hash
from ansible.module_utils.cap_keys import (
    CapKeyError,
    fingerprint,
    load_key_tree,
    parse_key_metadata,
    parse_private_key,
    public_from_seed,
    verify,
)
from sandbox import auth
from sandbox.policy import (
    PolicyError,
    PolicyStore,
    StoreFormatError,
    StoreIntegrityError,
    make_record,
    parse_store_document,
    self_test,
    strict_json_loads,
)
from sandbox.registry import Registry, RegistryError, RegistryUnavailable, check_entry_fields, verify_entry

VERSION = "0.11.0"
SERVER_HEADER = "cap-verifier-api/%s" % VERSION
MAX_BODY_BYTES = 64 * 1024 * 1024
PRIVATE_KEY_NAME = "company.ed25519"
JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WWW_AUTHENTICATE = 'Bearer realm="%s"' % auth.AUDIENCE
READINESS_CHECKS = ("verifier_core", "crypto", "registry", "policy_store")
REQUEST_TIMEOUT_SECONDS = 60
# RFC 8032, section 7.1, test 1: the crypto core must reproduce it.
_KAT_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
_KAT_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
    "1cf9b46bd25bf5f0595bbe24655141438e7a100b")


class ApiError(Exception):
    """An error answered as JSON: {"error": code, "message": message, ...extra}."""

    def __init__(self, status, code, message, headers=None, extra=None, close=False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers or [])
        self.extra = dict(extra or {})
        self.close = close


class Response:
    def __init__(self, status, body=b"", content_type=JSON_TYPE, headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers or [])


def json_bytes(value):
    return json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n"


def json_response(status, value, headers=None):
    return Response(status, json_bytes(value), JSON_TYPE, headers)


def error_response(exc):
    body = {"error": exc.code, "message": exc.message}
    body.update(exc.extra)
    return json_response(exc.status, body, exc.headers)


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------
# Routes

class Route:
    def __init__(self, template, methods, scope=None, pattern=None):
        self.template = template
        self.methods = methods          # HTTP method -> CapApi.route_* handler name
        self.scope = scope              # None: no authentication
        self.pattern = re.compile(pattern) if pattern else None

    def match(self, path):
        if self.pattern is None:
            return {} if path == self.template else None
        found = self.pattern.match(path)
        return None if found is None else found.groupdict()

    def allowed(self):
        methods = set(self.methods)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)


ROUTES = (
    Route("/healthz", {"GET": "route_healthz"}),
    Route("/readyz", {"GET": "route_readyz"}, scope="cap:read"),
    Route("/metrics", {"GET": "route_metrics"}),
    Route("/api/v1/policies", {"GET": "route_list_policies"}, scope="cap:read"),
    Route("/api/v1/policy/compile", {"POST": "route_compile_policy"}, scope="cap:write"),
    Route("/api/v1/policy/restore", {"POST": "route_restore_policies"}, scope="cap:restore"),
    Route("/api/v1/policy/export", {"GET": "route_export_policies"}, scope="cap:read"),
    Route("/api/v1/policy/{policy_hash}", {"GET": "route_get_policy"}, scope="cap:read",
          pattern=r"^/api/v1/policy/(?P<policy_hash>[^/]+)$"),
    Route("/api/v1/verify", {"POST": "route_verify_manifest"}, scope="cap:read"),
    Route("/api/v1/registry", {"GET": "route_registry_summary"}, scope="cap:read"),
)


def match_route(path):
    for route in ROUTES:
        params = route.match(path)
        if params is not None:
            return route, params
    return None, None


# ---------------------------------------------------------------------------
# Metrics and request log

def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = {}
        self.durations = {}
        self.verify_results = {"valid": 0, "invalid": 0, "not_found": 0}

    def observe(self, route, method, status, seconds):
        with self._lock:
            key = (route, method, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            total, count = self.durations.get(route, (0.0, 0))
            self.durations[route] = (total + seconds, count + 1)

    def verified(self, result):
        with self._lock:
            self.verify_results[result] = self.verify_results.get(result, 0) + 1

    def snapshot(self):
        with self._lock:
            return dict(self.requests), dict(self.durations), dict(self.verify_results)


class RequestLog:
    """Append-only log: one line per request, plus start, stop and error events.

    Lines never carry request headers, query strings or bodies, so tokens cannot
    reach the log.
    """

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock = threading.Lock()
        self._handle = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, line):
        with self._lock:
            if not self._handle.closed:
                self._handle.write("%s %s\n" % (utc_now(), line.replace("\n", " | ")))

    def close(self):
        with self._lock:
            self._handle.close()


# ---------------------------------------------------------------------------
# The API of one instance

class CapApi:
    """State and route handlers of one instance (one data directory)."""

    def __init__(self, data_dir, jwt_secret, log):
        self.data_dir = os.path.abspath(data_dir)
        self.build_dir = os.path.join(self.data_dir, "build")
        self.keys_dir = os.path.join(self.data_dir, "keys")
        self.jwt_secret = jwt_secret
        self.log = log
        self.metrics = Metrics()
        self.started = time.time()
        self.store = PolicyStore(os.path.join(self.build_dir, "policy_store.json"))
        self.store.load()
        if self.store.load_error:
            self.log.write("WARN %s; starting with an empty policy store" % self.store.load_error)
        self.registry = Registry(self.build_dir)

    # -- authentication --------------------------------------------------------

    def authenticate(self, headers, scope):
        value = headers.get("Authorization")
        if not value:
            raise ApiError(401, "unauthorized", "missing bearer token",
                           headers=[("www-authenticate", WWW_AUTHENTICATE)])
        kind, _, token = value.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization header is not 'Bearer <token>'",
                           headers=[("www-authenticate", WWW_AUTHENTICATE + ', error="invalid_request"')])
        try:
            claims = auth.verify_token(token.strip(), self.jwt_secret)
        except auth.TokenError as exc:
            raise ApiError(401, "unauthorized", "invalid token: %s" % exc,
                           headers=[("www-authenticate", WWW_AUTHENTICATE + ', error="invalid_token"')])
        if scope not in auth.token_scopes(claims):
            raise ApiError(403, "forbidden", "token lacks scope %s" % scope,
                           headers=[("www-authenticate", WWW_AUTHENTICATE
                                     + ', error="insufficient_scope", scope="%s"' % scope)])
        return claims

    # -- readiness -------------------------------------------------------------

    def check_verifier_core(self):
        reason = self_test()
        if reason is None and not verify(public_from_seed(_KAT_SEED), _KAT_SIGNATURE, b""):
            reason = "Ed25519 known-answer test failed"
        return reason

    def check_crypto(self):
        """None when keys/company.ed25519 holds a key published in keys/*.v1.json."""
        path = os.path.join(self.keys_dir, PRIVATE_KEY_NAME)
        if not os.path.isfile(path):
            return "private key keys/%s is missing" % PRIVATE_KEY_NAME
        try:
            with open(path, "rb") as handle:
                seed = parse_private_key(handle.read())
            public = public_from_seed(seed)
        except OSError as exc:
            return "private key keys/%s is unreadable: %s" % (PRIVATE_KEY_NAME, exc.strerror)
        except (CapKeyError, ValueError) as exc:
            return "private key keys/%s is invalid: %s" % (PRIVATE_KEY_NAME, exc)
        for name in sorted(os.listdir(self.keys_dir)):
            if not name.endswith(".v1.json"):
                continue
            meta_path = os.path.join(self.keys_dir, name)
            try:
                with open(meta_path, "rb") as handle:
                    doc = json.loads(handle.read().decode("utf-8"))
                kid, raw = parse_key_metadata(doc, "keys/" + name)
            except (OSError, UnicodeDecodeError, ValueError, CapKeyError):
                continue
            if raw == public:
                if doc.get("status") == "revoked":
                    return "private key belongs to kid %s, which is revoked" % kid
                return None
        return ("private key (fingerprint %s) matches no key metadata in keys/*.v1.json"
                % fingerprint(public))

    def check_policy_store(self):
        if self.store.load_error:
            return self.store.load_error
        if len(self.store) == 0:
            return "policy store is empty (restore it with POST /api/v1/policy/restore)"
        return None

    def readiness(self):
        """(ready, checks, registry_entries) in the runbook's shape."""
        registry_ok, registry_reason, entries = self.registry.status()
        reasons = {
            "verifier_core": self.check_verifier_core(),
            "crypto": self.check_crypto(),
            "registry": None if registry_ok else registry_reason,
            "policy_store": self.check_policy_store(),
        }
        checks = []
        for name in READINESS_CHECKS:
            if reasons[name] is None:
                checks.append({"name": name, "status": "OK"})
            else:
                checks.append({"name": name, "status": "FAIL", "reason": reasons[name]})
        return all(r is None for r in reasons.values()), checks, entries

    # -- handlers --------------------------------------------------------------

    def route_healthz(self, request):
        return json_response(200, {"status": "OK", "version": VERSION, "build_hash": None})

    def route_readyz(self, request):
        ready, checks, _ = self.readiness()
        return json_response(200 if ready else 503,
                             {"status": "OK" if ready else "FAIL", "checks": checks})

    def route_metrics(self, request):
        ready, checks, entries = self.readiness()
        requests, durations, verify_results = self.metrics.snapshot()
        lines = []

        def family(name, kind, help_text, samples):
            lines.append("# HELP %s %s" % (name, help_text))
            lines.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                rendered = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels)
                lines.append("%s%s %s" % (name, "{%s}" % rendered if rendered else "", value))

        family("cap_api_build_info", "gauge", "Version of the CAP Verifier API.",
               [((("version", VERSION),), 1)])
        family("cap_api_start_time_seconds", "gauge", "Start time of the process (Unix seconds).",
               [((), "%.3f" % self.started)])
        family("cap_api_requests_total", "counter", "HTTP requests by route, method and status code.",
               [((("route", r), ("method", m), ("code", c)), n)
                for (r, m, c), n in sorted(requests.items())])
        family("cap_api_request_duration_seconds", "summary", "Time spent answering requests by route.",
               [])
        for route, (total, count) in sorted(durations.items()):
            lines.append('cap_api_request_duration_seconds_sum{route="%s"} %.6f' % (_label(route), total))
            lines.append('cap_api_request_duration_seconds_count{route="%s"} %d' % (_label(route), count))
        family("cap_api_verify_results_total", "counter", "Results of POST /api/v1/verify.",
               [((("result", k),), v) for k, v in sorted(verify_results.items())])
        family("cap_api_policies_in_store", "gauge", "Policies in the in-memory policy store.",
               [((), len(self.store))])
        family("cap_api_registry_up", "gauge", "1 when the registry file is readable.",
               [((), 0 if entries is None else 1)])
        family("cap_api_registry_entries", "gauge", "Rows in registry_entries (absent when unreadable).",
               [] if entries is None else [((), entries)])
        family("cap_api_readiness_check", "gauge", "1 when a readiness check passes, else 0.",
               [((("check", c["name"]),), 1 if c["status"] == "OK" else 0) for c in checks])
        family("cap_api_ready", "gauge", "1 when every readiness check passes.", [((), 1 if ready else 0)])
        body = ("\n".join(lines) + "\n").encode("utf-8")
        return Response(200, body, METRICS_TYPE)

    def route_list_policies(self, request):
        hashes = self.store.hashes()
        return json_response(200, {"count": len(hashes), "policy_hashes": hashes})

    def route_registry_summary(self, request):
        try:
            summary = self.registry.summary()
        except (RegistryUnavailable, sqlite3.Error) as exc:
            raise ApiError(503, "registry_unavailable", "the registry cannot be read: %s" % exc)
        return json_response(200, summary)

    def route_compile_policy(self, request):
        policy = request.json()
        try:
            record = make_record(policy)
        except PolicyError as exc:
            raise ApiError(400, "invalid_policy", str(exc))
        try:
            created = self.store.add(record)
        except OSError as exc:
            self.log.write("ERROR cannot persist the policy store: %s" % exc)
            raise ApiError(500, "persist_failed", "the policy store could not be persisted")
        try:
            registry = self.registry.store_policy(record, utc_now())
        except Exception as exc:  # the store already holds the policy; report, do not fail
            self.log.write("WARN policy %s not written to the registry: %s"
                           % (record["policy_hash"], exc))
            registry = "unavailable"
        ir = record["ir"]
        etag = etag_for(record["policy_hash"])
        return json_response(201 if created else 200, {
            "policy_hash": record["policy_hash"],
            "ir_hash": record["ir_hash"],
            "policy_id": ir["policy_id"],
            "policy_version": ir["policy_version"],
            "rule_count": ir["rule_count"],
            "created": created,
            "registry": registry,
        }, headers=[("etag", etag), ("location", "/api/v1/policy/%s" % record["policy_hash"])])

    def route_get_policy(self, request):
        policy_hash = request.params["policy_hash"]
        if not is_prefixed_hash(policy_hash):
            raise ApiError(400, "invalid_policy_hash",
                           "policy hash must be '0x' followed by 64 lowercase hex digits")
        record = self.store.get(policy_hash)
        if record is None:
            raise ApiError(404, "not_found", "no policy %s in the policy store" % policy_hash)
        etag = etag_for(policy_hash)
        headers = [("etag", etag), ("cache-control", "private, no-cache")]
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return Response(304, b"", None, headers)
        return json_response(200, {key: record[key] for key in ("policy_hash", "ir_hash", "policy", "ir")},
                             headers)

    def route_export_policies(self, request):
        data, digest = self.store.serialized()
        return Response(200, data, JSON_TYPE, [
            ("x-policy-store-sha3-256", digest),
            ("x-policy-count", str(len(self.store))),
            ("content-disposition", 'attachment; filename="policy_store.json"'),
        ])

    def route_restore_policies(self, request):
        doc = request.json()
        try:
            records = parse_store_document(doc)
        except StoreFormatError as exc:
            raise ApiError(400, "invalid_policy_store", str(exc))
        except StoreIntegrityError as exc:
            raise ApiError(409, "integrity_mismatch", str(exc), extra={"policy_hash": exc.policy_hash})
        try:
            self.store.replace(records)
        except OSError as exc:
            self.log.write("ERROR cannot persist the restored policy store: %s" % exc)
            raise ApiError(500, "persist_failed", "the policy store could not be persisted")
        _, digest = self.store.serialized()
        self.log.write("INFO policy store restored: %d policies, sha3 %s" % (len(records), digest))
        return json_response(200, {"status": "ok", "policies_restored": len(records),
                                   "total_size_bytes": len(request.body)},
                             headers=[("x-policy-store-sha3-256", digest)])

    def route_verify_manifest(self, request):
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "body must be a JSON object")
        unknown = sorted(set(body) - {"manifest_hash", "proof_hash"})
        if unknown:
            raise ApiError(400, "invalid_request", "unknown keys: %s" % ", ".join(unknown))
        manifest_hash = body.get("manifest_hash")
        if not is_prefixed_hash(manifest_hash):
            raise ApiError(400, "invalid_request",
                           "manifest_hash must be '0x' followed by 64 lowercase hex digits")
        proof_hash = body.get("proof_hash")
        if proof_hash is not None and not is_prefixed_hash(proof_hash):
            raise ApiError(400, "invalid_request",
                           "proof_hash must be '0x' followed by 64 lowercase hex digits")
        try:
            row = self.registry.lookup(manifest_hash)
        except RegistryUnavailable as exc:
            raise ApiError(503, "registry_unavailable", str(exc))
        if row is None:
            self.metrics.verified("not_found")
            raise ApiError(404, "not_found", "no registry entry for manifest %s" % manifest_hash)
        try:
            public_keys = load_key_tree(self.keys_dir) if os.path.isdir(self.keys_dir) else {}
        except CapKeyError as exc:
            raise ApiError(503, "keys_unavailable", "public key metadata is unusable: %s" % exc)
        try:
            check_entry_fields(row)
            valid, reason = verify_entry(row, public_keys)
        except RegistryError as exc:
            valid, reason = False, str(exc)
        if valid and proof_hash is not None and proof_hash != row["proof_hash"]:
            valid, reason = False, "proof_hash does not match the registry entry"
        self.metrics.verified("valid" if valid else "invalid")
        result = {
            "status": "OK" if valid else "FAIL",
            "valid": valid,
            "manifest_hash": row["manifest_hash"],
            "proof_hash": row["proof_hash"],
            "policy_hash": row["policy_hash"],
            "kid": row["kid"],
            "created_at": row["created_at"],
            "policy_in_store": self.store.get(row["policy_hash"]) is not None,
        }
        if not valid:
            result["reason"] = reason
        return json_response(200, result)


def _etag_matches(header, etag):
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


# ---------------------------------------------------------------------------
# HTTP plumbing

class Request:
    def __init__(self, method, path, params, headers, body):
        self.method = method
        self.path = path
        self.params = params
        self.headers = headers
        self.body = body
        self.claims = None

    def json(self):
        """The body parsed as JSON (duplicate keys, NaN and Infinity refused); 400 otherwise."""
        if not self.body:
            raise ApiError(400, "invalid_json", "request body is empty; a JSON document is expected")
        try:
            return strict_json_loads(self.body)
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_json", "request body is not UTF-8")
        except ValueError as exc:
            raise ApiError(400, "invalid_json", "request body is not valid JSON: %s" % exc)


class CapRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_SECONDS
    # Headers and body go out in separate writes; without TCP_NODELAY the body of a
    # keep-alive response waits for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def version_string(self):
        return SERVER_HEADER

    def log_message(self, format, *args):
        """Silenced: CapApi writes its own log lines, without headers or query strings."""

    def send_error(self, code, message=None, explain=None):
        """Malformed requests get a JSON error too, and the connection is closed."""
        self.close_connection = True
        # A request line that failed to parse leaves the HTTP/0.9 default, which would
        # suppress the status line; answer in HTTP/1.1 so every client can read the error.
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = self.protocol_version
        body = json_bytes({"error": "bad_request" if code < 500 else "server_error",
                           "message": message or self.responses.get(code, ("error",))[0]})
        try:
            self.send_response(code)
            self.send_header("content-type", JSON_TYPE)
            self.send_header("content-length", str(len(body)))
            self.send_header("connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_OPTIONS(self):
        self._handle()

    def _read_body(self):
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "length_required", "chunked bodies are not accepted; send Content-Length",
                           close=True)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number", close=True)
        size = int(length)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", "request body exceeds %d bytes" % MAX_BODY_BYTES,
                           close=True)
        data = self.rfile.read(size) if size else b""
        if len(data) != size:
            raise ApiError(400, "bad_request", "request body ended early", close=True)
        return data

    def _handle(self):
        api = self.server.api
        started = time.monotonic()
        method = self.command
        path = self.path.split("?", 1)[0]
        route, params = match_route(path)
        template = route.template if route else "unmatched"
        subject = "-"
        try:
            body = self._read_body()
            if route is None:
                raise ApiError(404, "not_found", "no route %s" % path[:200])
            handler_name = route.methods.get("GET" if method == "HEAD" else method)
            if handler_name is None:
                raise ApiError(405, "method_not_allowed", "%s is not allowed on %s" % (method, template),
                               headers=[("allow", ", ".join(route.allowed()))])
            request = Request(method, path, params, self.headers, body)
            if route.scope is not None:
                request.claims = api.authenticate(self.headers, route.scope)
                subject = str(request.claims.get("sub", "-"))[:64]
            response = getattr(api, handler_name)(request)
        except ApiError as exc:
            if exc.close:
                self.close_connection = True
            response = error_response(exc)
        except RecursionError:
            # Only a client document nested thousands of levels deep gets here.
            response = error_response(ApiError(400, "invalid_json", "JSON document is nested too deeply"))
        except Exception as exc:
            api.log.write("ERROR %s %s raised %s" % (method, template, "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()))
            response = json_response(500, {"error": "internal_error",
                                           "message": "internal server error; see the API log"})
        sent = self._send(response, head=(method == "HEAD"))
        elapsed = time.monotonic() - started
        api.metrics.observe(template, method, response.status, elapsed)
        api.log.write('%s "%s %s" %d %d %.1fms sub=%s' % (
            self.client_address[0], method, path[:200], response.status, sent, elapsed * 1000.0,
            subject))

    def _send(self, response, head):
        """Write the response; HEAD gets GET's headers and no body. Returns body bytes sent."""
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("content-type", response.content_type)
            if response.status != 304:
                self.send_header("content-length", str(len(response.body)))
            self.send_header("x-content-type-options", "nosniff")
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            if head or response.status == 304 or not response.body:
                return 0
            self.wfile.write(response.body)
        except OSError:
            # The client went away; nothing more can be said on this connection.
            self.close_connection = True
            return 0
        return len(response.body)


class CapServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, api, family=socket.AF_INET):
        self.address_family = family
        self.api = api
        super().__init__(address, CapRequestHandler)


def loopback_host(host):
    """(host, address family) when host is a loopback address; ValueError otherwise."""
    if host == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("--host %r is not an IP address; only loopback addresses are allowed" % host)
    if not address.is_loopback:
        raise ValueError("--host %s is not a loopback address; the stand-in binds to loopback only"
                         % host)
    return str(address), socket.AF_INET6 if address.version == 6 else socket.AF_INET


def build_server(data_dir, port, jwt_secret, host="127.0.0.1", log_file=None):
    """Create (not start) the server of one instance; the data directory is created if missing."""
    bind_host, family = loopback_host(host)
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    log = RequestLog(log_file or os.path.join(data_dir, "logs", "api.log"))
    api = CapApi(data_dir, jwt_secret, log)
    try:
        return CapServer((bind_host, port), api, family)
    except OSError:
        log.close()
        raise


def serve(server):
    """Serve until SIGTERM or SIGINT; returns 0 after a clean stop."""
    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.api.log.write("INFO started version %s on %s:%d data-dir %s"
                         % (VERSION, server.server_address[0], server.server_address[1],
                            server.api.data_dir))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.api.log.write("INFO stopped")
        server.api.log.close()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox.cap_api",
                                     description="CAP Verifier API stand-in (one data directory).")
    parser.add_argument("--data-dir", required=True, help="the instance's /app directory")
    parser.add_argument("--port", required=True, type=int, help="TCP port (0 picks a free one)")
    parser.add_argument("--jwt-secret-file", required=True, help="file with the HS256 secret")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--log-file", help="request log (default: DATA_DIR/logs/api.log)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0-65535")
    try:
        loopback_host(args.host)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        secret = auth.read_secret_file(args.jwt_secret_file)
    except auth.SecretError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    try:
        server = build_server(args.data_dir, args.port, secret, args.host, args.log_file)
    except OSError as exc:
        print("error: cannot serve %s on %s:%d: %s" % (args.data_dir, args.host, args.port,
                                                       exc.strerror or exc), file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    print("cap-verifier-api %s listening on http://%s:%d data-dir %s"
          % (VERSION, host if ":" not in host else "[%s]" % host, port, server.api.data_dir), flush=True)
    return serve(server)


if __name__ == "__main__":
    sys.exit(main())
