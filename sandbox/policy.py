"""Policies, their compiled IR, and the policy store (cap-policy-store.v1).

A policy document (``cap-policy.v1``) states what a compliance attestation must
show: a list of rules over named input fields. ``compile_policy`` validates a
policy and turns it into the intermediate representation (``cap-ir.v1``) the
verifier evaluates. Both are plain JSON of strings, integers, booleans, lists
and objects; floats are refused, so the canonical JSON form (and with it
``policy_hash`` and ``ir_hash``) is the same on every instance and in every
language. docs/cap-api-contract.md describes the formats for people.
"""

from __future__ import annotations

import json
import os
import re
import threading

import sandbox  # noqa: F401  (makes ansible.module_utils.cap_* importable)
from ansible.module_utils.cap_fsutil import atomic_write_bytes
from ansible.module_utils.cap_hashing import (
    CapHashError,
    canonical_json_bytes,
    is_prefixed_hash,
    sha3_bytes,
    sha3_canonical,
    strict_json_loads,
)

POLICY_SCHEMA = "cap-policy.v1"
IR_VERSION = "cap-ir.v1"
STORE_VERSION = "cap-policy-store.v1"

POLICY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
RULE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,7}$")
VERSION_RE = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
DATE_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
JURISDICTION_RE = re.compile(r"^[A-Z]{2}$")

# Integers must survive a round trip through any JSON implementation (IEEE doubles).
MAX_SAFE_INT = 2 ** 53 - 1
MAX_RULES = 256
MAX_SET_VALUES = 512
MAX_TEXT = {"name": 200, "description": 4000, "legal_basis": 200, "tag": 64, "string": 256,
            "list_id": 128}

SEVERITIES = ("critical", "major", "minor")
DEFAULT_SEVERITY = "critical"
# Symbolic spellings accepted in policies; the IR always carries the word form.
OP_ALIASES = {"==": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
EQUALITY_OPS = ("eq", "ne")
ORDER_OPS = ("lt", "lte", "gt", "gte")
SET_OPS = ("in", "not_in")
OPS = EQUALITY_OPS + ORDER_OPS + SET_OPS + ("range", "exists", "non_membership")
# Keys each operator takes besides id, op, field, description and severity.
OPERANDS = {op: ("value",) for op in EQUALITY_OPS + ORDER_OPS}
OPERANDS.update({op: ("values",) for op in SET_OPS})
OPERANDS.update({"range": ("min", "max"), "exists": (), "non_membership": ("list_id", "list_root")})

POLICY_REQUIRED = ("schema", "id", "name", "version", "legal_basis", "rules")
POLICY_OPTIONAL = ("description", "jurisdiction", "effective_from", "tags")
RULE_COMMON = ("id", "op", "field", "description", "severity")
RECORD_KEYS = ("policy_hash", "ir_hash", "policy", "ir")


class PolicyError(ValueError):
    """A policy document is invalid; the message names the offending JSON path."""


class StoreFormatError(ValueError):
    """A policy store document is not a well-formed cap-policy-store.v1 document."""


class StoreIntegrityError(ValueError):
    """A record's hashes or IR do not match its policy; policy_hash names the record."""

    def __init__(self, policy_hash, message):
        super().__init__(message)
        self.policy_hash = policy_hash


# ---------------------------------------------------------------------------
# Validation and compilation

def _fail(path, message):
    raise PolicyError("%s: %s" % (path, message))


def _text(value, path, limit, pattern=None, what="a non-empty string"):
    if not isinstance(value, str) or not value.strip():
        _fail(path, "must be %s" % what)
    if len(value) > limit:
        _fail(path, "is longer than %d characters" % limit)
    if pattern is not None and not pattern.match(value):
        _fail(path, "%r does not match %s" % (value, pattern.pattern))
    return value


def _integer(value, path):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, "must be an integer (floats are not allowed)")
    if abs(value) > MAX_SAFE_INT:
        _fail(path, "integer is outside +/-(2^53-1)")
    return value


def _scalar(value, path, allow_bool):
    if isinstance(value, bool):
        if not allow_bool:
            _fail(path, "must be an integer or a string, not a boolean")
        return value
    if isinstance(value, int):
        return _integer(value, path)
    if isinstance(value, str):
        return _text(value, path, MAX_TEXT["string"])
    _fail(path, "must be an integer or a string%s" % (" or a boolean" if allow_bool else ""))


def _set_sort_key(value):
    # Integers before strings, each in natural order: a stable total order for mixed sets.
    return (0, value, "") if isinstance(value, int) else (1, 0, value)


def _check_keys(obj, path, required, optional):
    if not isinstance(obj, dict):
        _fail(path, "must be a JSON object")
    for key in required:
        if key not in obj:
            _fail(path, "missing required key %r" % key)
    allowed = set(required) | set(optional)
    for key in sorted(obj):
        if key not in allowed:
            _fail(path, "unknown key %r" % key)


def _compile_rule(rule, path):
    if not isinstance(rule, dict):
        _fail(path, "must be a JSON object")
    rule_id = _text(rule.get("id"), path + ".id", 64, RULE_ID_RE)
    op = rule.get("op")
    if isinstance(op, str):
        op = OP_ALIASES.get(op, op)
    if op not in OPS:
        _fail(path + ".op", "unknown operator %r; expected one of %s or %s"
              % (rule.get("op"), ", ".join(OPS), ", ".join(sorted(OP_ALIASES))))
    operands = OPERANDS[op]
    _check_keys(rule, path, ("id", "op", "field") + operands, ("description", "severity"))
    field = _text(rule.get("field"), path + ".field", 200, FIELD_RE)
    if "description" in rule:
        _text(rule["description"], path + ".description", MAX_TEXT["description"])
    severity = rule.get("severity", DEFAULT_SEVERITY)
    if severity not in SEVERITIES:
        _fail(path + ".severity", "must be one of %s" % ", ".join(SEVERITIES))

    if op in EQUALITY_OPS:
        args = {"value": _scalar(rule["value"], path + ".value", allow_bool=True)}
    elif op in ORDER_OPS:
        args = {"value": _integer(rule["value"], path + ".value")}
    elif op in SET_OPS:
        values = rule["values"]
        if not isinstance(values, list) or not values:
            _fail(path + ".values", "must be a non-empty list")
        if len(values) > MAX_SET_VALUES:
            _fail(path + ".values", "has more than %d values" % MAX_SET_VALUES)
        checked = [_scalar(v, "%s.values[%d]" % (path, i), allow_bool=False)
                   for i, v in enumerate(values)]
        ordered = sorted(checked, key=_set_sort_key)
        for previous, current in zip(ordered, ordered[1:]):
            if _set_sort_key(previous) == _set_sort_key(current):
                _fail(path + ".values", "value %r appears twice" % (current,))
        args = {"values": ordered}
    elif op == "range":
        low = _integer(rule["min"], path + ".min")
        high = _integer(rule["max"], path + ".max")
        if low > high:
            _fail(path, "min %d is greater than max %d" % (low, high))
        args = {"max": high, "min": low}
    elif op == "non_membership":
        list_id = _text(rule["list_id"], path + ".list_id", MAX_TEXT["list_id"], RULE_ID_RE)
        root = rule["list_root"]
        if not is_prefixed_hash(root):
            _fail(path + ".list_root", "must be '0x' followed by 64 lowercase hex digits")
        args = {"list_id": list_id, "list_root": root}
    else:  # exists
        args = {}
    return {"rule_id": rule_id, "op": op, "field": field, "args": args, "severity": severity}


def validate_policy(policy):
    """Check a cap-policy.v1 document; raise PolicyError naming the first problem."""
    compile_policy(policy)


def compile_policy(policy):
    """Validate a cap-policy.v1 document and return its cap-ir.v1 IR.

    The IR is a pure function of the policy: operator aliases become words,
    default severities are filled in, set values are sorted, predicates are
    sorted by rule id, and the IR names the policy_hash it was compiled from.
    """
    _check_keys(policy, "$", POLICY_REQUIRED, POLICY_OPTIONAL)
    if policy["schema"] != POLICY_SCHEMA:
        _fail("$.schema", "must be %r" % POLICY_SCHEMA)
    policy_id = _text(policy["id"], "$.id", 100, POLICY_ID_RE)
    _text(policy["name"], "$.name", MAX_TEXT["name"])
    version = _text(policy["version"], "$.version", 32, VERSION_RE, "a MAJOR.MINOR.PATCH string")
    basis = policy["legal_basis"]
    if not isinstance(basis, list) or not basis:
        _fail("$.legal_basis", "must be a non-empty list of strings")
    for index, item in enumerate(basis):
        _text(item, "$.legal_basis[%d]" % index, MAX_TEXT["legal_basis"])
    if "description" in policy:
        _text(policy["description"], "$.description", MAX_TEXT["description"])
    jurisdiction = policy.get("jurisdiction")
    if jurisdiction is not None:
        _text(jurisdiction, "$.jurisdiction", 2, JURISDICTION_RE, "an ISO 3166-1 alpha-2 code")
    effective_from = policy.get("effective_from")
    if effective_from is not None:
        _text(effective_from, "$.effective_from", 10, DATE_RE, "a YYYY-MM-DD date")
    tags = policy.get("tags", [])
    if not isinstance(tags, list):
        _fail("$.tags", "must be a list of strings")
    for index, tag in enumerate(tags):
        _text(tag, "$.tags[%d]" % index, MAX_TEXT["tag"], RULE_ID_RE)
    if len(set(tags)) != len(tags):
        _fail("$.tags", "contains duplicates")

    rules = policy["rules"]
    if not isinstance(rules, list) or not rules:
        _fail("$.rules", "must be a non-empty list")
    if len(rules) > MAX_RULES:
        _fail("$.rules", "has more than %d rules" % MAX_RULES)
    predicates = [_compile_rule(rule, "$.rules[%d]" % index) for index, rule in enumerate(rules)]
    seen = set()
    for index, predicate in enumerate(predicates):
        if predicate["rule_id"] in seen:
            _fail("$.rules[%d].id" % index, "rule id %r appears twice" % predicate["rule_id"])
        seen.add(predicate["rule_id"])
    predicates.sort(key=lambda p: p["rule_id"])

    try:
        policy_hash = sha3_canonical(policy)
    except CapHashError as exc:
        _fail("$", str(exc))
    return {
        "ir_version": IR_VERSION,
        "policy_hash": policy_hash,
        "policy_id": policy_id,
        "policy_version": version,
        "jurisdiction": jurisdiction,
        "effective_from": effective_from,
        "combine": "all",
        "inputs": sorted({p["field"] for p in predicates}),
        "predicates": predicates,
        "rule_count": len(predicates),
    }


def _canonical_copy(value):
    # Records keep objects in canonical key order, so every instance serves the same bytes
    # for a policy however its keys were ordered when it was compiled or restored.
    return json.loads(canonical_json_bytes(value).decode("utf-8"))


def make_record(policy):
    """The store record of a policy: {"policy_hash", "ir_hash", "policy", "ir"}."""
    ir = compile_policy(policy)
    return {"policy_hash": ir["policy_hash"], "ir_hash": sha3_canonical(ir),
            "policy": _canonical_copy(policy), "ir": _canonical_copy(ir)}


# A fixed policy and the hashes every correct implementation gives it: the
# verifier_core readiness check compiles it and compares (a known-answer test).
SELF_TEST_POLICY = {
    "schema": POLICY_SCHEMA,
    "id": "cap-self-test",
    "name": "Verifier core known-answer test",
    "version": "1.0.0",
    "legal_basis": ["internal: verifier self-test"],
    "rules": [
        {"id": "b-range", "op": "range", "field": "sample.score", "min": 0, "max": 100},
        {"id": "a-set", "op": "in", "field": "sample.tier", "values": ["gold", 3, "bronze", 1]},
        {"id": "c-cmp", "op": ">=", "field": "sample.count", "value": 2, "severity": "minor"},
    ],
}
SELF_TEST_POLICY_HASH = "0x11e3b65cfa8a6893cb88c16347346035c635a87466bfec41b50f4ff7f2da6f61"
SELF_TEST_IR_HASH = "0xa4bf44a9b39391f1e96a21aa4ee5b2f716b1f8b72b99abdc8e20f530b9e886f7"


def self_test():
    """None when compile and hashing give the known answers, else the reason."""
    try:
        record = make_record(SELF_TEST_POLICY)
    except (PolicyError, CapHashError) as exc:
        return "self-test policy does not compile: %s" % exc
    if record["policy_hash"] != SELF_TEST_POLICY_HASH:
        return "self-test policy_hash is %s, expected %s" % (record["policy_hash"],
                                                            SELF_TEST_POLICY_HASH)
    if record["ir_hash"] != SELF_TEST_IR_HASH:
        return "self-test ir_hash is %s, expected %s" % (record["ir_hash"], SELF_TEST_IR_HASH)
    return None


# ---------------------------------------------------------------------------
# Store documents

def store_document(records):
    """A cap-policy-store.v1 document of records, sorted by policy_hash."""
    return {"version": STORE_VERSION,
            "policies": sorted(records, key=lambda r: r["policy_hash"])}


def serialize_store(records):
    """The byte form of a store: canonical JSON of store_document() plus a newline."""
    return canonical_json_bytes(store_document(records)) + b"\n"


def check_record(record):
    """Recompute a record's hashes and IR from its policy; raise StoreIntegrityError."""
    claimed = record["policy_hash"]
    policy = record["policy"]
    try:
        actual_hash = sha3_canonical(policy)
    except CapHashError as exc:
        raise StoreIntegrityError(claimed, "policy %s has no canonical form: %s" % (claimed, exc))
    if actual_hash != claimed:
        raise StoreIntegrityError(claimed, "policy %s: policy_hash does not match the policy "
                                           "(content hashes to %s)" % (claimed, actual_hash))
    try:
        ir_hash = sha3_canonical(record["ir"])
    except CapHashError as exc:
        raise StoreIntegrityError(claimed, "policy %s: ir has no canonical form: %s" % (claimed, exc))
    if ir_hash != record["ir_hash"]:
        raise StoreIntegrityError(claimed, "policy %s: ir_hash does not match the ir "
                                           "(ir hashes to %s)" % (claimed, ir_hash))
    try:
        compiled = compile_policy(policy)
    except PolicyError as exc:
        raise StoreIntegrityError(claimed, "policy %s does not compile: %s" % (claimed, exc))
    if canonical_json_bytes(compiled) != canonical_json_bytes(record["ir"]):
        raise StoreIntegrityError(claimed, "policy %s: ir is not what the policy compiles to"
                                  % claimed)


def parse_store_document(doc):
    """Validate a cap-policy-store.v1 document; return its records (sorted by policy_hash).

    Structural problems raise StoreFormatError; a record whose policy_hash,
    ir_hash or ir does not match its policy raises StoreIntegrityError naming
    the first such record in document order.
    """
    if not isinstance(doc, dict):
        raise StoreFormatError("policy store must be a JSON object")
    if doc.get("version") != STORE_VERSION:
        raise StoreFormatError("policy store version must be %r, got %r"
                               % (STORE_VERSION, doc.get("version")))
    extra = sorted(set(doc) - {"version", "policies"})
    if extra:
        raise StoreFormatError("policy store has unknown keys: %s" % ", ".join(extra))
    policies = doc.get("policies")
    if not isinstance(policies, list):
        raise StoreFormatError("policy store 'policies' must be a list")
    seen = set()
    records = []
    for index, record in enumerate(policies):
        where = "policies[%d]" % index
        if not isinstance(record, dict) or set(record) != set(RECORD_KEYS):
            raise StoreFormatError("%s must be an object with exactly the keys %s"
                                   % (where, ", ".join(RECORD_KEYS)))
        for key in ("policy_hash", "ir_hash"):
            if not is_prefixed_hash(record[key]):
                raise StoreFormatError("%s.%s is not a 0x-prefixed SHA3-256 hash" % (where, key))
        if not isinstance(record["policy"], dict) or not isinstance(record["ir"], dict):
            raise StoreFormatError("%s: policy and ir must be JSON objects" % where)
        if record["policy_hash"] in seen:
            raise StoreFormatError("%s: policy_hash %s appears twice" % (where, record["policy_hash"]))
        seen.add(record["policy_hash"])
        check_record(record)
        records.append({key: record[key] for key in RECORD_KEYS})
    records.sort(key=lambda r: r["policy_hash"])
    return records


def records_from_rows(rows):
    """Store records from the registry's policies table rows (DR scenario 3, option B).

    rows: mappings (sqlite3.Row or dict) with policy_hash, ir_hash, policy_json
    and ir_json. The records are checked exactly as a restored store is, and
    store_document(records) can be POSTed to /api/v1/policy/restore.
    """
    records = [{"policy_hash": row["policy_hash"], "ir_hash": row["ir_hash"],
                "policy": strict_json_loads(row["policy_json"]),
                "ir": strict_json_loads(row["ir_json"])} for row in rows]
    return parse_store_document(store_document(records))


# ---------------------------------------------------------------------------
# The in-memory store of a running instance

class PolicyStore:
    """Thread-safe in-memory policy store, persisted atomically on every change.

    load_error is the reason the file given at start could not be used (the store
    then starts empty); it is cleared by the first successful persist.
    """

    def __init__(self, path):
        self.path = path
        self._lock = threading.RLock()
        self._records = {}
        self._serialized = serialize_store([])
        self.load_error = None

    def load(self):
        """Load the persisted store; a missing file is an empty store, a bad one an error."""
        with self._lock:
            self._records = {}
            self._serialized = serialize_store([])
            self.load_error = None
            if not os.path.exists(self.path):
                return 0
            try:
                with open(self.path, "rb") as handle:
                    doc = strict_json_loads(handle.read())
                records = parse_store_document(doc)
            except (OSError, ValueError, RecursionError) as exc:
                self.load_error = "policy store file %s is unusable: %s" % (
                    os.path.basename(self.path), exc)
                return 0
            self._set(records)
            return len(records)

    def _set(self, records):
        self._records = {r["policy_hash"]: r for r in records}
        self._serialized = serialize_store(list(self._records.values()))

    def _write(self, data):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write_bytes(self.path, data, mode=0o644)

    def add(self, record):
        """Store a record; returns True when it was new. Persists on change."""
        with self._lock:
            if record["policy_hash"] in self._records:
                return False
            previous = dict(self._records)
            self._records[record["policy_hash"]] = record
            self._serialized = serialize_store(list(self._records.values()))
            try:
                self._write(self._serialized)
            except OSError:
                self._set(list(previous.values()))
                raise
            self.load_error = None
            return True

    def replace(self, records):
        """Replace the whole store with already checked records; persist first."""
        with self._lock:
            serialized = serialize_store(records)
            self._write(serialized)
            self._records = {r["policy_hash"]: r for r in records}
            self._serialized = serialized
            self.load_error = None

    def get(self, policy_hash):
        with self._lock:
            return self._records.get(policy_hash)

    def hashes(self):
        with self._lock:
            return sorted(self._records)

    def __len__(self):
        with self._lock:
            return len(self._records)

    def serialized(self):
        """(bytes, sha3) of the store exactly as build/policy_store.json holds it."""
        with self._lock:
            data = self._serialized
        return data, sha3_bytes(data)
