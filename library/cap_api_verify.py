#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_api_verify
short_description: Run the restore runbook's API checks against a CAP Verifier API instance
description:
  - Runs the checks of the runbook's Step 7 (Tests 1-4) and the API items of its Validation
    Checklist in one task, and returns a checklist in the runbook's sections and wording, the
    differences found, and a summary a report or a metric can be written from.
  - >-
    C(health) - GET C(/healthz) answers 200 with C({"status": "OK", "version": ..., "build_hash": ...})
    (Test 1).
  - C(ready) - GET C(/readyz) answers 200 and the checks C(verifier_core), C(crypto), C(registry) and
    C(policy_store) are all OK (Test 2). A failure names each failing check and its reason.
  - C(auth) - requests without a token, with a malformed token, with a token signed by another key,
    and with an unsigned (C(alg none)) token to C(/readyz) and C(/api/v1/policies) are refused with 401
    (never 200, never 500), and the given token is accepted.
  - C(policies) - for every policy in O(policy_store) (the backup's C(policy_store.json)), the
    backup's C(policy_hash) and C(ir_hash) equal SHA3-256 of the stored policy and IR; GET
    C(/api/v1/policy/<policy_hash>) answers 200 with the same C(policy_hash) and C(ir_hash), and
    content that hashes to them; its C(etag) header is the first 16 hex digits of C(policy_hash),
    quoted (Tests 3 and 4); HEAD answers with the same headers; C(If-None-Match) with the ETag answers
    304. The set of policies GET C(/api/v1/policies) lists must equal the backup's (the compile
    smoke-test policy aside).
  - C(compare) - lists the policies of O(compare_url) (the source system in a DR drill) and of
    O(url), fetches every policy from both, and reports each one whose C(policy_hash), C(ir_hash),
    ETag or content differs, or that only one side holds (the smoke-test policy aside).
  - >-
    C(verify) - POST C(/api/v1/verify) for each of O(entries) answers C(valid: true) with the same
    C(proof_hash) (and C(kid), when given).
  - C(compile) - POST C(/api/v1/policy/compile) with a fixed smoke-test policy answers 200 or 201 with
    a C(policy_hash) equal to SHA3-256 of the policy and the matching ETag, and GET reads it back.
    B(This stores one policy in the target's policy store) - the smoke-test policy
    C(cap-restore-smoke-test), also in the registry's C(policies) table when the registry is SQLite.
    It has the same hash on every run, so a rerun finds it already stored. RV(smoke_test_policy_hash)
    gives its hash.
  - Policies are fetched by a few threads, each request through Ansible's C(open_url) machinery
    with one TLS context shared by all of them; redirects are not followed.
version_added: "1.0.0"
author: CAP Engineering
options:
  url:
    description:
      - Base URL of the instance to check, without C(/api/v1), for example
        C(https://cap-restore.example.com) or C(http://127.0.0.1:8080).
      - Required unless O(checks) is an empty list.
    type: str
  token:
    description:
      - Bearer token (OAuth2 JWT) for O(url).
      - O(token) or O(token_file) is required unless O(checks) is an empty list.
    type: str
  token_file:
    description: File holding the bearer token for O(url); surrounding white space is ignored.
    type: path
  checks:
    description:
      - The checks to run; they run in the order C(health), C(ready), C(auth), C(policies),
        C(compare), C(verify), C(compile).
      - Defaults to every check whose input is given - C(health), C(ready), C(auth) and C(compile)
        always, C(policies) with O(policy_store), C(compare) with O(compare_url), and C(verify) with
        O(entries). Naming a check without its input is an error.
      - An empty list runs no check and contacts nothing; the module then only reads
        O(policy_store) and returns RV(policies_in_store) and RV(policy_hashes).
    type: list
    elements: str
    choices: [health, ready, auth, policies, compare, verify, compile]
  policy_store:
    description: The backup's C(policy_store.json) (cap-policy-store.v1), the expected policies.
    type: path
  compare_url:
    description: Base URL of the system to compare O(url) with (the source of the backup).
    type: str
  compare_token:
    description: Bearer token for O(compare_url). Defaults to the token for O(url).
    type: str
  compare_token_file:
    description: File holding the bearer token for O(compare_url).
    type: path
  compare_allow_newer:
    description:
      - Accept policies that only O(compare_url) holds. A live source compiles policies after the
        backup was taken; a DR drill counts them (RV(summary)) instead of failing on them. Every
        policy the target holds must still be identical on the source.
    type: bool
    default: false
  entries:
    description:
      - Registry entries to check with POST C(/api/v1/verify), for example
        M(cap_registry_verify)'s RV(cap_registry_verify#module:samples).
    type: list
    elements: dict
    suboptions:
      manifest_hash:
        description: The entry's C(manifest_hash).
        type: str
        required: true
      proof_hash:
        description: The C(proof_hash) the entry must have.
        type: str
      kid:
        description: The C(kid) the entry must have.
        type: str
      id:
        description: The entry's registry row id (informational).
        type: int
  validate_certs:
    description:
      - Verify the server's TLS certificate. Set to false only for a throwaway test target.
      - Applies to O(url) and O(compare_url).
    type: bool
    default: true
  ca_path:
    description: PEM file of the CA certificates to trust instead of the system's.
    type: path
  use_proxy:
    description: Use the proxy named by the C(https_proxy)/C(http_proxy)/C(no_proxy) environment variables.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each answer.
    type: int
    default: 30
  workers:
    description: Requests in flight at once while checking policies.
    type: int
    default: 4
  fail_on_error:
    description:
      - Fail when any check fails. The failure result still carries RV(checks), RV(summary) and
        RV(differences), so a C(rescue) can write the report and roll back.
    type: bool
    default: true
notes:
  - Supports check mode. The read-only checks run; C(compile), the only one that writes, is
    reported as skipped.
  - RV(changed) is true only when C(compile) stored the smoke-test policy for the first time.
  - Tokens are never returned or logged, including tokens read from a file.
seealso:
  - module: cap_registry_verify
  - module: ansible.builtin.uri
"""

EXAMPLES = r"""
# Step 7, Tests 1-4, and the API items of the Validation Checklist:
#   curl -s https://cap-restore.example.com/healthz
#   curl -s -H "Authorization: Bearer $RESTORE_TOKEN" https://cap-restore.example.com/readyz
#   curl -s -H "Authorization: Bearer $RESTORE_TOKEN" .../api/v1/policy/$POLICY_HASH | jq .policy_hash
#   curl -sI -H "Authorization: Bearer $RESTORE_TOKEN" .../api/v1/policy/$POLICY_HASH | grep -i etag
# for every policy of the backup
- name: Check the restored API
  cap_api_verify:
    url: https://cap-restore.example.com
    token_file: "{{ _restore_token_file }}"
    policy_store: /restore/policy_store.json
    entries: "{{ __registry.samples }}"
  register: __api_checks

# DR drill: the restored system against the live source (Rollback Procedure, step 3, for every policy)
- name: Compare the restored system with production
  cap_api_verify:
    url: https://cap-restore.example.com
    token_file: /run/cap/restore.token
    compare_url: https://cap-prod.example.com
    compare_token_file: /run/cap/prod-read.token
    checks: [compare]
    fail_on_error: false
  register: __drill_compare

# A quick look without writing anything (compile is skipped in check mode)
- name: Health, readiness and authentication only
  cap_api_verify:
    url: http://127.0.0.1:8080
    token: "{{ cap_restore_token }}"
    checks: [health, ready, auth]
"""

RETURN = r"""
policies_in_store:
  description: Number of policies in O(policy_store).
  type: int
  returned: when O(checks) is an empty list
  sample: 30
policy_hashes:
  description: The policy hashes of O(policy_store), sorted.
  type: list
  elements: str
  returned: when O(checks) is an empty list
url:
  description: The base URL checked.
  type: str
  returned: always
compare_url:
  description: The base URL of the system compared with.
  type: str
  returned: when the C(compare) check ran
passed:
  description: True when no check failed (skipped checks do not fail).
  type: bool
  returned: always
checks:
  description:
    - The checklist, one item per runbook line, always all of them, in this order -
      C(health), C(ready), C(policy_store_loaded) (section Functional Checks); C(policy_hash),
      C(ir_hash), C(etag), C(compare) (Hash Integrity Checks); C(compile), C(retrieve), C(verify),
      C(auth) (API Functionality Checks).
    - C(status) is C(passed), C(failed) or C(skipped); C(passed) is true only for C(passed).
  type: list
  elements: dict
  returned: always
  sample:
    - id: health
      section: Functional Checks
      name: Health check returns 200 (/healthz)
      status: passed
      passed: true
      detail: HTTP 200, status OK, version 0.11.0, build_hash null
    - id: policy_hash
      section: Hash Integrity Checks
      name: policy_hash matches original (SHA3-256)
      status: failed
      passed: false
      detail: "1 of 30 policies differ; first: 0x0afc... status: expected 200, got HTTP 404 Not Found: ..."
failed_checks:
  description: Names of the failed checklist items.
  type: list
  elements: str
  returned: always
summary:
  description:
    - Counts - C(checks_passed), C(checks_failed), C(checks_skipped), C(checks_total) (passed plus
      failed); C(policies_total) (in the backup's store), C(policies_checked), C(policies_matched)
      (listed and without any difference) and C(hash_verification_ratio) (matched / total);
      C(compare_policies_source), C(compare_policies_target), C(compare_policies_checked),
      C(compare_policies_matched) after C(compare); C(entries_checked), C(entries_valid) after
      C(verify); C(differences_total), C(differences_by_check), C(api_version), C(duration_seconds).
  type: dict
  returned: always
  sample: {"checks_passed": 11, "checks_failed": 0, "checks_skipped": 0, "checks_total": 11,
           "policies_total": 30, "policies_checked": 30, "policies_matched": 30,
           "hash_verification_ratio": 1.0, "differences_total": 0}
differences:
  description:
    - The first 100 differences, each C({check, kind, id, field, expected, actual}). C(kind) is
      C(policy) (C(id) is a policy_hash) or C(entry) (C(id) is a manifest_hash).
    - Fields of C(policies) - C(listed), C(status), C(body), C(store_policy_hash) and
      C(store_ir_hash) (the backup's record does not hash to its own hashes), C(policy_hash),
      C(ir_hash), C(content_policy_hash) and C(content_ir_hash) (served content hashes
      differently), C(etag), C(head_status), C(head_headers), C(if_none_match).
    - Fields of C(compare) (expected is the source's value, actual the target's) - C(listed),
      C(status), C(body), C(policy_hash), C(ir_hash), C(etag), C(policy), C(ir). Of C(verify) - C(valid).
  type: list
  elements: dict
  returned: always
  sample:
    - check: policies
      kind: policy
      id: "0x0afcb402e74ff6a11601863fc4ae2f2d756124db71bc703f5889ecefcd371ff4"
      field: etag
      expected: '"0afcb402e74ff6a1"'
      actual: '"ffffffffffffffff"'
differences_total:
  description: Number of differences found, including those beyond the first 100.
  type: int
  returned: always
policies_checked:
  description: Policies of the backup fetched from the target.
  type: int
  returned: always
smoke_test_policy_hash:
  description: policy_hash of the smoke-test policy the C(compile) check submits.
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_api import (
    CHECKS,
    ApiChecks,
    ApiClient,
    CapApiError,
    HttpSession,
    load_policy_store,
    read_token_file,
)

# Checks that need an input, and the option that gives it.
CHECK_INPUTS = {"policies": "policy_store", "compare": "compare_url", "verify": "entries"}


def _token(module, value, path):
    if path:
        try:
            value = read_token_file(path)
        except CapApiError as exc:
            module.fail_json(msg=str(exc))
    if value:
        module.no_log_values.add(value)
    return value


def describe_store(module, path):
    """With an empty check list: only read the policy store and say what it holds."""
    if not path:
        module.fail_json(msg="checks is empty: give policy_store to describe it, or name checks to run")
    try:
        store = load_policy_store(path)
    except CapApiError as exc:
        module.fail_json(msg=str(exc))
    hashes = [record.policy_hash for record in store]
    module.exit_json(changed=False, policies_in_store=len(hashes), policy_hashes=hashes,
                     checks=[], passed=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str"),
            token=dict(type="str", no_log=True),
            token_file=dict(type="path", no_log=False),
            checks=dict(type="list", elements="str", choices=list(CHECKS)),
            policy_store=dict(type="path"),
            compare_url=dict(type="str"),
            compare_token=dict(type="str", no_log=True),
            compare_token_file=dict(type="path", no_log=False),
            compare_allow_newer=dict(type="bool", default=False),
            entries=dict(type="list", elements="dict", options=dict(
                manifest_hash=dict(type="str", required=True),
                proof_hash=dict(type="str"),
                kid=dict(type="str"),
                id=dict(type="int"),
            )),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            use_proxy=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
            workers=dict(type="int", default=4),
            fail_on_error=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("token", "token_file"), ("compare_token", "compare_token_file")],
        required_by={"compare_token": "compare_url", "compare_token_file": "compare_url"},
        supports_check_mode=True,
    )
    p = module.params
    if p["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second, got %d" % p["timeout"])
    if not 1 <= p["workers"] <= 32:
        module.fail_json(msg="workers must be between 1 and 32, got %d" % p["workers"])
    if p["checks"] == []:
        describe_store(module, p["policy_store"])
    if not p["url"]:
        module.fail_json(msg="url is required to run checks")
    if not (p["token"] or p["token_file"]):
        module.fail_json(msg="one of token or token_file is required to run checks")
    if p["checks"] is None:
        checks = [c for c in CHECKS if c not in CHECK_INPUTS or p[CHECK_INPUTS[c]]]
    else:
        checks = list(p["checks"])
        lacking = ["%s needs %s" % (c, CHECK_INPUTS[c]) for c in checks if c in CHECK_INPUTS
                   and not p[CHECK_INPUTS[c]]]
        if lacking:
            module.fail_json(msg="checks without their input: %s" % "; ".join(lacking))

    token = _token(module, p["token"], p["token_file"])
    compare_token = _token(module, p["compare_token"], p["compare_token_file"]) or token
    store = None
    try:
        if "policies" in checks:
            store = load_policy_store(p["policy_store"])
        session = HttpSession(validate_certs=p["validate_certs"], ca_path=p["ca_path"],
                              timeout=p["timeout"], use_proxy=p["use_proxy"])
        client = ApiClient(session, p["url"], token)
        compare_client = ApiClient(session, p["compare_url"], compare_token) if "compare" in checks else None
    except CapApiError as exc:
        module.fail_json(msg=str(exc))

    runner = ApiChecks(client, policy_store=store, entries=p["entries"], compare_client=compare_client,
                       compare_allow_newer=p["compare_allow_newer"],
                       workers=p["workers"], check_mode=module.check_mode)
    result = runner.run(checks)
    result["url"] = client.base_url
    if compare_client is not None:
        result["compare_url"] = compare_client.base_url
    if not result["passed"] and p["fail_on_error"]:
        first = ["%s %s %s: expected %s, got %s" % (d["kind"], d["id"], d["field"], d["expected"], d["actual"])
                 for d in result["differences"][:5]]
        module.fail_json(
            msg="CAP API checks failed on %s: %s%s" % (
                client.base_url, "; ".join(result["failed_checks"]),
                ". First differences: %s" % "; ".join(first) if first else ""),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
