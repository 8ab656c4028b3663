"""cap_api_verify run through Ansible against real CAP API stand-in processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from ansible.module_utils.cap_api import CHECKLIST, SMOKE_TEST_POLICY_HASH
from ansible.module_utils.cap_hashing import etag_for
from sandbox.policy import make_record, store_document
from tests import helpers_cap
from tests.conftest import ROOT, VENV_BIN, ansible_env

ALL_CHECKS = ["health", "ready", "auth", "policies", "compare", "verify", "compile"]


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    return helpers_cap.write_secret(tmp_path_factory.mktemp("secret"))


@pytest.fixture(scope="module")
def token():
    return helpers_cap.mint(ttl_seconds=7200)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, token):
    return str(helpers_cap.write_token(tmp_path_factory.mktemp("token"), token))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A pristine seeded data directory and, beside it, the backup's copy of its policy store."""
    base = tmp_path_factory.mktemp("seeded")
    summary = helpers_cap.seed(base / "app")
    backup_store = base / "backup" / "policy_store.json"
    backup_store.parent.mkdir()
    backup_store.write_bytes((base / "app" / "build" / "policy_store.json").read_bytes())
    return base / "app", summary, str(backup_store)


@pytest.fixture(scope="module")
def module_launcher(secret_file):
    launcher = helpers_cap.Launcher(secret_file)
    yield launcher
    launcher.close()


@pytest.fixture
def launch(secret_file):
    launcher = helpers_cap.Launcher(secret_file)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def source(seeded, module_launcher, tmp_path_factory):
    """The source system of a drill: an instance on a copy of the seeded directory."""
    return module_launcher(helpers_cap.copy_tree(seeded[0], tmp_path_factory.mktemp("source") / "app"))


@pytest.fixture(scope="module")
def twin(seeded, module_launcher, tmp_path_factory):
    """A faithful restore of the source."""
    return module_launcher(helpers_cap.copy_tree(seeded[0], tmp_path_factory.mktemp("twin") / "app"))


@pytest.fixture
def fresh(seeded, launch, tmp_path):
    """An instance of its own, for tests that look at what the module writes."""
    return launch(helpers_cap.copy_tree(seeded[0], tmp_path / "app"))


@pytest.fixture(scope="module")
def entries(seeded):
    conn = sqlite3.connect(str(seeded[0] / "build" / "registry.sqlite"))
    try:
        rows = conn.execute("SELECT id, manifest_hash, proof_hash, kid FROM registry_entries "
                            "WHERE id IN (1, 150, 300) ORDER BY id").fetchall()
    finally:
        conn.close()
    return [dict(zip(("id", "manifest_hash", "proof_hash", "kid"), row)) for row in rows]


def no_secret_in_output(run, *secrets):
    text = run.proc.stdout + run.proc.stderr
    return all(s not in text for s in secrets)


def items(run):
    return {i["id"]: i for i in run["checks"]}


def statuses(run):
    return {i["id"]: i["status"] for i in run["checks"]}


# ---------------------------------------------------------------------------
# A faithful restore

def test_a_seeded_instance_passes_every_check(module, fresh, source, seeded, entries, token, token_file):
    args = dict(url=fresh.url, token_file=token_file, policy_store=seeded[2], compare_url=source.url,
                entries=entries)
    res = module("cap_api_verify", args)
    assert not res.failed, res.msg
    assert res["passed"] is True and res["failed_checks"] == []
    assert [(i["id"], i["section"], i["name"], i["status"]) for i in res["checks"]] == [
        (item_id, section, name, "passed") for item_id, section, name in CHECKLIST]
    summary = res["summary"]
    assert summary["checks_passed"] == summary["checks_total"] == len(CHECKLIST)
    assert summary["policies_total"] == summary["policies_checked"] == summary["policies_matched"] == 30
    assert summary["hash_verification_ratio"] == 1.0
    assert summary["compare_policies_matched"] == 30 and summary["entries_valid"] == 3
    assert res["differences"] == [] and res["differences_total"] == 0 and res["policies_checked"] == 30
    assert res.changed, "the first compile stores the smoke-test policy"
    assert res["smoke_test_policy_hash"] == SMOKE_TEST_POLICY_HASH
    assert no_secret_in_output(res, token)

    again = module("cap_api_verify", args)
    assert not again.failed, again.msg
    assert not again.changed, "the smoke-test policy was already stored"
    assert "besides the compile smoke-test policy" in items(again)["policy_store_loaded"]["detail"]


def test_check_mode_runs_the_read_only_checks_and_writes_nothing(module, fresh, seeded, token_file):
    store_file = fresh.data_dir / "build" / "policy_store.json"
    before = store_file.read_bytes()
    res = module("cap_api_verify", dict(url=fresh.url, token_file=token_file, policy_store=seeded[2]),
                 check=True)
    assert not res.failed, res.msg
    assert not res.changed
    found = statuses(res)
    assert found["compile"] == "skipped" and "check mode" in items(res)["compile"]["detail"]
    for item_id in ("health", "ready", "auth", "policy_store_loaded", "policy_hash", "ir_hash", "etag",
                    "retrieve"):
        assert found[item_id] == "passed", item_id
    assert store_file.read_bytes() == before
    status, listing = fresh.request("GET", "/api/v1/policies", helpers_cap.mint())
    assert SMOKE_TEST_POLICY_HASH not in listing["policy_hashes"]


def test_default_checks_follow_the_inputs_given(module, twin, token_file):
    res = module("cap_api_verify", dict(url=twin.url, token_file=token_file), check=True)
    assert not res.failed, res.msg
    found = statuses(res)
    assert [k for k, v in found.items() if v == "passed"] == ["health", "ready", "auth"]
    assert items(res)["policy_hash"]["detail"] == "not requested"


# ---------------------------------------------------------------------------
# Restores that differ

@pytest.fixture(scope="module")
def altered(seeded, module_launcher, tmp_path_factory, token):
    """An instance restored from a store in which one policy was edited (and recompiled)."""
    instance = module_launcher(helpers_cap.copy_tree(seeded[0], tmp_path_factory.mktemp("altered") / "app"))
    doc = json.loads((seeded[0] / "build" / "policy_store.json").read_text())
    original = doc["policies"][5]
    edited = make_record(dict(original["policy"], name=original["policy"]["name"] + " (edited)"))
    records = [r for r in doc["policies"] if r is not original] + [edited]
    status, body = instance.request("POST", "/api/v1/policy/restore", token, store_document(records))
    assert status == 200 and body["policies_restored"] == 30
    return instance, original["policy_hash"], edited["policy_hash"]


def test_a_restore_with_one_altered_policy_reports_it_precisely(module, altered, seeded, token_file, token):
    instance, original, edited = altered
    res = module("cap_api_verify", dict(url=instance.url, token_file=token_file, policy_store=seeded[2],
                                        checks=["policies"]))
    assert res.failed
    found = statuses(res)
    assert found["policy_store_loaded"] == found["policy_hash"] == found["ir_hash"] == found["etag"] == "failed"
    assert found["retrieve"] == "passed"
    assert res["differences"] == [
        {"check": "policies", "kind": "policy", "id": original, "field": "listed", "expected": "present",
         "actual": "missing"},
        {"check": "policies", "kind": "policy", "id": edited, "field": "listed", "expected": "absent",
         "actual": "present"},
        {"check": "policies", "kind": "policy", "id": original, "field": "status", "expected": 200,
         "actual": "HTTP 404 Not Found: no policy %s in the policy store" % original},
    ]
    assert res["summary"]["policies_matched"] == 29
    assert res["summary"]["hash_verification_ratio"] == round(29 / 30, 6)
    assert "1 of the backup's 30 missing (%s), 1 not in the backup (%s)" % (original, edited) in \
        items(res)["policy_store_loaded"]["detail"]
    assert res.msg.startswith("CAP API checks failed on %s: Policy store loaded" % instance.url)
    assert "policy_hash matches original (SHA3-256)" in res.msg and original in res.msg
    assert no_secret_in_output(res, token)


def test_compare_lists_the_policies_that_differ(module, altered, source, twin, token_file):
    instance, original, edited = altered
    same = module("cap_api_verify", dict(url=twin.url, token_file=token_file, compare_url=source.url,
                                         checks=["compare"]))
    assert not same.failed, same.msg
    assert same["summary"]["compare_policies_matched"] == 30
    assert items(same)["compare"]["status"] == "passed"

    res = module("cap_api_verify", dict(url=instance.url, token_file=token_file, compare_url=source.url,
                                        checks=["compare"], fail_on_error=False))
    assert not res.failed and res["passed"] is False
    assert items(res)["compare"]["status"] == "failed"
    assert {(d["id"], d["field"], d["expected"], d["actual"]) for d in res["differences"]} == {
        (original, "listed", "present", "missing"), (edited, "listed", "absent", "present")}
    detail = items(res)["compare"]["detail"]
    assert "1 only on the source (%s)" % original in detail and "1 only on the target (%s)" % edited in detail
    assert res["summary"]["compare_policies_matched"] == 29


def test_compare_may_accept_policies_newer_on_the_source(module, altered, source, token_file):
    # Seen from the altered instance as the "source": it holds one policy the backup-like
    # target lacks (newer than the backup) and lacks one the target holds.
    instance, original, edited = altered
    res = module("cap_api_verify", dict(url=source.url, token_file=token_file, compare_url=instance.url,
                                        checks=["compare"], compare_allow_newer=True, fail_on_error=False))
    assert res["summary"]["compare_policies_newer_on_source"] == 1
    # What the target holds and the source does not is still a difference.
    assert [(d["id"], d["field"], d["expected"], d["actual"]) for d in res["differences"]] == [
        (original, "listed", "absent", "present")]
    assert items(res)["compare"]["status"] == "failed"


def test_answers_with_wrong_hashes_and_etags_are_found(module, twin, seeded, token_file):
    hashes = sorted(json.loads((seeded[0] / "build" / "policy_store.json").read_text())["policies"],
                    key=lambda r: r["policy_hash"])
    p_etag, p_ir, p_head, p_inm = (r["policy_hash"] for r in hashes[3:7])
    wrong_ir = "0x" + "00" * 32

    def tamper(method, path, status, headers, body):
        if path.endswith(p_etag) and method == "GET" and status == 200:
            headers = helpers_cap.set_header(headers, "etag", '"%s"' % ("f" * 16))
        if path.endswith(p_ir) and method == "GET" and status == 200:
            body = helpers_cap.replace_json(body, ir_hash=wrong_ir)
        if path.endswith(p_head) and method == "HEAD":
            headers = helpers_cap.set_header(headers, "cache-control", "public, max-age=600")
        if path.endswith(p_inm) and status == 304:
            return 200, headers, b"{}"
        return status, headers, body

    proxy = helpers_cap.TamperingProxy(twin.url, tamper)
    try:
        res = module("cap_api_verify", dict(url=proxy.url, token_file=token_file, policy_store=seeded[2],
                                            checks=["policies"]))
    finally:
        proxy.stop()
    assert res.failed
    found = {(d["id"], d["field"]) for d in res["differences"]}
    assert found == {(p_etag, "etag"), (p_etag, "head_headers"), (p_ir, "ir_hash"),
                     (p_head, "head_headers"), (p_inm, "if_none_match")}
    by_key = {(d["id"], d["field"]): d for d in res["differences"]}
    assert by_key[(p_etag, "etag")]["expected"] == etag_for(p_etag)
    assert by_key[(p_ir, "ir_hash")]["actual"] == wrong_ir
    assert by_key[(p_head, "head_headers")]["actual"] == {"cache-control": "public, max-age=600"}
    found_status = statuses(res)
    assert found_status["policy_hash"] == "passed"
    assert found_status["ir_hash"] == found_status["etag"] == "failed"
    assert "1 of 30 policies differ" in items(res)["ir_hash"]["detail"]
    assert "3 of 30 policies differ" in items(res)["etag"]["detail"]
    assert res["summary"]["policies_matched"] == 26


def test_a_backup_record_edited_after_the_backup_is_reported(module, twin, seeded, tmp_path, token_file):
    doc = json.loads(open(seeded[2]).read())
    record = doc["policies"][2]
    record["ir_hash"] = "0x" + "12" * 32
    broken = tmp_path / "policy_store.json"
    broken.write_text(json.dumps(doc))
    res = module("cap_api_verify", dict(url=twin.url, token_file=token_file, policy_store=str(broken),
                                        checks=["policies"]))
    assert res.failed
    fields = [(d["id"], d["field"]) for d in res["differences"]]
    # The backup's label matches neither the backup's own IR nor what the API serves.
    assert fields == [(record["policy_hash"], "store_ir_hash"), (record["policy_hash"], "ir_hash"),
                      (record["policy_hash"], "content_ir_hash")]
    assert statuses(res)["ir_hash"] == "failed" and statuses(res)["policy_hash"] == "passed"


# ---------------------------------------------------------------------------
# Readiness, authentication, verify

def test_readiness_without_the_private_key_names_the_reason(module, seeded, launch, tmp_path, token_file):
    data_dir = helpers_cap.copy_tree(seeded[0], tmp_path / "app")
    os.unlink(str(data_dir / "keys" / "company.ed25519"))
    instance = launch(data_dir)
    res = module("cap_api_verify", dict(url=instance.url, token_file=token_file, checks=["health", "ready"]))
    assert res.failed
    assert statuses(res)["health"] == "passed" and statuses(res)["ready"] == "failed"
    assert items(res)["ready"]["detail"] == (
        "HTTP 503, status FAIL; failing: crypto FAIL (private key keys/company.ed25519 is missing)")
    assert res["failed_checks"] == ["Readiness check returns 200 (/readyz)"]
    assert "Readiness check returns 200 (/readyz)" in res.msg


def test_authentication_check_passes_against_the_stand_in(module, source, token_file):
    res = module("cap_api_verify", dict(url=source.url, token_file=token_file, checks=["auth"]))
    assert not res.failed, res.msg
    assert "answered 401" in items(res)["auth"]["detail"]


def test_a_wrong_token_is_a_clear_failed_check(module, source, seeded):
    wrong = helpers_cap.mint(secret=b"a-different-secret-than-the-api-has")
    res = module("cap_api_verify", dict(url=source.url, token=wrong, policy_store=seeded[2],
                                        checks=["health", "ready", "auth", "policies"]))
    assert res.failed
    assert "Traceback" not in res.proc.stdout + res.proc.stderr
    found = statuses(res)
    assert found["health"] == "passed"
    assert found["ready"] == found["auth"] == found["policy_hash"] == "failed"
    assert "HTTP 401 Unauthorized: invalid token: token signature does not verify" in items(res)["ready"]["detail"]
    assert "the given token is refused" in items(res)["auth"]["detail"]
    assert "cannot list the target's policies" in items(res)["policy_hash"]["detail"]
    assert no_secret_in_output(res, wrong)


def test_verify_entries(module, source, entries, token_file):
    ok = module("cap_api_verify", dict(url=source.url, token_file=token_file, entries=entries, checks=["verify"]))
    assert not ok.failed, ok.msg
    assert items(ok)["verify"]["detail"] == "POST /api/v1/verify: all 3 entries valid, with their proof_hash and kid"
    bad = [dict(entries[0], proof_hash="0x" + "99" * 32), {"manifest_hash": "0x" + "77" * 32}]
    res = module("cap_api_verify", dict(url=source.url, token_file=token_file, entries=bad, checks=["verify"]))
    assert res.failed
    assert [(d["kind"], d["id"], d["field"]) for d in res["differences"]] == [
        ("entry", entries[0]["manifest_hash"], "valid"), ("entry", "0x" + "77" * 32, "valid")]
    assert "proof_hash does not match the registry entry" in res["differences"][0]["actual"]
    assert "HTTP 404" in res["differences"][1]["actual"]


# ---------------------------------------------------------------------------
# Transport, TLS and options

def test_an_unreachable_api_fails_every_check_with_the_reason(module, token_file):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    res = module("cap_api_verify", dict(url=url, token_file=token_file, checks=["health", "ready", "compile"],
                                        timeout=5))
    assert res.failed
    for item_id in ("health", "ready", "compile"):
        assert items(res)[item_id]["status"] == "failed"
        assert "Connection refused" in items(res)[item_id]["detail"]
    assert not res.changed


def test_https_certificates(module, seeded, tmp_path, token_file):
    ca, cert, key = helpers_cap.make_tls_material(tmp_path)
    server = helpers_cap.start_tls_instance(helpers_cap.copy_tree(seeded[0], tmp_path / "app"), cert, key)
    try:
        args = dict(url=server.url, token_file=token_file, checks=["health", "ready"])
        refused = module("cap_api_verify", args)
        assert refused.failed
        assert "CERTIFICATE_VERIFY_FAILED" in items(refused)["health"]["detail"]
        trusted = module("cap_api_verify", dict(args, ca_path=str(ca)))
        assert not trusted.failed, trusted.msg
        unverified = module("cap_api_verify", dict(args, validate_certs=False))
        assert not unverified.failed, unverified.msg
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [
    (dict(checks=["policies"]), "policies needs policy_store"),
    (dict(checks=["compare", "verify"]), "compare needs compare_url; verify needs entries"),
    (dict(token="placeholder-token-value"), "mutually exclusive"),
    (dict(compare_token="placeholder-token-value"), "compare_url"),
    (dict(url="cap-restore.example.com"), "must be an http:// or https:// base URL"),
    (dict(checks=[]), "checks is empty"),
    (dict(workers=0), "workers must be between 1 and 32"),
])
def test_options_are_checked(module, token_file, args, message):
    options = dict(url="http://127.0.0.1:9", token_file=token_file)
    options.update(args)
    res = module("cap_api_verify", options)
    assert res.failed
    assert message in res.msg


def test_a_token_is_required_and_an_empty_token_file_is_refused(module, source, tmp_path):
    res = module("cap_api_verify", dict(url=source.url, checks=["health"]))
    assert res.failed and "one of token or token_file is required" in res.msg
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "token file %s is empty" % empty in module(
        "cap_api_verify", dict(url=source.url, token_file=str(empty))).msg


def test_ansible_doc_renders():
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "cap_api_verify"], cwd=ROOT,
                          env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "compare_url" in proc.stdout and "smoke_test_policy_hash" in proc.stdout


def test_empty_check_list_only_describes_the_policy_store(module, tmp_path):
    store = {"version": "cap-policy-store.v1", "policies": []}
    path = tmp_path / "policy_store.json"
    path.write_text(json.dumps(store))
    res = module("cap_api_verify", {"checks": [], "policy_store": str(path)})
    assert not res.failed, res.msg
    assert res["policies_in_store"] == 0 and res["policy_hashes"] == []
    missing = module("cap_api_verify", {"checks": []})
    assert missing.failed and "policy_store" in missing.msg
    no_url = module("cap_api_verify", {"checks": ["health"], "token": "x"})
    assert no_url.failed and "url is required" in no_url.msg
