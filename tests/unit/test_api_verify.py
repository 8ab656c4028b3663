"""module_utils/cap_api: evaluating answers, the expected policy store, HTTP and the check runner."""

from __future__ import annotations

import json
import socket

import pytest

from ansible.module_utils.cap_api import (
    CHECKLIST,
    SMOKE_TEST_POLICY,
    SMOKE_TEST_POLICY_HASH,
    ApiChecks,
    ApiClient,
    CapApiError,
    ExpectedPolicy,
    HttpResponse,
    HttpSession,
    PolicyStoreError,
    TransportError,
    compare_answers,
    evaluate_policy,
    load_policy_store,
    normalize_base_url,
    read_token_file,
    readiness_problems,
    refused_token_probes,
)
from ansible.module_utils.cap_hashing import canonical_json_bytes, etag_for, sha3_canonical
from sandbox import auth
from sandbox.cap_api import build_server
from sandbox.policy import compile_policy, make_record
from tests import helpers_cap

HASH_A = "0x" + "a1" * 32
IR_A = "0x" + "b2" * 32
GOOD = ExpectedPolicy(HASH_A, IR_A, HASH_A, IR_A)


# ---------------------------------------------------------------------------
# The smoke-test policy

def test_smoke_test_policy_compiles_with_the_stand_in_compiler_and_has_a_pinned_hash():
    ir = compile_policy(SMOKE_TEST_POLICY)
    assert ir["policy_hash"] == SMOKE_TEST_POLICY_HASH == sha3_canonical(SMOKE_TEST_POLICY)
    assert SMOKE_TEST_POLICY_HASH == "0xd2f180f2d3d37bd50e997e5371c788d6f554eac9c7873eed28b21e65fdb5dd2a"
    assert ir["policy_id"] == "cap-restore-smoke-test" and ir["rule_count"] == 4


# ---------------------------------------------------------------------------
# Evaluating one policy's answers

def record_body(policy_hash=HASH_A, ir_hash=IR_A, policy=None, ir=None):
    return json.dumps({"policy_hash": policy_hash, "ir_hash": ir_hash,
                       "policy": policy if policy is not None else {"p": 1},
                       "ir": ir if ir is not None else {"i": 1}}).encode()


def answers_for(expected, body=None, etag=None, head_headers=None, inm_status=304):
    """GET, HEAD and If-None-Match answers of a correct server, with overrides."""
    body = body if body is not None else record_body(expected.policy_hash, expected.ir_hash)
    headers = {"etag": etag or etag_for(expected.policy_hash), "content-type": "application/json",
               "content-length": str(len(body)), "date": "Mon, 24 Nov 2025 07:00:00 GMT"}
    head = dict(headers, date="Mon, 24 Nov 2025 07:00:01 GMT")
    head.update(head_headers or {})
    return (HttpResponse(200, headers, body), HttpResponse(200, head, b""),
            HttpResponse(inm_status, {"etag": etag_for(expected.policy_hash)}, b""))


def expected_for(policy, ir):
    return ExpectedPolicy(sha3_canonical(policy), sha3_canonical(ir), sha3_canonical(policy), sha3_canonical(ir))


def test_a_correct_answer_has_no_differences():
    policy, ir = {"id": "x", "n": 1}, {"ir": True}
    expected = expected_for(policy, ir)
    body = record_body(expected.policy_hash, expected.ir_hash, policy, ir)
    assert evaluate_policy(expected, *answers_for(expected, body)) == []


def test_each_kind_of_difference_is_named():
    policy, ir = {"id": "x", "n": 1}, {"ir": True}
    exp = expected_for(policy, ir)
    good_body = record_body(exp.policy_hash, exp.ir_hash, policy, ir)
    fields = lambda diffs: [d[0] for d in diffs]  # noqa: E731

    served_other_policy = record_body(exp.policy_hash, exp.ir_hash, {"id": "x", "n": 2}, ir)
    assert fields(evaluate_policy(exp, *answers_for(exp, served_other_policy))) == ["content_policy_hash"]
    wrong_label = record_body(exp.policy_hash, "0x" + "00" * 32, policy, ir)
    assert evaluate_policy(exp, *answers_for(exp, wrong_label)) == [("ir_hash", exp.ir_hash, "0x" + "00" * 32)]
    diffs = evaluate_policy(exp, *answers_for(exp, good_body, etag='"ffffffffffffffff"'))
    assert diffs == [("etag", etag_for(exp.policy_hash), '"ffffffffffffffff"')]
    head_diff = evaluate_policy(exp, *answers_for(exp, good_body, head_headers={"content-length": "1"}))
    assert head_diff == [("head_headers", {"content-length": str(len(good_body))}, {"content-length": "1"})]
    assert fields(evaluate_policy(exp, *answers_for(exp, good_body, inm_status=200))) == ["if_none_match"]
    not_json = evaluate_policy(exp, *answers_for(exp, b"<html>"))
    assert not_json[0][0] == "body"


def test_missing_policy_and_transport_errors_are_status_differences():
    not_found = HttpResponse(404, {}, b'{"error": "not_found", "message": "no policy"}', "Not Found")
    diffs = evaluate_policy(GOOD, not_found, not_found, not_found)
    assert diffs == [("status", 200, "HTTP 404 Not Found: no policy")]
    diffs = evaluate_policy(GOOD, TransportError("GET x failed: refused"), None, None)
    assert diffs == [("status", 200, "no answer: GET x failed: refused")]


def test_a_backup_record_that_does_not_hash_to_its_hashes_is_reported():
    expected = ExpectedPolicy(HASH_A, IR_A, "0x" + "ee" * 32, IR_A)
    diffs = evaluate_policy(expected, *answers_for(GOOD, record_body()))
    assert diffs[0] == ("store_policy_hash", HASH_A, "0x" + "ee" * 32)


def test_compare_answers():
    body = record_body()
    same = HttpResponse(200, {"etag": etag_for(HASH_A)}, body)
    assert compare_answers(same, HttpResponse(200, {"etag": etag_for(HASH_A)}, body)) == []
    other = HttpResponse(200, {"etag": '"0000000000000000"'}, record_body(ir_hash="0x" + "00" * 32, ir={"i": 2}))
    diffs = compare_answers(same, other)
    assert [d[0] for d in diffs] == ["ir_hash", "etag", "ir"]
    assert diffs[0] == ("ir_hash", IR_A, "0x" + "00" * 32)
    missing = HttpResponse(404, {}, b"{}")
    assert compare_answers(same, missing) == [("status", 200, 404)]
    assert compare_answers(missing, HttpResponse(404, {}, b"{}")) == []


def test_readiness_problems_name_the_failing_check_and_reason():
    ok = HttpResponse(200, {}, json.dumps({"status": "OK", "checks": [
        {"name": n, "status": "OK"} for n in ("verifier_core", "crypto", "registry", "policy_store")]}).encode())
    assert readiness_problems(ok) == (True, "HTTP 200; verifier_core, crypto, registry, policy_store OK")
    failing = HttpResponse(503, {}, json.dumps({"status": "FAIL", "checks": [
        {"name": "verifier_core", "status": "OK"},
        {"name": "crypto", "status": "FAIL", "reason": "private key keys/company.ed25519 is missing"},
        {"name": "registry", "status": "OK"}]}).encode())
    passed, detail = readiness_problems(failing)
    assert not passed
    assert detail == ("HTTP 503, status FAIL; failing: crypto FAIL (private key keys/company.ed25519 is "
                      "missing); policy_store missing from the answer")
    assert not readiness_problems(HttpResponse(401, {}, b'{"error": "unauthorized", "message": "no"}'))[0]


def test_refused_token_probes_are_refused_by_the_api_token_rules():
    probes = dict(refused_token_probes())
    assert set(probes) == {"no token", "a malformed token", "a token signed with another key",
                           "an unsigned token (alg none)"}
    for description, token in probes.items():
        if token is None:
            continue
        with pytest.raises(auth.TokenError) as info:
            auth.verify_token(token, helpers_cap.SECRET)
        if description == "a token signed with another key":
            assert "signature" in str(info.value)


# ---------------------------------------------------------------------------
# Inputs

def store_file(tmp_path, records, name="policy_store.json"):
    path = tmp_path / name
    path.write_bytes(canonical_json_bytes({"version": "cap-policy-store.v1", "policies": records}) + b"\n")
    return str(path)


def test_load_policy_store(tmp_path):
    records = [make_record(dict(SMOKE_TEST_POLICY, version="1.0.%d" % i)) for i in range(3)]
    expected = load_policy_store(store_file(tmp_path, records))
    assert [e.policy_hash for e in expected] == sorted(r["policy_hash"] for r in records)
    assert all(e.content_policy_hash == e.policy_hash and e.content_ir_hash == e.ir_hash for e in expected)
    tampered = dict(records[0], policy=dict(records[0]["policy"], name="changed"))
    changed = {e.policy_hash: e for e in load_policy_store(store_file(tmp_path, [tampered], "t.json"))}
    entry = changed[records[0]["policy_hash"]]
    assert entry.content_policy_hash == sha3_canonical(tampered["policy"]) != entry.policy_hash


@pytest.mark.parametrize("content, message", [
    (b"{not json", "is not valid JSON"),
    (b'{"version": "cap-policy-store.v1", "policies": [], "policies": []}', "duplicate key"),
    (b'{"version": "v0", "policies": []}', "is not a cap-policy-store.v1 document"),
    (b'{"version": "cap-policy-store.v1", "policies": {}}', "'policies' must be a list"),
    (b'{"version": "cap-policy-store.v1", "policies": [{"policy_hash": "0x1"}]}', "exactly the keys"),
])
def test_malformed_policy_stores_are_named(tmp_path, content, message):
    path = tmp_path / "policy_store.json"
    path.write_bytes(content)
    with pytest.raises(PolicyStoreError, match=message) as info:
        load_policy_store(str(path))
    assert str(path) in str(info.value)


def test_duplicate_and_malformed_hashes_in_a_store(tmp_path):
    record = make_record(SMOKE_TEST_POLICY)
    with pytest.raises(PolicyStoreError, match="appears twice"):
        load_policy_store(store_file(tmp_path, [record, record]))
    with pytest.raises(PolicyStoreError, match=r"policies\[0\].ir_hash is not"):
        load_policy_store(store_file(tmp_path, [dict(record, ir_hash="0xABC")]))
    with pytest.raises(PolicyStoreError, match="cannot read"):
        load_policy_store(str(tmp_path / "missing.json"))


def test_token_files_and_urls(tmp_path):
    token = tmp_path / "token"
    token.write_text("  abc.def.ghi\n")
    assert read_token_file(str(token)) == "abc.def.ghi"
    token.write_text("\n")
    with pytest.raises(CapApiError, match="is empty"):
        read_token_file(str(token))
    with pytest.raises(CapApiError, match="cannot read token file"):
        read_token_file(str(tmp_path / "none"))
    assert normalize_base_url("https://cap-restore.example.com/") == "https://cap-restore.example.com"
    for bad in ("cap-restore.example.com", "ftp://host", "http://host/?x=1", ""):
        with pytest.raises(CapApiError):
            normalize_base_url(bad)


# ---------------------------------------------------------------------------
# Against an in-process stand-in

@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("seeded") / "app"
    return data_dir, helpers_cap.seed(data_dir, seed=11)


@pytest.fixture
def server(seeded, tmp_path):
    data_dir = helpers_cap.copy_tree(seeded[0], tmp_path / "app")
    running = helpers_cap.ThreadServer(build_server(str(data_dir), 0, helpers_cap.SECRET))
    yield running, data_dir
    running.stop()


def client_for(url, token=None, **session):
    return ApiClient(HttpSession(**session), url, token or helpers_cap.mint())


def test_a_seeded_instance_passes_everything(server, seeded):
    running, data_dir = server
    store = load_policy_store(str(seeded[0] / "build" / "policy_store.json"))
    entries = [{"manifest_hash": seeded[1]["sample_manifest_hash"]}]
    checks = ApiChecks(client_for(running.url), policy_store=store, entries=entries,
                       compare_client=client_for(running.url))
    result = checks.run(["health", "ready", "auth", "policies", "compare", "verify", "compile"])
    assert [(i["id"], i["status"]) for i in result["checks"]] == [(c[0], "passed") for c in CHECKLIST]
    assert [(i["section"], i["name"]) for i in result["checks"]] == [(c[1], c[2]) for c in CHECKLIST]
    assert result["passed"] and result["changed"]
    assert result["summary"]["hash_verification_ratio"] == 1.0
    assert result["summary"]["policies_checked"] == result["summary"]["policies_matched"] == 30
    assert result["differences"] == [] and result["failed_checks"] == []


def test_differences_are_capped_but_counted(server, seeded, tmp_path):
    running, _ = server
    other = tmp_path / "other"
    helpers_cap.seed(other, seed=12, policies=12, entries=0)
    store = load_policy_store(str(other / "build" / "policy_store.json"))
    served = {e.policy_hash for e in load_policy_store(str(seeded[0] / "build" / "policy_store.json"))}
    missing = {e.policy_hash for e in store} - served
    extra = served - {e.policy_hash for e in store}
    assert missing and extra
    result = ApiChecks(client_for(running.url), policy_store=store, max_differences=5).run(["policies"])
    assert not result["passed"]
    assert len(result["differences"]) == 5
    # Every missing policy is a "listed" and a "status" (404) difference; every extra one a "listed".
    assert result["differences_total"] == 2 * len(missing) + len(extra)
    matched = len(store) - len(missing)
    assert result["summary"]["policies_matched"] == matched
    assert result["summary"]["hash_verification_ratio"] == round(matched / len(store), 6)


def test_wrong_token_fails_checks_without_raising(server, seeded):
    running, _ = server
    store = load_policy_store(str(seeded[0] / "build" / "policy_store.json"))
    wrong = auth.mint_token(b"another-secret-of-sufficient-length")
    result = ApiChecks(client_for(running.url, wrong), policy_store=store).run(["health", "ready", "auth", "policies"])
    status = {i["id"]: i["status"] for i in result["checks"]}
    assert status["health"] == "passed"
    assert status["ready"] == status["auth"] == status["policy_hash"] == status["retrieve"] == "failed"
    items = {i["id"]: i for i in result["checks"]}
    assert "token signature does not verify" in items["ready"]["detail"]
    assert "the given token is refused" in items["auth"]["detail"]
    assert wrong not in json.dumps(result)


def test_connection_refused_is_a_clear_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for("http://127.0.0.1:%d" % port, timeout=5)
    with pytest.raises(TransportError, match=r"GET http://127\.0\.0\.1:%d/healthz failed: .*refused" % port):
        client.call("GET", "/healthz", token=None)
    result = ApiChecks(client).run(["health", "ready"])
    assert not result["passed"] and "refused" in result["checks"][0]["detail"]


def test_check_mode_skips_compile_and_writes_nothing(server, seeded):
    running, data_dir = server
    before = (data_dir / "build" / "policy_store.json").read_bytes()
    result = ApiChecks(client_for(running.url), check_mode=True).run(["health", "compile"])
    items = {i["id"]: i for i in result["checks"]}
    assert items["compile"]["status"] == "skipped" and "check mode" in items["compile"]["detail"]
    assert items["retrieve"]["status"] == "skipped"
    assert result["passed"] and not result["changed"]
    assert (data_dir / "build" / "policy_store.json").read_bytes() == before


def test_compile_is_changed_only_when_it_creates(server):
    running, _ = server
    first = ApiChecks(client_for(running.url)).run(["compile"])
    second = ApiChecks(client_for(running.url)).run(["compile"])
    assert first["passed"] and first["changed"]
    assert second["passed"] and not second["changed"]
    assert "already stored" in second["checks"][7]["detail"]


# ---------------------------------------------------------------------------
# TLS

@pytest.fixture
def tls_server(seeded, tmp_path):
    ca, cert, key = helpers_cap.make_tls_material(tmp_path)
    data_dir = helpers_cap.copy_tree(seeded[0], tmp_path / "app")
    running = helpers_cap.start_tls_instance(data_dir, cert, key)
    yield running, ca
    running.stop()


def test_tls_certificates_are_verified_unless_told_otherwise(tls_server):
    running, ca = tls_server
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED.*give ca_path"):
        client_for(running.url).call("GET", "/healthz", token=None)
    assert client_for(running.url, ca_path=str(ca)).call("GET", "/healthz", token=None).status == 200
    assert client_for(running.url, validate_certs=False).call("GET", "/healthz", token=None).status == 200


def test_a_missing_ca_file_is_named(tmp_path):
    with pytest.raises(CapApiError, match="cannot load CA certificates from %s" % tmp_path):
        HttpSession(ca_path=str(tmp_path / "ca.pem"))
