# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore's API checks: runbook Tests 1-4, the API items of the Validation Checklist,
and a live comparison of a restored system with its source.

ApiChecks runs the checks against one CAP Verifier API instance and returns a
checklist in the runbook's wording and sections (CHECKLIST), the differences it
found, and a summary. HTTP goes through Ansible's Request (open_url), so proxies,
CA bundles and validate_certs behave as in ansible.builtin.uri; one TLS context is
built once and shared by every request. docs/checks.md describes the checks.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import ssl
import threading
import time
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit

from ansible.module_utils.cap_hashing import CapHashError, etag_for, is_prefixed_hash, sha3_canonical, strict_json_loads
from ansible.module_utils.urls import Request, make_context

SECTION_FUNCTIONAL = "Functional Checks"
SECTION_HASH = "Hash Integrity Checks"
SECTION_API = "API Functionality Checks"

# What the caller can ask for (the `checks` option), in the order they run. compile runs
# last: it is the only check that writes, so every read-only check sees the restored state.
CHECKS = ("health", "ready", "auth", "policies", "compare", "verify", "compile")

# The checklist items reported, in the runbook's sections and words, and the check that
# produces each (retrieve comes from policies and from compile's read-back).
CHECKLIST = (
    ("health", SECTION_FUNCTIONAL, "Health check returns 200 (/healthz)"),
    ("ready", SECTION_FUNCTIONAL, "Readiness check returns 200 (/readyz)"),
    ("policy_store_loaded", SECTION_FUNCTIONAL, "Policy store loaded (every policy of the backup)"),
    ("policy_hash", SECTION_HASH, "policy_hash matches original (SHA3-256)"),
    ("ir_hash", SECTION_HASH, "ir_hash matches original (SHA3-256)"),
    ("etag", SECTION_HASH, "ETag matches original (first 16 chars of policy_hash)"),
    ("compare", SECTION_HASH, "policy_hash, ir_hash and ETag match the source system (live comparison)"),
    ("compile", SECTION_API, "/policy/compile works (create new policy)"),
    ("retrieve", SECTION_API, "/policy/:id works (retrieve policy)"),
    ("verify", SECTION_API, "/verify works (verify compliance)"),
    ("auth", SECTION_API, "Authentication works (OAuth2 JWT)"),
)
ITEMS_OF_CHECK = {
    "health": ("health",),
    "ready": ("ready",),
    "auth": ("auth",),
    "policies": ("policy_store_loaded", "policy_hash", "ir_hash", "etag", "retrieve"),
    "compare": ("compare",),
    "verify": ("verify",),
    "compile": ("compile", "retrieve"),
}
# Which checklist items a per-policy difference fails.
FIELD_ITEMS = {
    "listed": ("policy_store_loaded",),
    "status": ("policy_hash", "ir_hash", "etag"),
    "body": ("policy_hash", "ir_hash"),
    "store_policy_hash": ("policy_hash",),
    "policy_hash": ("policy_hash",),
    "content_policy_hash": ("policy_hash",),
    "store_ir_hash": ("ir_hash",),
    "ir_hash": ("ir_hash",),
    "content_ir_hash": ("ir_hash",),
    "etag": ("etag",),
    "head_status": ("etag",),
    "head_headers": ("etag",),
    "if_none_match": ("etag",),
}
READINESS_CHECKS = ("verifier_core", "crypto", "registry", "policy_store")
STORE_VERSION = "cap-policy-store.v1"
RECORD_KEYS = ("policy_hash", "ir_hash", "policy", "ir")
AUDIENCE = "cap-verifier-api"
USER_AGENT = "ansible-cap_api_verify/1.0"
# Headers that describe the connection or the moment, not the resource.
VOLATILE_HEADERS = frozenset(("date", "connection", "keep-alive"))
DEFAULT_WORKERS = 4
DEFAULT_TIMEOUT = 30
MAX_DIFFERENCES = 100
# The per-policy loop stops after this many transport errors in a row (a dead server).
MAX_CONSECUTIVE_ERRORS = 10
MAX_MESSAGE = 300

# The policy the compile check submits. It is valid for the CAP compiler (cap-policy.v1,
# docs/cap-api-contract.md "Policy"), states no real obligation, and always has the same
# policy_hash, so a rerun finds it already stored ("created": false) instead of adding another.
SMOKE_TEST_POLICY = {
    "schema": "cap-policy.v1",
    "id": "cap-restore-smoke-test",
    "name": "Restore smoke test (compile check)",
    "version": "1.0.0",
    "legal_basis": ["internal: backup and restore runbook, API functionality checks"],
    "description": "Compiled by cap_api_verify to show that /api/v1/policy/compile works after a "
                   "restore. It is not a compliance policy.",
    "tags": ["restore-smoke-test"],
    "rules": [
        {"id": "restore-verified", "op": "eq", "field": "restore.verified", "value": True},
        {"id": "hash-match", "op": "range", "field": "restore.hash_match_pct", "min": 100, "max": 100},
        {"id": "policies-restored", "op": ">=", "field": "restore.policy_count", "value": 1,
         "severity": "major"},
        {"id": "source", "op": "in", "field": "restore.source", "values": ["backup", "registry"]},
    ],
}
SMOKE_TEST_POLICY_HASH = sha3_canonical(SMOKE_TEST_POLICY)

# ApiClient.call(token=USE_TOKEN) sends the client's own token; None sends no Authorization header.
USE_TOKEN = object()


class CapApiError(Exception):
    """Base class: the checks cannot be set up or run."""


class TransportError(CapApiError):
    """No HTTP answer: connection refused, TLS failure, timeout, malformed response."""


class PolicyStoreError(CapApiError):
    """The expected policy store file is unreadable or not a cap-policy-store.v1 document."""


# ---------------------------------------------------------------------------
# JSON and the expected policy store

def _content_hash(value):
    try:
        return sha3_canonical(value)
    except CapHashError as exc:
        return "no canonical form: %s" % exc


ExpectedPolicy = collections.namedtuple(
    "ExpectedPolicy", "policy_hash ir_hash content_policy_hash content_ir_hash")


def expected_policy(record):
    """The hashes a record claims, and those of its content (sha3_canonical of policy and ir)."""
    return ExpectedPolicy(record["policy_hash"], record["ir_hash"],
                          _content_hash(record["policy"]), _content_hash(record["ir"]))


def load_policy_store(path):
    """ExpectedPolicy of every record of a cap-policy-store.v1 file, sorted by policy_hash.

    Structure is checked here (PolicyStoreError); whether each record's hashes match
    its content is a finding of the checks (store_policy_hash, store_ir_hash).
    """
    try:
        with open(path, "rb") as handle:
            doc = strict_json_loads(handle.read())
    except OSError as exc:
        raise PolicyStoreError("cannot read policy store %s: %s" % (path, exc.strerror or exc))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PolicyStoreError("policy store %s is not valid JSON: %s" % (path, exc))
    if not isinstance(doc, dict) or doc.get("version") != STORE_VERSION:
        raise PolicyStoreError("policy store %s is not a %s document" % (path, STORE_VERSION))
    policies = doc.get("policies")
    if not isinstance(policies, list):
        raise PolicyStoreError("policy store %s: 'policies' must be a list" % path)
    found = {}
    for index, record in enumerate(policies):
        where = "%s: policies[%d]" % (path, index)
        if not isinstance(record, dict) or set(record) != set(RECORD_KEYS):
            raise PolicyStoreError("%s must be an object with exactly the keys %s"
                                   % (where, ", ".join(RECORD_KEYS)))
        for key in ("policy_hash", "ir_hash"):
            if not is_prefixed_hash(record[key]):
                raise PolicyStoreError("%s.%s is not a 0x-prefixed SHA3-256 hash" % (where, key))
        if record["policy_hash"] in found:
            raise PolicyStoreError("%s: policy_hash %s appears twice" % (where, record["policy_hash"]))
        found[record["policy_hash"]] = expected_policy(record)
    return [found[h] for h in sorted(found)]


def read_token_file(path):
    """A bearer token from a file, surrounding white space stripped."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CapApiError("cannot read token file %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    if not token:
        raise CapApiError("token file %s is empty" % path)
    return token


def normalize_base_url(url):
    """The base URL without a trailing slash; CapApiError unless it is http(s)://host[...]."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CapApiError("url %r must be an http:// or https:// base URL, for example "
                          "https://cap-restore.example.com" % (url,))
    if parts.query or parts.fragment:
        raise CapApiError("url %s must not carry a query or fragment" % url)
    return url.rstrip("/")


# ---------------------------------------------------------------------------
# HTTP

class HttpResponse:
    """Status, lower-cased headers and body of one answer."""

    __slots__ = ("status", "headers", "body", "reason")

    def __init__(self, status, headers, body, reason=""):
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers.items() if headers else ())}
        self.body = body or b""
        self.reason = reason or ""

    def json(self):
        return strict_json_loads(self.body)

    def message(self):
        """A short description for reports: status plus the API's error message when there is one."""
        text = ""
        try:
            doc = self.json()
            if isinstance(doc, dict) and isinstance(doc.get("message"), str):
                text = doc["message"]
        except (UnicodeDecodeError, ValueError):
            text = ""
        described = "HTTP %d%s" % (self.status, " " + self.reason if self.reason else "")
        return ("%s: %s" % (described, text))[:MAX_MESSAGE] if text else described


class HttpSession:
    """Ansible's Request with settings shared by every request of a run.

    One TLS context is built up front (make_context, as open_url does per request), so
    thousands of requests do not each load the CA bundle. Redirects are not followed: a
    restored API answers its routes itself, and a bearer token must not follow a redirect.
    ~/.netrc is not consulted, since it would replace the bearer token.

    Request.open installs its opener process-wide before opening; threads sharing one
    session install equivalent openers, which is why every client of a run shares one.
    """

    def __init__(self, validate_certs=True, ca_path=None, timeout=DEFAULT_TIMEOUT, use_proxy=True):
        try:
            context = make_context(cafile=ca_path, validate_certs=validate_certs)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise CapApiError("cannot load CA certificates%s: %s"
                              % (" from %s" % ca_path if ca_path else "", exc))
        self.validate_certs = validate_certs
        self.timeout = timeout
        self._request = Request(use_proxy=use_proxy, timeout=timeout, validate_certs=validate_certs,
                                ca_path=ca_path, http_agent=USER_AGENT, follow_redirects="none",
                                use_netrc=False, context=context)

    def send(self, method, url, headers=None, body=None):
        """One request; an HttpResponse for every HTTP answer, TransportError when there is none."""
        try:
            response = self._request.open(method, url, data=body, headers=headers or {})
            try:
                return HttpResponse(response.status, response.headers, response.read(), response.reason)
            finally:
                response.close()
        except HTTPError as exc:
            try:
                data = exc.read()
            except (OSError, http.client.HTTPException):
                data = b""
            finally:
                exc.close()
            return HttpResponse(exc.code, exc.headers, data, exc.reason)
        except URLError as exc:
            raise TransportError("%s %s failed: %s%s" % (method, url, exc.reason, self._hint(exc.reason)))
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise TransportError("%s %s failed: %s" % (method, url, _describe(exc, self.timeout)))

    def _hint(self, reason):
        if isinstance(reason, ssl.SSLCertVerificationError) and self.validate_certs:
            return (" (give ca_path the CA that signed the server's certificate; "
                    "validate_certs: false only for a throwaway test target)")
        return ""


def _describe(exc, timeout):
    if isinstance(exc, TimeoutError):
        return "no answer within %s seconds" % timeout
    return str(exc) or type(exc).__name__


class ApiClient:
    """Requests to one API instance, authenticated with its bearer token."""

    def __init__(self, session, base_url, token):
        self.session = session
        self.base_url = normalize_base_url(base_url)
        self._token = token

    def url(self, path):
        return self.base_url + path

    def call(self, method, path, token=USE_TOKEN, headers=None, json_body=None):
        """token: USE_TOKEN for the client's own, None for no Authorization header, or another token."""
        sent = dict(headers or {})
        if token is USE_TOKEN:
            token = self._token
        if token is not None:
            sent["Authorization"] = "Bearer %s" % token
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            sent["Content-Type"] = "application/json"
        return self.session.send(method, self.url(path), sent, data)

    def policy_path(self, policy_hash):
        return "/api/v1/policy/%s" % quote(policy_hash, safe="")


# ---------------------------------------------------------------------------
# Evaluating answers (pure functions)

def _listed_hashes(hashes, limit=5):
    if not hashes:
        return ""
    more = len(hashes) - limit
    return " (%s%s)" % (", ".join(hashes[:limit]), ", and %d more" % more if more > 0 else "")


def _short(value):
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def _record_of(response):
    """(record, None) when a GET answer is a policy record, else (None, reason)."""
    try:
        doc = response.json()
    except (UnicodeDecodeError, ValueError) as exc:
        return None, "body is not JSON: %s" % exc
    if not isinstance(doc, dict):
        return None, "body is not a JSON object"
    missing = [k for k in RECORD_KEYS if k not in doc]
    if missing:
        return None, "body lacks %s" % ", ".join(missing)
    return doc, None


def evaluate_policy(expected, get, head, inm):
    """Differences between the backup's record of a policy and the target's answers.

    expected: ExpectedPolicy. get, head, inm: the HttpResponse (or TransportError) of
    GET, HEAD, and GET with If-None-Match of /api/v1/policy/<policy_hash>. Returns a
    list of (field, expected, actual); FIELD_ITEMS says which checklist item each fails.
    """
    diffs = []
    if expected.content_policy_hash != expected.policy_hash:
        diffs.append(("store_policy_hash", expected.policy_hash, expected.content_policy_hash))
    if expected.content_ir_hash != expected.ir_hash:
        diffs.append(("store_ir_hash", expected.ir_hash, expected.content_ir_hash))
    etag = etag_for(expected.policy_hash)
    if isinstance(get, Exception):
        diffs.append(("status", 200, "no answer: %s" % get))
        return diffs
    if get.status != 200:
        diffs.append(("status", 200, get.message()))
        return diffs
    record, problem = _record_of(get)
    if record is None:
        diffs.append(("body", "a policy record", problem))
    else:
        if record["policy_hash"] != expected.policy_hash:
            diffs.append(("policy_hash", expected.policy_hash, record["policy_hash"]))
        served_policy = _content_hash(record["policy"])
        if served_policy != expected.policy_hash:
            diffs.append(("content_policy_hash", expected.policy_hash, served_policy))
        if record["ir_hash"] != expected.ir_hash:
            diffs.append(("ir_hash", expected.ir_hash, record["ir_hash"]))
        served_ir = _content_hash(record["ir"])
        if served_ir != expected.ir_hash:
            diffs.append(("content_ir_hash", expected.ir_hash, served_ir))
    if get.headers.get("etag") != etag:
        diffs.append(("etag", etag, get.headers.get("etag")))
    if isinstance(head, Exception):
        diffs.append(("head_status", 200, "no answer: %s" % head))
    elif head.status != 200:
        diffs.append(("head_status", 200, head.message()))
    else:
        names = sorted((set(get.headers) | set(head.headers)) - VOLATILE_HEADERS)
        differing = [n for n in names if get.headers.get(n) != head.headers.get(n)]
        if differing:
            diffs.append(("head_headers", {n: get.headers.get(n) for n in differing},
                          {n: head.headers.get(n) for n in differing}))
    if isinstance(inm, Exception):
        diffs.append(("if_none_match", 304, "no answer: %s" % inm))
    elif inm.status != 304:
        diffs.append(("if_none_match", 304, inm.message()))
    elif inm.headers.get("etag") != etag:
        diffs.append(("if_none_match", "304 with etag %s" % etag, "304 with etag %s" % inm.headers.get("etag")))
    return diffs


def compare_answers(source, target):
    """Differences between the source's and the target's GET of the same policy.

    source, target: HttpResponse or TransportError. Returns (field, source value, target value)
    for status, policy_hash, ir_hash, etag, and the content hashes of policy and ir.
    """
    def status(answer):
        return "no answer: %s" % answer if isinstance(answer, Exception) else answer.status

    if status(source) != 200 or status(target) != 200:
        if status(source) == status(target):
            return []
        return [("status", status(source), status(target))]
    src, problem = _record_of(source)
    if src is None:
        return [("body", "a policy record from the source", problem)]
    tgt, problem = _record_of(target)
    if tgt is None:
        return [("body", "a policy record", problem)]
    diffs = []
    for field in ("policy_hash", "ir_hash"):
        if src[field] != tgt[field]:
            diffs.append((field, src[field], tgt[field]))
    if source.headers.get("etag") != target.headers.get("etag"):
        diffs.append(("etag", source.headers.get("etag"), target.headers.get("etag")))
    for field in ("policy", "ir"):
        a, b = _content_hash(src[field]), _content_hash(tgt[field])
        if a != b:
            diffs.append((field, a, b))
    return diffs


def readiness_problems(response):
    """(ok, detail) of a GET /readyz answer: 200, status OK, and all four checks OK."""
    try:
        doc = response.json()
    except (UnicodeDecodeError, ValueError):
        doc = None
    checks = doc.get("checks") if isinstance(doc, dict) else None
    if not isinstance(checks, list):
        return False, "%s; the body has no readiness checks" % response.message()
    by_name = {c.get("name"): c for c in checks if isinstance(c, dict)}
    failing = []
    for name in READINESS_CHECKS:
        check = by_name.get(name)
        if check is None:
            failing.append("%s missing from the answer" % name)
        elif check.get("status") != "OK":
            failing.append("%s %s (%s)" % (name, check.get("status"), check.get("reason") or "no reason given"))
    if response.status == 200 and doc.get("status") == "OK" and not failing:
        return True, "HTTP 200; %s OK" % ", ".join(READINESS_CHECKS)
    return False, "HTTP %d, status %s; failing: %s" % (response.status, doc.get("status"),
                                                      "; ".join(failing) or "none reported")


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def refused_token_probes(now=None):
    """(description, token) pairs an API must refuse with 401: none, malformed, forged, unsigned."""
    issued = int(time.time() if now is None else now)
    claims = _b64url(json.dumps({"sub": "cap-api-verify-probe", "aud": AUDIENCE, "iat": issued,
                                 "nbf": issued, "exp": issued + 300, "scope": "cap:read"},
                                sort_keys=True).encode("utf-8"))
    signing_input = "%s.%s" % (_b64url(b'{"alg":"HS256","typ":"JWT"}'), claims)
    # Signed with a random key nobody holds: only the signature check can refuse it.
    forged = "%s.%s" % (signing_input, _b64url(hmac.new(os.urandom(32), signing_input.encode("ascii"),
                                                         hashlib.sha256).digest()))
    unsigned = "%s.%s." % (_b64url(b'{"alg":"none","typ":"JWT"}'), claims)
    return (("no token", None), ("a malformed token", "not-a-jwt"),
            ("a token signed with another key", forged), ("an unsigned token (alg none)", unsigned))


# ---------------------------------------------------------------------------
# The checks

class ApiChecks:
    """Run checks against one instance and collect the checklist, differences and summary."""

    def __init__(self, client, policy_store=None, entries=None, compare_client=None,
                 compare_allow_newer=False,
                 workers=DEFAULT_WORKERS, check_mode=False, max_differences=MAX_DIFFERENCES):
        self.client = client
        self.compare_allow_newer = compare_allow_newer
        self.store = policy_store
        self.entries = entries or []
        self.compare_client = compare_client
        self.workers = max(1, workers)
        self.check_mode = check_mode
        self.max_differences = max_differences
        self.changed = False
        self.differences = []
        self.difference_totals = collections.Counter()
        self.summary = {}
        self._lock = threading.Lock()
        # (passed, detail) from every check that reads a policy back through /policy/:id
        self._retrieve = []
        self._retrieve_note = None
        self.items = collections.OrderedDict()
        for item_id, section, name in CHECKLIST:
            self.items[item_id] = {"id": item_id, "section": section, "name": name, "status": "skipped",
                                   "passed": False, "detail": "not requested"}

    # -- bookkeeping -----------------------------------------------------------

    def _set(self, item_id, passed, detail):
        self.items[item_id].update(status="passed" if passed else "failed", passed=bool(passed),
                                   detail=detail)

    def _skip(self, item_id, detail):
        self.items[item_id].update(status="skipped", passed=False, detail=detail)

    def _difference(self, check, kind, ident, field, expected, actual):
        with self._lock:
            self.difference_totals[check] += 1
            if len(self.differences) < self.max_differences:
                self.differences.append({"check": check, "kind": kind, "id": ident, "field": field,
                                         "expected": expected, "actual": actual})

    def _call(self, client, method, path, **kwargs):
        """(response, None) or (None, reason) for one request."""
        try:
            return client.call(method, path, **kwargs), None
        except TransportError as exc:
            return None, str(exc)

    def _counted_call(self, client, method, path, state, headers=None):
        """A request of a bulk loop: the answer or the TransportError, which is counted in state.

        state["aborted"] is set to the last error once MAX_CONSECUTIVE_ERRORS requests in a row
        got no answer, so a dead server does not cost a timeout for every remaining policy.
        """
        try:
            answer = client.call(method, path, headers=headers)
        except TransportError as exc:
            answer = exc
        with self._lock:
            if isinstance(answer, TransportError):
                state["errors_in_a_row"] += 1
                if state["errors_in_a_row"] >= MAX_CONSECUTIVE_ERRORS:
                    state["aborted"] = str(answer)
            else:
                state["errors_in_a_row"] = 0
        return answer

    def _listing(self, client):
        """(set of policy hashes, None) from GET /api/v1/policies, or (None, reason)."""
        response, error = self._call(client, "GET", "/api/v1/policies")
        if error:
            return None, error
        if response.status != 200:
            return None, "GET %s: %s" % (client.url("/api/v1/policies"), response.message())
        try:
            doc = response.json()
            hashes = doc["policy_hashes"]
            if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
                raise TypeError("policy_hashes is not a list of strings")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            return None, "GET %s: unexpected body: %s" % (client.url("/api/v1/policies"), exc)
        return set(hashes), None

    # -- runner ----------------------------------------------------------------

    def run(self, checks):
        """Run the named checks (a subset of CHECKS) in CHECKS order; returns the result dict."""
        started = time.monotonic()
        for name in CHECKS:
            if name in checks:
                getattr(self, "check_%s" % name)()
        self._finish_retrieve(checks)
        items = list(self.items.values())
        passed = sum(1 for i in items if i["status"] == "passed")
        failed = sum(1 for i in items if i["status"] == "failed")
        self.summary.update({
            "checks_passed": passed,
            "checks_failed": failed,
            "checks_skipped": len(items) - passed - failed,
            "checks_total": passed + failed,
            "differences_total": sum(self.difference_totals.values()),
            "differences_by_check": dict(self.difference_totals),
            "duration_seconds": round(time.monotonic() - started, 3),
        })
        self.summary.setdefault("policies_total", len(self.store) if self.store is not None else 0)
        self.summary.setdefault("policies_checked", 0)
        self.summary.setdefault("policies_matched", 0)
        total = self.summary["policies_total"]
        self.summary["hash_verification_ratio"] = (
            round(self.summary["policies_matched"] / total, 6) if total else 0.0)
        return {
            "checks": items,
            "passed": failed == 0,
            "failed_checks": [i["name"] for i in items if i["status"] == "failed"],
            "summary": self.summary,
            "differences": self.differences,
            "differences_total": self.summary["differences_total"],
            "policies_checked": self.summary["policies_checked"],
            "smoke_test_policy_hash": SMOKE_TEST_POLICY_HASH,
            "changed": self.changed,
        }

    # -- Test 1 and 2 ----------------------------------------------------------

    def check_health(self):
        response, error = self._call(self.client, "GET", "/healthz", token=None)
        if error:
            return self._set("health", False, error)
        try:
            doc = response.json()
        except (UnicodeDecodeError, ValueError):
            doc = None
        if response.status != 200:
            return self._set("health", False, "GET /healthz: %s" % response.message())
        if not isinstance(doc, dict) or doc.get("status") != "OK" or not {"version", "build_hash"} <= set(doc):
            return self._set("health", False, "HTTP 200 but the body is not "
                             '{"status": "OK", "version": ..., "build_hash": ...}: %s'
                             % _short(response.body.decode("utf-8", "replace")))
        self.summary["api_version"] = doc["version"]
        self._set("health", True, "HTTP 200, status OK, version %s, build_hash %s"
                  % (doc["version"], json.dumps(doc["build_hash"])))

    def check_ready(self):
        response, error = self._call(self.client, "GET", "/readyz")
        if error:
            return self._set("ready", False, error)
        ok, detail = readiness_problems(response)
        self._set("ready", ok, detail)

    # -- authentication --------------------------------------------------------

    def check_auth(self):
        problems = []
        probes = 0
        for path in ("/readyz", "/api/v1/policies"):
            for description, token in refused_token_probes():
                probes += 1
                response, error = self._call(self.client, "GET", path, token=token)
                if error:
                    problems.append("GET %s with %s: %s" % (path, description, error))
                elif response.status != 401:
                    problems.append("GET %s with %s: expected 401, got %s" % (path, description,
                                                                              response.message()))
        response, error = self._call(self.client, "GET", "/api/v1/policies")
        if error:
            problems.append("GET /api/v1/policies with the given token: %s" % error)
        elif response.status != 200:
            problems.append("the given token is refused: GET /api/v1/policies answered %s"
                            % response.message())
        if problems:
            return self._set("auth", False, "; ".join(problems))
        self._set("auth", True, "%d requests without a valid token (none, malformed, forged, alg none) "
                  "to /readyz and /api/v1/policies answered 401; the given token is accepted" % probes)

    # -- Test 3 and 4, for every policy ----------------------------------------

    def _fetch_policy(self, expected, state):
        """GET, HEAD and conditional GET of one policy, evaluated; None when the run was aborted."""
        if state["aborted"]:
            return None
        path = self.client.policy_path(expected.policy_hash)
        answers = [self._counted_call(self.client, method, path, state, headers=headers)
                   for method, headers in (("GET", None), ("HEAD", None),
                                           ("GET", {"If-None-Match": etag_for(expected.policy_hash)}))]
        get = answers[0]
        retrieved = not isinstance(get, Exception) and get.status == 200 and _record_of(get)[0] is not None
        return evaluate_policy(expected, *answers), retrieved

    def check_policies(self):
        store = self.store
        hash_items = ("policy_hash", "ir_hash", "etag")
        if not store:
            for item_id in ("policy_store_loaded",) + hash_items:
                self._set(item_id, False, "the backup's policy store holds no policies")
            self._retrieve_note = "no policy to retrieve: the backup's policy store holds no policies"
            return
        listed, error = self._listing(self.client)
        if error:
            for item_id in ("policy_store_loaded",) + hash_items:
                self._set(item_id, False, "cannot list the target's policies: %s" % error)
            self._retrieve.append((False, "cannot list the target's policies: %s" % error))
            return
        expected_hashes = {e.policy_hash for e in store}
        missing = sorted(expected_hashes - listed)
        extra = sorted(listed - expected_hashes - {SMOKE_TEST_POLICY_HASH})
        for h in missing:
            self._difference("policies", "policy", h, "listed", "present", "missing")
        for h in extra:
            self._difference("policies", "policy", h, "listed", "absent", "present")

        state = {"aborted": None, "errors_in_a_row": 0}
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.workers) as pool:
            outcomes = list(pool.map(lambda e: self._fetch_policy(e, state), store))
        # item id -> {policy_hash: first finding} for the hash items
        findings = {item_id: collections.OrderedDict() for item_id in hash_items}
        checked = matched = retrieved = listed_checked = 0
        for expected, outcome in zip(store, outcomes):
            if outcome is None:
                continue
            diffs, ok_record = outcome
            checked += 1
            is_listed = expected.policy_hash in listed
            if is_listed:
                listed_checked += 1
                retrieved += 1 if ok_record else 0
                matched += 0 if diffs else 1
            for field, want, got in diffs:
                self._difference("policies", "policy", expected.policy_hash, field, want, got)
                for item_id in FIELD_ITEMS[field]:
                    if item_id in findings:
                        findings[item_id].setdefault(expected.policy_hash, "%s %s: expected %s, got %s" % (
                            expected.policy_hash, field, _short(want), _short(got)))
        total = len(store)
        self.summary.update(policies_total=total, policies_checked=checked, policies_matched=matched)
        aborted = ""
        if state["aborted"]:
            aborted = ("; stopped after %d connection errors in a row (%s), %d of %d policies checked"
                       % (MAX_CONSECUTIVE_ERRORS, state["aborted"], checked, total))

        if missing or extra:
            self._set("policy_store_loaded", False,
                      "the API lists %d policies: %d of the backup's %d missing%s, %d not in the backup%s"
                      % (len(listed), len(missing), total, _listed_hashes(missing), len(extra),
                         _listed_hashes(extra)))
        else:
            self._set("policy_store_loaded", True, "the API lists all %d policies of the backup and no others%s"
                      % (total, " (besides the compile smoke-test policy)"
                         if SMOKE_TEST_POLICY_HASH in listed else ""))
        what = {
            "policy_hash": "policy_hash equal to the backup's and to SHA3-256 of the served policy",
            "ir_hash": "ir_hash equal to the backup's and to SHA3-256 of the served IR",
            "etag": "ETag equal to the first 16 hex digits of policy_hash on GET, the same headers "
                    "on HEAD, 304 for If-None-Match",
        }
        for item_id in hash_items:
            found = findings[item_id]
            if found or aborted:
                self._set(item_id, False, "%d of %d policies differ%s%s"
                          % (len(found), total, "; first: " + "; ".join(list(found.values())[:3])
                             if found else "", aborted))
            else:
                self._set(item_id, True, "%d of %d policies: %s" % (checked, total, what[item_id]))
        if listed_checked:
            self._retrieve.append((retrieved == listed_checked and not aborted,
                                   "GET /api/v1/policy/:id answered a policy record for %d of the %d "
                                   "listed policies of the backup%s" % (retrieved, listed_checked, aborted)))
        else:
            self._retrieve.append((False, "none of the backup's policies is listed by the target, "
                                          "so none could be retrieved%s" % aborted))

    # -- live comparison with the source ----------------------------------------

    def check_compare(self):
        source = self.compare_client
        src_listed, error = self._listing(source)
        if error:
            return self._set("compare", False, "cannot list the source's policies: %s" % error)
        tgt_listed, error = self._listing(self.client)
        if error:
            return self._set("compare", False, "cannot list the target's policies: %s" % error)
        src_listed.discard(SMOKE_TEST_POLICY_HASH)
        tgt_listed.discard(SMOKE_TEST_POLICY_HASH)
        only_source = sorted(src_listed - tgt_listed)
        only_target = sorted(tgt_listed - src_listed)
        # A live source may have compiled policies after the backup was taken (the RPO gap).
        newer = only_source if self.compare_allow_newer else []
        if newer:
            only_source = []
        for h in only_source:
            self._difference("compare", "policy", h, "listed", "present", "missing")
        for h in only_target:
            self._difference("compare", "policy", h, "listed", "absent", "present")
        common = sorted(src_listed & tgt_listed)
        state = {"aborted": None, "errors_in_a_row": 0}

        def fetch(policy_hash):
            if state["aborted"]:
                return None
            return compare_answers(*[self._counted_call(client, "GET", client.policy_path(policy_hash), state)
                                     for client in (source, self.client)])

        with concurrent.futures.ThreadPoolExecutor(max_workers=self.workers) as pool:
            outcomes = list(pool.map(fetch, common))
        checked = matched = 0
        differing = []
        for policy_hash, diffs in zip(common, outcomes):
            if diffs is None:
                continue
            checked += 1
            if not diffs:
                matched += 1
                continue
            differing.append(policy_hash)
            for field, want, got in diffs:
                self._difference("compare", "policy", policy_hash, field, want, got)
        self.summary.update(compare_policies_source=len(src_listed), compare_policies_target=len(tgt_listed),
                            compare_policies_checked=checked, compare_policies_matched=matched,
                            compare_policies_newer_on_source=len(newer))
        problems = []
        if only_source:
            problems.append("%d only on the source (%s)" % (len(only_source), ", ".join(only_source[:5])))
        if only_target:
            problems.append("%d only on the target (%s)" % (len(only_target), ", ".join(only_target[:5])))
        if differing:
            problems.append("%d differ (%s)" % (len(differing), ", ".join(differing[:5])))
        if state["aborted"]:
            problems.append("stopped after %d connection errors in a row (%s), %d of %d compared"
                            % (MAX_CONSECUTIVE_ERRORS, state["aborted"], checked, len(common)))
        if problems:
            return self._set("compare", False, "source %s and target: %s"
                             % (source.base_url, "; ".join(problems)))
        self._set("compare", True, "all %d policies of the source %s have the same policy_hash, ir_hash, "
                  "ETag and content on the target%s" % (
                      matched, source.base_url,
                      "; %d newer on the source than the backup" % len(newer) if newer else ""))

    # -- /verify ---------------------------------------------------------------

    def check_verify(self):
        problems = []
        valid = 0
        for entry in self.entries:
            manifest_hash = entry.get("manifest_hash")
            body = {"manifest_hash": manifest_hash}
            if entry.get("proof_hash") is not None:
                body["proof_hash"] = entry["proof_hash"]
            response, error = self._call(self.client, "POST", "/api/v1/verify", json_body=body)
            if error:
                problem = error
            elif response.status != 200:
                problem = response.message()
            else:
                problem = self._verify_answer(entry, response)
            if problem:
                problems.append("%s: %s" % (manifest_hash, problem))
                self._difference("verify", "entry", manifest_hash, "valid", True, problem)
            else:
                valid += 1
        self.summary.update(entries_checked=len(self.entries), entries_valid=valid)
        if problems:
            return self._set("verify", False, "%d of %d entries fail POST /api/v1/verify; first: %s"
                             % (len(problems), len(self.entries), "; ".join(problems[:3])))
        self._set("verify", True, "POST /api/v1/verify: all %d entries valid, with their proof_hash%s"
                  % (valid, " and kid" if all(e.get("kid") for e in self.entries) else ""))

    @staticmethod
    def _verify_answer(entry, response):
        try:
            doc = response.json()
        except (UnicodeDecodeError, ValueError):
            return "HTTP 200 with a body that is not JSON"
        if not isinstance(doc, dict):
            return "HTTP 200 with a body that is not a JSON object"
        if doc.get("valid") is not True:
            return "valid is %s (%s)" % (json.dumps(doc.get("valid")), doc.get("reason") or "no reason given")
        for field in ("manifest_hash", "proof_hash", "kid"):
            if entry.get(field) is not None and doc.get(field) != entry[field]:
                return "%s is %s, expected %s" % (field, doc.get(field), entry[field])
        return None

    # -- /policy/compile ---------------------------------------------------------

    def check_compile(self):
        if self.check_mode:
            self._skip("compile", "check mode: compile stores the smoke-test policy in the target, so it was not run")
            return
        path = "/api/v1/policy/compile"
        response, error = self._call(self.client, "POST", path, json_body=SMOKE_TEST_POLICY)
        if error:
            return self._set("compile", False, error)
        if response.status not in (200, 201):
            return self._set("compile", False, "POST %s: %s" % (path, response.message()))
        try:
            doc = response.json()
        except (UnicodeDecodeError, ValueError):
            doc = None
        if not isinstance(doc, dict):
            return self._set("compile", False, "POST %s answered %d with a body that is not a JSON object"
                             % (path, response.status))
        created = response.status == 201 or doc.get("created") is True
        self.changed = self.changed or created
        problems = []
        if doc.get("policy_hash") != SMOKE_TEST_POLICY_HASH:
            problems.append("policy_hash is %s, SHA3-256 of the policy is %s"
                            % (doc.get("policy_hash"), SMOKE_TEST_POLICY_HASH))
        if response.headers.get("etag") != etag_for(SMOKE_TEST_POLICY_HASH):
            problems.append("etag is %s, expected %s" % (response.headers.get("etag"),
                                                         etag_for(SMOKE_TEST_POLICY_HASH)))
        readback = self._read_back_smoke_test(doc.get("ir_hash"))
        if readback is None:
            self._retrieve.append((True, "GET /api/v1/policy/%s returned the compiled smoke-test policy"
                                   % SMOKE_TEST_POLICY_HASH))
        else:
            problems.append("reading it back: %s" % readback)
            self._retrieve.append((False, "GET of the compiled smoke-test policy failed: %s" % readback))
        if problems:
            return self._set("compile", False, "POST %s answered %d, but %s" % (path, response.status,
                                                                               "; ".join(problems)))
        self._set("compile", True, "POST %s answered %d (%s), policy_hash %s equals SHA3-256 of the "
                  "smoke-test policy" % (path, response.status,
                                         "created" if created else "already stored", SMOKE_TEST_POLICY_HASH))

    def _read_back_smoke_test(self, compiled_ir_hash):
        """None when GET returns the compiled smoke-test policy and its IR, else the problem."""
        back, error = self._call(self.client, "GET", self.client.policy_path(SMOKE_TEST_POLICY_HASH))
        if error:
            return error
        if back.status != 200:
            return back.message()
        record, problem = _record_of(back)
        if record is None:
            return problem
        if (record["policy_hash"] != SMOKE_TEST_POLICY_HASH
                or _content_hash(record["policy"]) != SMOKE_TEST_POLICY_HASH):
            return "the stored policy is not the one compiled"
        if record["ir_hash"] != compiled_ir_hash or _content_hash(record["ir"]) != record["ir_hash"]:
            return ("ir_hash %s differs from the compile answer's %s or from SHA3-256 of the IR"
                    % (record["ir_hash"], compiled_ir_hash))
        return None

    def _finish_retrieve(self, checks):
        if self._retrieve:
            self._set("retrieve", all(ok for ok, _ in self._retrieve), "; ".join(d for _, d in self._retrieve))
        elif self._retrieve_note:
            self._skip("retrieve", self._retrieve_note)
        elif "compile" in checks and self.check_mode:
            self._skip("retrieve", "check mode: the compiled policy was not read back because compile "
                                   "did not run, and policies was not requested")
