"""Policy compilation, hashing and the policy store format (sandbox/policy.py)."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest

import sandbox  # noqa: F401
from ansible.module_utils.cap_hashing import canonical_json_bytes, sha3_bytes, sha3_canonical
from sandbox import policy as P
from sandbox.registry import create_schema, policy_row

POLICY = {
    "schema": "cap-policy.v1",
    "id": "eudr-deforestation-free",
    "name": "EUDR deforestation-free commodities",
    "version": "2.1.0",
    "legal_basis": ["Regulation (EU) 2023/1115 Art. 3"],
    "jurisdiction": "EU",
    "effective_from": "2025-12-30",
    "tags": ["deforestation"],
    "description": "Plots carry geolocation and were not deforested after the cut-off date.",
    "rules": [
        {"id": "geolocation", "op": "eq", "field": "plot.geolocation_present", "value": True},
        {"id": "commodity", "op": "in", "field": "shipment.commodity", "values": ["wood", "cocoa", 7]},
        {"id": "area", "op": "<=", "field": "plot.area_hectares", "value": 400, "severity": "major"},
        {"id": "sanctions", "op": "non_membership", "field": "party.identifier_commitment",
         "list_id": "eu-consolidated-list", "list_root": "0x" + "ab" * 32},
        {"id": "share", "op": "range", "field": "chain.assessed_pct", "min": 70, "max": 100},
        {"id": "statement", "op": "exists", "field": "shipment.dds_ref"},
        {"id": "origin", "op": "not_in", "field": "origin.country", "values": ["xx"]},
    ],
}


def reordered(value):
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in sorted(value, reverse=True)}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_compile_is_deterministic_and_independent_of_key_order():
    first = P.make_record(POLICY)
    second = P.make_record(reordered(copy.deepcopy(POLICY)))
    assert first == second
    assert canonical_json_bytes(first) == canonical_json_bytes(second)
    assert first["policy_hash"] == sha3_canonical(POLICY)
    assert first["ir_hash"] == sha3_canonical(first["ir"])
    assert first["ir"]["policy_hash"] == first["policy_hash"]


def test_known_answer_hashes_are_pinned():
    # A change here changes every policy_hash/ir_hash in every backup: it must be deliberate.
    record = P.make_record(P.SELF_TEST_POLICY)
    assert record["policy_hash"] == "0x11e3b65cfa8a6893cb88c16347346035c635a87466bfec41b50f4ff7f2da6f61"
    assert record["ir_hash"] == "0xa4bf44a9b39391f1e96a21aa4ee5b2f716b1f8b72b99abdc8e20f530b9e886f7"
    assert P.self_test() is None


def test_ir_normalises_operators_sets_order_and_defaults():
    ir = P.compile_policy(POLICY)
    assert ir["ir_version"] == "cap-ir.v1"
    assert ir["combine"] == "all"
    assert [p["rule_id"] for p in ir["predicates"]] == sorted(r["id"] for r in POLICY["rules"])
    by_id = {p["rule_id"]: p for p in ir["predicates"]}
    assert by_id["area"]["op"] == "lte" and by_id["area"]["severity"] == "major"
    assert by_id["geolocation"]["severity"] == "critical"
    assert by_id["commodity"]["args"] == {"values": [7, "cocoa", "wood"]}
    assert by_id["share"]["args"] == {"max": 100, "min": 70}
    assert by_id["statement"]["args"] == {}
    assert ir["inputs"] == sorted({r["field"] for r in POLICY["rules"]})
    assert ir["rule_count"] == len(POLICY["rules"])
    assert ir["jurisdiction"] == "EU" and ir["effective_from"] == "2025-12-30"


def test_alias_and_word_operators_compile_to_the_same_predicates_but_different_policy_hashes():
    words = copy.deepcopy(POLICY)
    words["rules"][2]["op"] = "lte"
    a, b = P.make_record(POLICY), P.make_record(words)
    assert a["policy_hash"] != b["policy_hash"]
    assert a["ir"]["predicates"] == b["ir"]["predicates"]


@pytest.mark.parametrize("path, value, fragment", [
    (("rules", 2, "value"), 1.0, "floats are not allowed"),
    (("rules", 2, "value"), "400", "must be an integer"),
    (("rules", 2, "value"), 2 ** 60, "outside"),
    (("rules", 0, "value"), [1], "must be an integer or a string or a boolean"),
    (("rules", 1, "values"), [], "non-empty list"),
    (("rules", 1, "values"), [True], "not a boolean"),
    (("rules", 1, "values"), ["a", "a"], "appears twice"),
    (("rules", 3, "list_root"), "0xABC", "list_root"),
    (("rules", 4, "min"), 101, "greater than max"),
    (("rules", 0, "op"), "like", "unknown operator"),
    (("rules", 0, "severity"), "fatal", "severity"),
    (("rules", 0, "id"), "Geo Location", "$.rules[0].id"),
    (("id",), "", "$.id"),
    (("version",), "2.1", "$.version"),
    (("jurisdiction",), "Europe", "$.jurisdiction"),
    (("effective_from",), "2025-13-01", "$.effective_from"),
    (("legal_basis",), [], "$.legal_basis"),
    (("tags",), ["x", "x"], "duplicates"),
    (("schema",), "cap-policy.v2", "$.schema"),
    (("rules",), [], "non-empty list"),
])
def test_invalid_policies_are_refused_with_a_path(path, value, fragment):
    policy = copy.deepcopy(POLICY)
    target = policy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(P.PolicyError) as info:
        P.compile_policy(policy)
    assert fragment in str(info.value)


def test_unknown_keys_and_missing_operands_are_refused():
    for mutate, fragment in [
        (lambda p: p.update(owner="someone"), "unknown key 'owner'"),
        (lambda p: p["rules"][0].update(values=[1]), "unknown key 'values'"),
        (lambda p: p["rules"][4].pop("max"), "missing required key 'max'"),
        (lambda p: p.pop("name"), "missing required key 'name'"),
        (lambda p: p["rules"].append(dict(p["rules"][0])), "appears twice"),
    ]:
        policy = copy.deepcopy(POLICY)
        mutate(policy)
        with pytest.raises(P.PolicyError, match=fragment.replace("'", ".")):
            P.compile_policy(policy)
    with pytest.raises(P.PolicyError):
        P.compile_policy(["not", "an", "object"])


def _records():
    variants = []
    for n in range(5):
        policy = copy.deepcopy(POLICY)
        policy["version"] = "2.%d.0" % n
        variants.append(P.make_record(policy))
    return variants


def test_store_serialization_is_canonical_sorted_and_byte_stable():
    records = _records()
    data = P.serialize_store(records)
    assert data == P.serialize_store(list(reversed(records)))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    doc = json.loads(data)
    assert doc["version"] == "cap-policy-store.v1"
    assert [r["policy_hash"] for r in doc["policies"]] == sorted(r["policy_hash"] for r in records)
    assert canonical_json_bytes(doc) + b"\n" == data
    assert P.serialize_store(P.parse_store_document(doc)) == data


@pytest.mark.parametrize("field", ["policy", "ir", "ir_hash", "policy_hash"])
def test_parse_store_document_names_the_first_tampered_record(field):
    doc = json.loads(P.serialize_store(_records()))
    victim = doc["policies"][2]
    named = victim["policy_hash"]
    if field == "policy":
        victim["policy"]["name"] = "Changed"
    elif field == "ir":
        victim["ir"]["inputs"].append("smuggled.field")
    elif field == "ir_hash":
        victim["ir_hash"] = sha3_bytes(b"other")
    else:
        victim["policy_hash"] = named = sha3_bytes(b"other")
    doc["policies"][3]["policy"]["name"] = "Also changed"
    with pytest.raises(P.StoreIntegrityError) as info:
        P.parse_store_document(doc)
    assert info.value.policy_hash == named
    assert named in str(info.value)


def test_ir_that_hashes_right_but_is_not_the_compilation_is_refused():
    doc = json.loads(P.serialize_store(_records()))
    record = doc["policies"][0]
    record["ir"]["combine"] = "any"
    record["ir_hash"] = sha3_canonical(record["ir"])
    with pytest.raises(P.StoreIntegrityError, match="not what the policy compiles to"):
        P.parse_store_document(doc)


@pytest.mark.parametrize("doc", [
    None, [], {"version": "cap-policy-store.v2", "policies": []},
    {"version": "cap-policy-store.v1", "policies": [], "extra": 1},
    {"version": "cap-policy-store.v1", "policies": [{"policy_hash": "0x1"}]},
])
def test_malformed_store_documents_are_format_errors(doc):
    with pytest.raises(P.StoreFormatError):
        P.parse_store_document(doc)


def test_duplicate_records_are_a_format_error():
    records = _records()
    doc = {"version": P.STORE_VERSION, "policies": [records[0], records[0]]}
    with pytest.raises(P.StoreFormatError, match="appears twice"):
        P.parse_store_document(json.loads(json.dumps(doc)))


def test_strict_json_refuses_duplicates_and_constants():
    for text in ('{"a":1,"a":2}', '{"a":NaN}', '[Infinity]', '{"a":-Infinity}'):
        with pytest.raises(ValueError):
            P.strict_json_loads(text)
    assert P.strict_json_loads(b'{"a":[1,"x"]}') == {"a": [1, "x"]}


def test_store_can_be_rebuilt_from_the_registry_policies_table():
    records = _records()
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    create_schema(conn)
    conn.executemany("INSERT INTO policies VALUES (?, ?, ?, ?, ?)",
                     [policy_row(r, "2025-01-01T00:00:00Z") for r in records])
    rows = conn.execute("SELECT policy_hash, ir_hash, policy_json, ir_json FROM policies").fetchall()
    rebuilt = P.records_from_rows(rows)
    assert P.serialize_store(rebuilt) == P.serialize_store(records)
    conn.execute("UPDATE policies SET ir_json = replace(ir_json, '\"all\"', '\"any\"')")
    with pytest.raises(P.StoreIntegrityError):
        P.records_from_rows(conn.execute("SELECT * FROM policies").fetchall())


def test_policy_store_persists_atomically_and_reloads(tmp_path):
    path = tmp_path / "build" / "policy_store.json"
    store = P.PolicyStore(str(path))
    assert store.load() == 0 and store.load_error is None and len(store) == 0
    records = _records()
    assert store.add(records[0]) is True
    assert store.add(records[0]) is False
    store.replace(records[1:])
    assert store.hashes() == sorted(r["policy_hash"] for r in records[1:])
    data, digest = store.serialized()
    assert path.read_bytes() == data and digest == sha3_bytes(data)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    again = P.PolicyStore(str(path))
    assert again.load() == 4 and again.serialized() == (data, digest)
    assert [p.name for p in path.parent.iterdir()] == ["policy_store.json"]


def test_policy_store_reports_a_corrupt_file_and_starts_empty(tmp_path):
    path = tmp_path / "policy_store.json"
    path.write_text('{"version": "cap-policy-store.v1", "policies": [')
    store = P.PolicyStore(str(path))
    assert store.load() == 0
    assert "policy_store.json" in store.load_error
    store.add(_records()[0])
    assert store.load_error is None
