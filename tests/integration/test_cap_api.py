"""The CAP Verifier API stand-in, run as `python -m sandbox.cap_api` on free ports in tmp dirs.

Every instance here is started by the test that needs it, on a seeded (or empty)
temporary data directory, and stopped by its PID in teardown.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import sandbox  # noqa: F401
from ansible.module_utils.cap_hashing import canonical_json_bytes, sha3_bytes, sha3_canonical
from ansible.module_utils.cap_keys import load_key_tree
from sandbox import auth
from sandbox.policy import compile_policy, make_record
from sandbox.registry import verify_entry
from sandbox.seed import seed_instance

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"integration-secret-for-the-cap-stand-in"
START_TIMEOUT = 20.0

NEW_POLICY = {
    "schema": "cap-policy.v1",
    "id": "packaging-recycled-content",
    "name": "Packaging recycled content",
    "version": "1.0.0",
    "legal_basis": ["Regulation (EU) 2025/40 Art. 7"],
    "jurisdiction": "EU",
    "rules": [
        {"id": "recycled-share", "op": ">=", "field": "packaging.recycled_content_pct", "value": 30},
        {"id": "material", "op": "in", "field": "packaging.material", "values": ["pet", "hdpe", "pp"]},
    ],
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bearer(token):
    return {"Authorization": "Bearer %s" % token}


class Instance:
    """One running API process and an HTTP session bound to it."""

    def __init__(self, data_dir, secret_file, proc, port):
        self.data_dir = Path(data_dir)
        self.secret_file = secret_file
        self.proc = proc
        self.port = port
        self.base = "http://127.0.0.1:%d" % port
        self.token = auth.mint_token(SECRET)
        self.session = requests.Session()

    def url(self, path):
        return self.base + path

    def get(self, path, token=True, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers.update(bearer(self.token if token is True else token))
        return self.session.get(self.url(path), headers=headers, timeout=30, **kwargs)

    def head(self, path, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        headers.update(bearer(self.token))
        return self.session.head(self.url(path), headers=headers, timeout=30, **kwargs)

    def post(self, path, body=None, data=None, token=True, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        headers["Content-Type"] = "application/json"
        if token:
            headers.update(bearer(self.token if token is True else token))
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        return self.session.post(self.url(path), data=data, headers=headers, timeout=60, **kwargs)

    def stop(self):
        self.session.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def start_instance(data_dir, secret_file, extra=()):
    """Start an instance and wait for /healthz; retries when the picked port was taken."""
    last_error = ""
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cap_api", "--data-dir", str(data_dir), "--port", str(port),
             "--jwt-secret-file", str(secret_file)] + list(extra),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = proc.stderr.read().decode("utf-8", "replace")
                proc.stdout.close()
                proc.stderr.close()
                break
            try:
                if requests.get("http://127.0.0.1:%d/healthz" % port, timeout=1).status_code == 200:
                    return Instance(data_dir, secret_file, proc, port)
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        else:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("instance on %s did not answer /healthz in time" % data_dir)
    raise AssertionError("instance on %s did not start: %s" % (data_dir, last_error))


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "jwt.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def seeded_dir(tmp_path_factory):
    """A pristine seeded data directory; tests copy it rather than change it."""
    data_dir = tmp_path_factory.mktemp("seeded") / "app"
    summary = seed_instance(str(data_dir), seed=7, policies=30, entries=300)
    return data_dir, summary


@pytest.fixture
def launch(secret_file):
    """launch(data_dir, *extra_args) -> Instance; every instance is stopped by PID afterwards."""
    started = []

    def _launch(data_dir, *extra):
        instance = start_instance(data_dir, secret_file, extra)
        started.append(instance)
        return instance

    yield _launch
    for instance in started:
        instance.stop()


@pytest.fixture(scope="module")
def api(seeded_dir, secret_file, tmp_path_factory):
    """A read-only view: one instance on a copy of the seeded directory for the whole module."""
    data_dir = tmp_path_factory.mktemp("shared") / "app"
    shutil.copytree(seeded_dir[0], data_dir)
    instance = start_instance(data_dir, secret_file)
    yield instance
    instance.stop()


@pytest.fixture
def copy_of_seeded(seeded_dir, tmp_path):
    data_dir = tmp_path / "app"
    shutil.copytree(seeded_dir[0], data_dir)
    return data_dir


def registry_rows(path):
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM registry_entries ORDER BY id")]
    finally:
        conn.close()


def etag_of(policy_hash):
    return '"%s"' % policy_hash[2:18]


# ---------------------------------------------------------------------------
# Probes

def test_healthz_answers_the_runbook_shape_without_a_token(api):
    response = requests.get(api.url("/healthz"), timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "OK", "version": "0.11.0", "build_hash": None}


def test_readyz_is_ok_on_a_seeded_instance(api):
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "OK", "checks": [
        {"name": "verifier_core", "status": "OK"},
        {"name": "crypto", "status": "OK"},
        {"name": "registry", "status": "OK"},
        {"name": "policy_store", "status": "OK"},
    ]}


def test_empty_instance_is_alive_and_reports_what_is_missing(launch, tmp_path):
    instance = launch(tmp_path / "empty")
    assert instance.get("/healthz", token=False).json()["status"] == "OK"
    response = instance.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "FAIL"
    checks = {c["name"]: c for c in body["checks"]}
    assert [c["name"] for c in body["checks"]] == ["verifier_core", "crypto", "registry", "policy_store"]
    assert checks["verifier_core"] == {"name": "verifier_core", "status": "OK"}
    for name in ("crypto", "registry", "policy_store"):
        assert checks[name]["status"] == "FAIL"
        assert checks[name]["reason"]
    assert "company.ed25519" in checks["crypto"]["reason"]
    assert instance.get("/api/v1/policies").json() == {"count": 0, "policy_hashes": []}
    export = instance.get("/api/v1/policy/export")
    assert export.content == b'{"policies":[],"version":"cap-policy-store.v1"}\n'


def test_metrics_report_requests_store_registry_and_readiness(api):
    api.get("/api/v1/policies")
    api.get("/api/v1/policy/0x" + "0" * 64)
    text = requests.get(api.url("/metrics"), timeout=10).text
    assert "cap_api_policies_in_store 30" in text
    assert "cap_api_registry_entries 300" in text
    assert "cap_api_ready 1" in text
    for check in ("verifier_core", "crypto", "registry", "policy_store"):
        assert 'cap_api_readiness_check{check="%s"} 1' % check in text
    assert 'cap_api_requests_total{route="/api/v1/policies",method="GET",code="200"}' in text
    assert 'cap_api_requests_total{route="/api/v1/policy/{policy_hash}",method="GET",code="404"}' in text
    assert "# TYPE cap_api_requests_total counter" in text


# ---------------------------------------------------------------------------
# Authentication and request errors

def _tokens(now):
    good = {"sub": "cap-sre", "aud": auth.AUDIENCE, "iat": now, "exp": now + 600, "scope": auth.DEFAULT_SCOPE}
    unsigned = "%s.%s." % (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode(),
        base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=").decode())
    return {
        "bad-signature": auth.encode(good, b"another-secret-of-enough-length"),
        "expired": auth.encode(dict(good, iat=now - 7200, exp=now - 3600), SECRET),
        "alg-none": unsigned,
        "alg-none-signed": auth.encode(good, SECRET, header={"alg": "none", "typ": "JWT"}),
        "alg-hs512": auth.encode(good, SECRET, header={"alg": "HS512", "typ": "JWT"}),
        "wrong-audience": auth.encode(dict(good, aud="someone-else"), SECRET),
        "no-audience": auth.encode({k: v for k, v in good.items() if k != "aud"}, SECRET),
        "no-exp": auth.encode({k: v for k, v in good.items() if k != "exp"}, SECRET),
        "not-yet-valid": auth.encode(dict(good, nbf=now + 3600), SECRET),
        "issued-in-future": auth.encode(dict(good, iat=now + 3600), SECRET),
        "garbage": "not-a-jwt",
        "two-parts": "abc.def",
        "bad-base64": "!!!.###.$$$",
        "json-array-header": "%s.%s.sig" % (base64.urlsafe_b64encode(b"[1]").rstrip(b"=").decode(),
                                            base64.urlsafe_b64encode(b"{}").rstrip(b"=").decode()),
    }


AUTH_ROUTES = [("GET", "/readyz"), ("GET", "/api/v1/policies"), ("GET", "/api/v1/policy/export"),
               ("GET", "/api/v1/policy/0x" + "a" * 64), ("POST", "/api/v1/policy/compile"),
               ("POST", "/api/v1/policy/restore"), ("POST", "/api/v1/verify")]


@pytest.mark.parametrize("case", sorted(_tokens(0)))
def test_bad_tokens_get_401_never_500(api, case):
    token = _tokens(int(time.time()))[case]
    for method, path in AUTH_ROUTES:
        response = api.session.request(method, api.url(path), headers=bearer(token),
                                       data=b"{}" if method == "POST" else None, timeout=10)
        assert response.status_code == 401, (case, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_or_malformed_authorization_gets_401(api, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in AUTH_ROUTES:
        response = api.session.request(method, api.url(path), headers=headers,
                                       data=b"{}" if method == "POST" else None, timeout=10)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "message" in response.json()


def test_token_without_the_scope_gets_403(api):
    read_only = auth.mint_token(SECRET, scope="cap:read")
    assert api.get("/api/v1/policies", token=read_only).status_code == 200
    response = api.post("/api/v1/policy/restore", body={"version": "cap-policy-store.v1", "policies": []},
                        token=read_only)
    assert response.status_code == 403
    assert 'scope="cap:restore"' in response.headers["www-authenticate"]
    assert api.post("/api/v1/policy/compile", body=NEW_POLICY, token=read_only).status_code == 403


def test_unknown_routes_404_and_wrong_methods_405(api):
    assert api.get("/api/v2/policies").status_code == 404
    assert api.get("/").status_code == 404
    assert requests.get(api.url("/nowhere"), timeout=10).json()["error"] == "not_found"
    response = api.get("/api/v1/policy/compile")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    response = api.session.post(api.url("/healthz"), timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert api.session.delete(api.url("/api/v1/policies"), headers=bearer(api.token),
                              timeout=10).status_code == 405
    assert api.session.put(api.url("/api/v1/verify"), headers=bearer(api.token),
                           timeout=10).status_code == 405


@pytest.mark.parametrize("path", ["/api/v1/policy/compile", "/api/v1/policy/restore", "/api/v1/verify"])
@pytest.mark.parametrize("data", [b"", b"{", b"not json", b'{"a": 1, "a": 2}', b'{"x": NaN}',
                                  b"\xff\xfe{}", b'{"x": Infinity}', b"[" * 50000 + b"]" * 50000])
def test_malformed_json_bodies_get_400(api, path, data):
    response = api.post(path, data=data)
    assert response.status_code == 400, response.text
    assert response.json()["message"]


# ---------------------------------------------------------------------------
# Policies

def test_policy_list_matches_the_seeded_store(api, seeded_dir):
    body = api.get("/api/v1/policies").json()
    assert body["count"] == 30
    assert body["policy_hashes"] == sorted(body["policy_hashes"])
    assert body["policy_hashes"] == seeded_dir[1]["policy_hashes"]


def test_get_policy_returns_a_self_consistent_record(api):
    for policy_hash in api.get("/api/v1/policies").json()["policy_hashes"]:
        response = api.get("/api/v1/policy/" + policy_hash)
        assert response.status_code == 200
        record = response.json()
        assert set(record) == {"policy_hash", "ir_hash", "policy", "ir"}
        assert record["policy_hash"] == policy_hash == sha3_canonical(record["policy"])
        assert record["ir_hash"] == sha3_canonical(record["ir"])
        assert record["ir"] == compile_policy(record["policy"])
        assert response.headers["etag"] == etag_of(policy_hash)


def test_etag_is_the_first_16_hex_of_the_policy_hash_and_if_none_match_gives_304(api):
    policy_hash = api.get("/api/v1/policies").json()["policy_hashes"][3]
    etag = '"%s"' % policy_hash[2:18]
    assert api.get("/api/v1/policy/" + policy_hash).headers["etag"] == etag
    for header in (etag, "W/" + etag, '"ffff", ' + etag, "*"):
        response = api.get("/api/v1/policy/" + policy_hash, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert api.get("/api/v1/policy/" + policy_hash,
                   headers={"If-None-Match": '"0000000000000000"'}).status_code == 200


def test_head_has_exactly_the_headers_of_get_and_no_body(api):
    policy_hash = api.get("/api/v1/policies").json()["policy_hashes"][0]
    get = api.get("/api/v1/policy/" + policy_hash)
    head = api.head("/api/v1/policy/" + policy_hash)
    assert head.status_code == 200
    assert head.content == b""

    def comparable(headers):
        return {k.lower(): v for k, v in headers.items() if k.lower() != "date"}

    assert comparable(head.headers) == comparable(get.headers)
    assert int(head.headers["content-length"]) == len(get.content)
    assert api.head("/api/v1/policy/0x" + "1" * 64).status_code == 404
    assert api.head("/api/v1/policy/nothex").status_code == 400


@pytest.mark.parametrize("bad", ["abc", "0x123", "0x" + "A" * 64, "0x" + "g" * 64, "1x" + "0" * 64,
                                 "0x" + "0" * 65])
def test_malformed_policy_hash_gets_400(api, bad):
    response = api.get("/api/v1/policy/" + bad)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_policy_hash"


def test_unknown_policy_gets_404(api):
    response = api.get("/api/v1/policy/0x" + "e" * 64)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_compile_stores_the_policy_in_store_and_registry(launch, copy_of_seeded):
    instance = launch(copy_of_seeded)
    expected = make_record(NEW_POLICY)
    first = instance.post("/api/v1/policy/compile", body=NEW_POLICY)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["policy_hash"] == expected["policy_hash"]
    assert body["ir_hash"] == expected["ir_hash"]
    assert body["created"] is True and body["registry"] == "inserted"
    assert first.headers["etag"] == etag_of(expected["policy_hash"])
    again = instance.post("/api/v1/policy/compile", body=NEW_POLICY)
    assert again.status_code == 200
    assert again.json()["created"] is False and again.json()["registry"] == "present"
    listing = instance.get("/api/v1/policies").json()
    assert listing["count"] == 31 and expected["policy_hash"] in listing["policy_hashes"]
    record = instance.get("/api/v1/policy/" + expected["policy_hash"]).json()
    assert record == json.loads(canonical_json_bytes(expected))
    conn = sqlite3.connect(str(copy_of_seeded / "build" / "registry.sqlite"))
    row = conn.execute("SELECT ir_hash, policy_json FROM policies WHERE policy_hash = ?",
                       (expected["policy_hash"],)).fetchone()
    conn.close()
    assert row[0] == expected["ir_hash"]
    assert sha3_bytes(row[1]) == expected["policy_hash"]
    export = instance.get("/api/v1/policy/export")
    assert export.content == (copy_of_seeded / "build" / "policy_store.json").read_bytes()


@pytest.mark.parametrize("mutate, fragment", [
    (lambda p: p["rules"][0].update(value=1.5), "floats are not allowed"),
    (lambda p: p["rules"][0].update(op="approximately"), "unknown operator"),
    (lambda p: p.pop("rules"), "missing required key 'rules'"),
    (lambda p: p.update(rules=[]), "non-empty list"),
    (lambda p: p["rules"].append(dict(p["rules"][0])), "appears twice"),
    (lambda p: p["rules"].append({"id": "r", "op": "range", "field": "a.b", "min": 5, "max": 1}),
     "greater than max"),
    (lambda p: p.update(schema="cap-policy.v0"), "$.schema"),
    (lambda p: p.update(version="1.0"), "$.version"),
    (lambda p: p.update(surprise=True), "unknown key 'surprise'"),
    (lambda p: p["rules"][1].update(values=["pet", "pet"]), "appears twice"),
    (lambda p: p["rules"][0].update(field="Packaging Share"), "$.rules[0].field"),
    (lambda p: p["rules"][0].update(value=True), "$.rules[0].value"),
])
def test_compile_refuses_invalid_policies_with_400(api, mutate, fragment):
    policy = json.loads(json.dumps(NEW_POLICY))
    mutate(policy)
    response = api.post("/api/v1/policy/compile", body=policy)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_policy"
    assert fragment in response.json()["message"]


def test_compile_of_a_non_object_gets_400(api):
    for body in ([1, 2], "policy", 42):
        assert api.post("/api/v1/policy/compile", body=body).status_code == 400


def test_deeply_nested_documents_get_400_not_500(api):
    deep = b'{"a":' * 900 + b"1" + b"}" * 900
    for path in ("/api/v1/policy/compile", "/api/v1/policy/restore", "/api/v1/verify"):
        response = api.post(path, data=deep)
        assert response.status_code == 400, (path, response.text)
    store = json.loads(api.get("/api/v1/policy/export").content)
    store["policies"][0]["policy"]["description"] = json.loads(deep)
    response = api.post("/api/v1/policy/restore", body=None,
                        data=json.dumps(store).encode("utf-8"))
    assert response.status_code in (400, 409), response.text
    assert api.get("/api/v1/policies").json()["count"] == 30


# ---------------------------------------------------------------------------
# Export and restore

def test_export_is_exactly_the_persisted_store(api, seeded_dir):
    response = api.get("/api/v1/policy/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == (seeded_dir[0] / "build" / "policy_store.json").read_bytes()
    assert response.headers["x-policy-store-sha3-256"] == sha3_bytes(response.content)
    assert response.headers["x-policy-store-sha3-256"] == seeded_dir[1]["policy_store_sha3_256"]
    assert response.headers["x-policy-count"] == "30"


def _tamper(doc, index, how):
    record = doc["policies"][index]
    if how == "policy":
        record["policy"]["rules"][0]["description"] = "quietly changed"
    elif how == "ir":
        record["ir"]["rule_count"] += 1
    elif how == "ir_hash":
        record["ir_hash"] = "0x" + "0" * 64
    elif how == "policy_hash":
        record["policy_hash"] = "0x" + "1" * 64
    elif how == "ir_and_ir_hash":
        record["ir"]["combine"] = "any"
        record["ir_hash"] = sha3_canonical(record["ir"])
    return record["policy_hash"]


@pytest.mark.parametrize("how", ["policy", "ir", "ir_hash", "policy_hash", "ir_and_ir_hash"])
def test_restore_refuses_a_tampered_snapshot_and_keeps_the_store(launch, copy_of_seeded, how):
    instance = launch(copy_of_seeded)
    before = instance.get("/api/v1/policy/export").content
    doc = json.loads(before)
    victim_hash = doc["policies"][4]["policy_hash"]
    original = instance.get("/api/v1/policy/" + victim_hash).json()
    named = _tamper(doc, 4, how)
    response = instance.post("/api/v1/policy/restore", body=doc)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "integrity_mismatch"
    assert response.json()["policy_hash"] == named
    assert named in response.json()["message"]
    assert instance.get("/api/v1/policy/export").content == before
    assert (copy_of_seeded / "build" / "policy_store.json").read_bytes() == before
    after = instance.get("/api/v1/policy/" + victim_hash)
    assert after.status_code == 200 and after.json() == original
    assert instance.get("/api/v1/policies").json()["count"] == 30


@pytest.mark.parametrize("doc", [
    {"version": "cap-policy-store.v0", "policies": []},
    {"version": "cap-policy-store.v1"},
    {"version": "cap-policy-store.v1", "policies": {}},
    {"version": "cap-policy-store.v1", "policies": [{"policy_hash": "0x00"}]},
    [],
])
def test_restore_refuses_malformed_store_documents_with_400(api, doc):
    response = api.post("/api/v1/policy/restore", body=doc)
    assert response.status_code == 400, response.text
    assert api.get("/api/v1/policies").json()["count"] == 30


def test_restore_into_an_empty_instance_reproduces_hashes_and_etags(api, launch, tmp_path):
    snapshot = api.get("/api/v1/policy/export").content
    target = launch(tmp_path / "restore-target")
    response = target.post("/api/v1/policy/restore", data=snapshot)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "policies_restored": 30, "total_size_bytes": len(snapshot)}
    assert response.headers["x-policy-store-sha3-256"] == sha3_bytes(snapshot)
    original = api.get("/api/v1/policies").json()
    assert target.get("/api/v1/policies").json() == original
    for policy_hash in original["policy_hashes"]:
        a = api.get("/api/v1/policy/" + policy_hash)
        b = target.get("/api/v1/policy/" + policy_hash)
        assert b.status_code == 200
        assert b.json()["policy_hash"] == a.json()["policy_hash"] == policy_hash
        assert b.json()["ir_hash"] == a.json()["ir_hash"]
        assert b.headers["etag"] == a.headers["etag"] == etag_of(policy_hash)
        assert b.content == a.content
    assert target.get("/api/v1/policy/export").content == snapshot
    assert (tmp_path / "restore-target" / "build" / "policy_store.json").read_bytes() == snapshot


def test_restored_store_survives_a_restart(api, launch, tmp_path):
    snapshot = api.get("/api/v1/policy/export").content
    data_dir = tmp_path / "restart"
    first = launch(data_dir)
    assert first.post("/api/v1/policy/restore", data=snapshot).status_code == 200
    first.stop()
    second = launch(data_dir)
    assert second.get("/api/v1/policy/export").content == snapshot


def test_corrupt_policy_store_file_fails_readiness_with_a_reason(launch, copy_of_seeded):
    (copy_of_seeded / "build" / "policy_store.json").write_bytes(b'{"version": "cap-policy-store.v1", "pol')
    instance = launch(copy_of_seeded)
    response = instance.get("/readyz")
    assert response.status_code == 503
    check = {c["name"]: c for c in response.json()["checks"]}["policy_store"]
    assert check["status"] == "FAIL" and "policy_store.json" in check["reason"]
    assert instance.get("/api/v1/policies").json()["count"] == 0


def test_store_file_with_a_tampered_record_is_not_loaded(launch, copy_of_seeded):
    path = copy_of_seeded / "build" / "policy_store.json"
    doc = json.loads(path.read_bytes())
    named = _tamper(doc, 0, "policy")
    path.write_bytes(canonical_json_bytes(doc) + b"\n")
    instance = launch(copy_of_seeded)
    check = {c["name"]: c for c in instance.get("/readyz").json()["checks"]}["policy_store"]
    assert check["status"] == "FAIL" and named in check["reason"]


# ---------------------------------------------------------------------------
# Keys, registry and verification

def test_readiness_turns_ok_when_the_private_key_is_placed_without_restart(launch, copy_of_seeded, tmp_path):
    key = copy_of_seeded / "keys" / "company.ed25519"
    saved = tmp_path / "company.ed25519"
    shutil.move(str(key), str(saved))
    instance = launch(copy_of_seeded)
    response = instance.get("/readyz")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["crypto"]["status"] == "FAIL" and "missing" in checks["crypto"]["reason"]
    assert all(checks[n]["status"] == "OK" for n in ("verifier_core", "registry", "policy_store"))
    key.write_bytes(b"\x00" * 7)
    bad = {c["name"]: c for c in instance.get("/readyz").json()["checks"]}["crypto"]
    assert bad["status"] == "FAIL" and "invalid" in bad["reason"]
    key.write_bytes(b"\x11" * 32)
    unknown = {c["name"]: c for c in instance.get("/readyz").json()["checks"]}["crypto"]
    assert unknown["status"] == "FAIL" and "matches no key metadata" in unknown["reason"]
    shutil.copy(str(saved), str(key))
    key.chmod(0o600)
    response = instance.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "OK"


def test_private_key_in_vault_base64_form_is_accepted(launch, copy_of_seeded):
    key = copy_of_seeded / "keys" / "company.ed25519"
    key.write_bytes(base64.b64encode(key.read_bytes()) + b"\n")
    instance = launch(copy_of_seeded)
    assert instance.get("/readyz").status_code == 200


def test_registry_copied_into_an_empty_instance_is_seen(api, launch, seeded_dir, tmp_path):
    source = seeded_dir[0]
    target_dir = tmp_path / "target"
    instance = launch(target_dir)
    assert instance.post("/api/v1/policy/restore",
                         data=(source / "build" / "policy_store.json").read_bytes()).status_code == 200
    shutil.copytree(str(source / "keys"), str(target_dir / "keys"))
    checks = {c["name"]: c for c in instance.get("/readyz").json()["checks"]}
    assert checks["registry"]["status"] == "FAIL"
    rows = registry_rows(source / "build" / "registry.sqlite")
    body = {"manifest_hash": rows[0]["manifest_hash"]}
    assert instance.post("/api/v1/verify", body=body).status_code == 503
    shutil.copy(str(source / "build" / "registry.sqlite"), str(target_dir / "build" / "registry.sqlite"))
    response = instance.get("/readyz")
    assert response.status_code == 200, response.text
    verified = instance.post("/api/v1/verify", body=body)
    assert verified.status_code == 200 and verified.json()["valid"] is True
    text = requests.get(instance.url("/metrics"), timeout=10).text
    assert "cap_api_registry_entries 300" in text


def test_registry_replaced_in_place_is_seen_at_once(launch, copy_of_seeded, tmp_path):
    instance = launch(copy_of_seeded)
    old = registry_rows(copy_of_seeded / "build" / "registry.sqlite")[0]["manifest_hash"]
    assert instance.post("/api/v1/verify", body={"manifest_hash": old}).status_code == 200
    other = tmp_path / "other"
    seed_instance(str(other), seed=8, policies=25, entries=20)
    # Overwrite the bytes of the same file, as `kubectl cp` does.
    with open(copy_of_seeded / "build" / "registry.sqlite", "r+b") as handle:
        handle.truncate(0)
        handle.write((other / "build" / "registry.sqlite").read_bytes())
    assert instance.post("/api/v1/verify", body={"manifest_hash": old}).status_code == 404
    new = registry_rows(other / "build" / "registry.sqlite")[0]["manifest_hash"]
    response = instance.post("/api/v1/verify", body={"manifest_hash": new})
    assert response.status_code == 200 and response.json()["manifest_hash"] == new


def test_every_seeded_entry_verifies_through_the_api_and_directly(api, seeded_dir):
    data_dir = seeded_dir[0]
    rows = registry_rows(data_dir / "build" / "registry.sqlite")
    assert len(rows) == 300
    keys = load_key_tree(str(data_dir / "keys"))
    kids = set()
    for row in rows:
        assert verify_entry(row, keys) == (True, None)
        kids.add(row["kid"])
        response = api.post("/api/v1/verify", body={"manifest_hash": row["manifest_hash"],
                                                    "proof_hash": row["proof_hash"]})
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "OK" and body["valid"] is True
        assert (body["manifest_hash"], body["proof_hash"], body["policy_hash"], body["kid"]) == (
            row["manifest_hash"], row["proof_hash"], row["policy_hash"], row["kid"])
        assert body["policy_in_store"] is True
    assert kids == set(seeded_dir[1]["kids"]), "entries are signed by every seeded key"


def test_verify_reports_bad_signatures_unknown_kids_and_proof_mismatches(launch, copy_of_seeded):
    db = copy_of_seeded / "build" / "registry.sqlite"
    rows = registry_rows(db)
    forged = base64.b64encode(b"\x01" * 64).decode()
    conn = sqlite3.connect(str(db))
    with conn:
        conn.execute("UPDATE registry_entries SET signature = ? WHERE id = ?", (forged, rows[0]["id"]))
        conn.execute("UPDATE registry_entries SET kid = 'cap-unknown-000000000000' WHERE id = ?",
                     (rows[1]["id"],))
        conn.execute("UPDATE registry_entries SET created_at = '2020-01-01T00:00:00Z' WHERE id = ?",
                     (rows[2]["id"],))
        conn.execute("UPDATE registry_entries SET signature = 'not base64!' WHERE id = ?", (rows[3]["id"],))
    conn.close()
    instance = launch(copy_of_seeded)
    expectations = [(rows[0], "does not verify"), (rows[1], "not among the trusted"),
                    (rows[2], "does not verify"), (rows[3], "not base64")]
    for row, fragment in expectations:
        response = instance.post("/api/v1/verify", body={"manifest_hash": row["manifest_hash"]})
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "FAIL" and body["valid"] is False
        assert fragment in body["reason"]
    mismatch = instance.post("/api/v1/verify", body={"manifest_hash": rows[5]["manifest_hash"],
                                                     "proof_hash": "0x" + "9" * 64})
    assert mismatch.status_code == 200 and mismatch.json()["valid"] is False
    assert "proof_hash" in mismatch.json()["reason"]
    text = requests.get(instance.url("/metrics"), timeout=10).text
    assert 'cap_api_verify_results_total{result="invalid"} 5' in text


@pytest.mark.parametrize("body, status", [
    ({"manifest_hash": "0x" + "5" * 64}, 404),
    ({}, 400),
    ({"manifest_hash": "0xabc"}, 400),
    ({"manifest_hash": 12}, 400),
    ({"manifest_hash": "0x" + "5" * 64, "proof_hash": "nope"}, 400),
    ({"manifest_hash": "0x" + "5" * 64, "extra": 1}, 400),
    (["0x" + "5" * 64], 400),
])
def test_verify_input_errors(api, body, status):
    response = api.post("/api/v1/verify", body=body)
    assert response.status_code == status
    assert response.json()["message"]


def test_json_registry_form_is_served_read_only(launch, tmp_path):
    data_dir = tmp_path / "json-form"
    seed_instance(str(data_dir), seed=9, policies=25, entries=40, registry_format="json")
    assert not (data_dir / "build" / "registry.sqlite").exists()
    instance = launch(data_dir)
    assert instance.get("/readyz").status_code == 200
    conn = sqlite3.connect(":memory:")
    from ansible.module_utils.cap_sqlite import load_json_into
    load_json_into(str(data_dir / "build" / "registry.json"), conn)
    manifests = [r[0] for r in conn.execute("SELECT manifest_hash FROM registry_entries")]
    conn.close()
    assert len(manifests) == 40
    for manifest_hash in manifests[:10]:
        assert instance.post("/api/v1/verify", body={"manifest_hash": manifest_hash}).json()["valid"] is True
    compiled = instance.post("/api/v1/policy/compile", body=NEW_POLICY)
    assert compiled.status_code == 201 and compiled.json()["registry"] == "read_only"


# ---------------------------------------------------------------------------
# Process behaviour

def test_log_has_one_line_per_request_and_no_token(launch, copy_of_seeded, tmp_path):
    log_file = tmp_path / "custom" / "api.log"
    instance = launch(copy_of_seeded, "--log-file", str(log_file))
    instance.get("/readyz")
    instance.get("/api/v1/policies?access_token=%s" % instance.token)
    instance.get("/healthz", token=False)
    text = log_file.read_text()
    assert instance.token not in text
    assert "access_token" not in text and "Bearer" not in text
    # The first request line is the fixture's own /healthz probe at start-up.
    request_lines = [line for line in text.splitlines() if '"GET ' in line]
    assert len(request_lines) == 4
    assert ['"GET /readyz" 200' in request_lines[1], '"GET /api/v1/policies" 200' in request_lines[2],
            '"GET /healthz" 200' in request_lines[3]] == [True, True, True]
    assert "sub=cap-sre" in request_lines[1]


def test_sigterm_stops_the_process_fast_with_exit_0(launch, tmp_path):
    instance = launch(tmp_path / "stop-me")
    os.kill(instance.proc.pid, signal.SIGTERM)
    # It exits by itself with 0 (a hang would hit the wait's timeout).
    assert instance.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.org", "::"])
def test_non_loopback_hosts_are_refused(secret_file, tmp_path, host):
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.cap_api", "--data-dir", str(tmp_path / "d"), "--port",
         str(free_port()), "--jwt-secret-file", str(secret_file), "--host", host],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "loopback" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_missing_or_short_secret_file_is_refused(tmp_path):
    short = tmp_path / "short.secret"
    short.write_bytes(b"tiny\n")
    for path in (tmp_path / "absent.secret", short):
        proc = subprocess.run(
            [sys.executable, "-m", "sandbox.cap_api", "--data-dir", str(tmp_path / "d"), "--port",
             str(free_port()), "--jwt-secret-file", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        assert "JWT secret" in proc.stderr


def test_auth_cli_mints_tokens_the_api_accepts(api, secret_file):
    proc = subprocess.run([sys.executable, "-m", "sandbox.auth", "mint", "--secret-file", str(secret_file),
                           "--ttl", "120", "--subject", "drill"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    token = proc.stdout.strip()
    assert proc.stdout.count("\n") == 1
    claims = auth.verify_token(token, SECRET)
    assert claims["sub"] == "drill" and claims["exp"] - claims["iat"] == 120
    assert api.get("/readyz", token=token).status_code == 200


def test_registry_summary_counts_entries_and_names_the_newest(api, seeded_dir, launch, tmp_path):
    rows = registry_rows(seeded_dir[0] / "build" / "registry.sqlite")
    response = api.get("/api/v1/registry")
    assert response.status_code == 200
    body = response.json()
    assert body["entries"] == len(rows) == 300
    assert body["format"] == "sqlite"
    newest = max(rows, key=lambda row: row["id"])
    assert body["latest"]["manifest_hash"] == newest["manifest_hash"]
    assert body["latest"]["kid"] == newest["kid"]
    assert api.get("/api/v1/registry", token=False).status_code == 401
    empty = launch(tmp_path / "empty")
    assert empty.get("/api/v1/registry").status_code == 503
