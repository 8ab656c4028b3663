"""Deterministic seeder for a CAP Verifier API data directory (the pod's /app).

    python -m sandbox.seed --data-dir DIR [--seed N] [--policies N] [--entries N]
                           [--format sqlite|json] [--created-at-base YYYY-MM-DDTHH:MM:SSZ]

The same arguments always give the same bytes in every file: timestamps are
derived from the seed, key seeds are SHA3-256 of a label and the seed number,
and nothing reads the clock or os.urandom. The seeded data holds hashes,
commitments, public keys and configuration only; the single secret is the
company private key, keys/company.ed25519, which backups must leave out.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime
import hashlib
import json
import multiprocessing
import os
import sqlite3
import sys
import time

import sandbox  # noqa: F401  (makes ansible.module_utils.cap_* importable)
from ansible.module_utils.cap_fsutil import atomic_write_bytes
from ansible.module_utils.cap_hashing import sha3_bytes, sha3_file
from ansible.module_utils.cap_keys import fingerprint, key_metadata, public_from_seed, public_pem
from ansible.module_utils.cap_sqlite import export_json
from sandbox.policy import POLICY_SCHEMA, make_record, serialize_store
from sandbox.registry import create_schema, policy_row, sign_entry

CONTENT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "content")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EPOCH = datetime.datetime(2025, 1, 6, 8, 0, 0, tzinfo=datetime.timezone.utc)
MIN_POLICIES = 1
INSERT_BATCH = 20000
# Entry counts from which signing is spread over processes, and the rows per task.
PARALLEL_THRESHOLD = 20000
PARALLEL_CHUNK = 25000

# Keys: (role, owner, usage, status, share of entries in tenths, age in days before the base time).
KEY_ROLES = (
    ("company", "CAP Engineering (company signing key)", ["registry-signing", "manifest-signing"],
     "active", 7, 30),
    ("legacy", "CAP Engineering (previous company signing key, retired)", ["registry-signing"],
     "retired", 2, 400),
    ("auditor", "Independent assurance partner (attestation key)", ["attestation"], "active", 1, 120),
)


def _digest(seed, label):
    return hashlib.sha3_256(("cap-sandbox|%d|%s" % (seed, label)).encode("utf-8")).digest()


def _number(seed, label, modulo):
    return int.from_bytes(_digest(seed, label)[:8], "big") % modulo


def _timestamp(moment):
    return moment.strftime(TIME_FORMAT)


def parse_created_at(text):
    """datetime of a 'YYYY-MM-DDTHH:MM:SSZ' string."""
    try:
        return datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        raise ValueError("created_at_base %r is not YYYY-MM-DDTHH:MM:SSZ" % (text,))


def default_created_at_base(seed):
    """A fixed moment derived from the seed: 2025-01-06T08:00:00Z plus up to 180 days."""
    return EPOCH + datetime.timedelta(seconds=_number(seed, "created-at-base", 180 * 86400))


# ---------------------------------------------------------------------------
# Policies

def _list_root(seed, name):
    return sha3_bytes("cap-sandbox|%d|screening-list|%s" % (seed, name))


def _policy_families(seed, variant):
    """Realistic supply-chain compliance policies; variant shifts thresholds deterministically."""
    def tune(label, base, spread):
        return base + _number(seed, "tune|%d|%s" % (variant, label), spread)

    return [
        {
            "id": "lksg-supplier-due-diligence", "name": "LkSG supplier due diligence",
            "legal_basis": ["LkSG section 3", "LkSG section 5", "LkSG section 6"], "jurisdiction": "DE",
            "tags": ["human-rights", "supply-chain"],
            "description": "Direct suppliers carry a current risk analysis, preventive measures and "
                           "no unresolved human-rights findings.",
            "rules": [
                {"id": "risk-analysis-age", "op": "lte", "field": "supplier.risk_analysis_age_days",
                 "value": tune("risk-age", 300, 66)},
                {"id": "audit-score", "op": ">=", "field": "supplier.audit_score",
                 "value": tune("audit", 60, 21)},
                {"id": "country-risk", "op": "in", "field": "supplier.country_risk_class",
                 "values": ["low", "medium"]},
                {"id": "open-findings", "op": "eq", "field": "supplier.open_critical_findings", "value": 0},
                {"id": "grievance-channel", "op": "exists", "field": "supplier.grievance_mechanism_ref",
                 "severity": "major"},
            ],
        },
        {
            "id": "eu-csddd-value-chain", "name": "CSDDD value chain due diligence",
            "legal_basis": ["Directive (EU) 2024/1760 Art. 8", "Directive (EU) 2024/1760 Art. 10"],
            "jurisdiction": "EU",
            "tags": ["human-rights", "environment"],
            "description": "Adverse impacts are identified, prevented and monitored along the chain "
                           "of activities.",
            "rules": [
                {"id": "impact-assessment", "op": "eq", "field": "company.impact_assessment_done",
                 "value": True},
                {"id": "tier-coverage", "op": "range", "field": "chain.assessed_tier_share_pct",
                 "min": tune("tier", 70, 21), "max": 100},
                {"id": "remediation-plan", "op": "exists", "field": "company.remediation_plan_ref"},
                {"id": "stakeholder-consultations", "op": "gte", "field": "company.stakeholder_consultations",
                 "value": tune("consult", 1, 4), "severity": "minor"},
            ],
        },
        {
            "id": "eudr-deforestation-free", "name": "EUDR deforestation-free commodities",
            "legal_basis": ["Regulation (EU) 2023/1115 Art. 3", "Regulation (EU) 2023/1115 Art. 9"],
            "tags": ["deforestation", "commodities"],
            "description": "Relevant commodities were produced on land not deforested after the "
                           "cut-off date and carry geolocation of every plot.",
            "effective_from": "2025-12-30",
            "rules": [
                {"id": "commodity", "op": "in", "field": "shipment.commodity",
                 "values": ["cattle", "cocoa", "coffee", "oil-palm", "rubber", "soya", "wood"]},
                {"id": "cutoff", "op": "eq", "field": "plot.deforestation_free_since_2020_12_31",
                 "value": True},
                {"id": "geolocation", "op": "eq", "field": "plot.geolocation_present", "value": True},
                {"id": "plot-size", "op": "lte", "field": "plot.area_hectares",
                 "value": tune("plot", 4, 3) * 100},
                {"id": "dds-reference", "op": "exists", "field": "shipment.due_diligence_statement_ref"},
            ],
        },
        {
            "id": "conflict-minerals-3tg", "name": "Conflict minerals (3TG) sourcing",
            "legal_basis": ["Regulation (EU) 2017/821 Art. 4", "Regulation (EU) 2017/821 Art. 5"],
            "tags": ["minerals"],
            "description": "Tin, tantalum, tungsten and gold come from conformant smelters and refiners.",
            "rules": [
                {"id": "mineral", "op": "in", "field": "material.mineral",
                 "values": ["gold", "tantalum", "tin", "tungsten"]},
                {"id": "smelter-status", "op": "in", "field": "smelter.rmap_status",
                 "values": ["active", "conformant"]},
                {"id": "high-risk-area", "op": "ne", "field": "origin.chaf_flag", "value": "red"},
                {"id": "volume", "op": "lt", "field": "material.annual_import_kg",
                 "value": tune("volume", 50, 50) * 1000, "severity": "minor"},
            ],
        },
        {
            "id": "sanctions-screening", "name": "Sanctions list screening",
            "legal_basis": ["Regulation (EU) No 269/2014", "Council Regulation (EC) No 2580/2001"],
            "tags": ["sanctions"],
            "description": "No party to the transaction appears on the consolidated sanctions list "
                           "committed to by the list root.",
            "rules": [
                {"id": "eu-consolidated", "op": "non_membership", "field": "party.identifier_commitment",
                 "list_id": "eu-consolidated-list",
                 "list_root": _list_root(seed, "eu-consolidated-%d" % variant)},
                {"id": "un-consolidated", "op": "non_membership", "field": "party.identifier_commitment",
                 "list_id": "un-sc-consolidated-list", "list_root": _list_root(seed, "un-sc-%d" % variant)},
                {"id": "screening-age", "op": "lte", "field": "party.screening_age_hours",
                 "value": tune("screen", 24, 49)},
            ],
        },
        {
            "id": "forced-labour-ban", "name": "Forced labour product ban",
            "legal_basis": ["Regulation (EU) 2024/3015 Art. 3"],
            "tags": ["human-rights", "forced-labour"],
            "description": "Products placed on the market were not made with forced labour.",
            "rules": [
                {"id": "risk-database", "op": "non_membership", "field": "producer.identifier_commitment",
                 "list_id": "forced-labour-risk-db", "list_root": _list_root(seed, "flr-%d" % variant)},
                {"id": "traceability", "op": "gte", "field": "product.traceability_tiers",
                 "value": tune("trace", 2, 3)},
                {"id": "worker-voice", "op": "exists", "field": "producer.worker_voice_survey_ref",
                 "severity": "major"},
            ],
        },
        {
            "id": "cbam-embedded-emissions", "name": "CBAM embedded emissions reporting",
            "legal_basis": ["Regulation (EU) 2023/956 Art. 35", "Implementing Regulation (EU) 2023/1773"],
            "tags": ["climate", "customs"],
            "description": "Imports of CBAM goods report verified embedded emissions per tonne.",
            "rules": [
                {"id": "goods-category", "op": "in", "field": "import.cbam_category",
                 "values": ["aluminium", "cement", "electricity", "fertilisers", "hydrogen", "iron-steel"]},
                {"id": "intensity", "op": "lte", "field": "import.embedded_kgco2e_per_tonne",
                 "value": tune("intensity", 1800, 900)},
                {"id": "verified", "op": "eq", "field": "import.emissions_verified", "value": True},
                {"id": "default-values-share", "op": "range", "field": "import.default_values_share_pct",
                 "min": 0, "max": tune("defaults", 20, 31), "severity": "major"},
            ],
        },
        {
            "id": "battery-due-diligence", "name": "Battery raw material due diligence",
            "legal_basis": ["Regulation (EU) 2023/1542 Art. 48", "Regulation (EU) 2023/1542 Art. 52"],
            "tags": ["batteries", "minerals"],
            "description": "Cobalt, lithium, nickel and natural graphite in batteries are covered by a "
                           "due diligence policy with third-party verification.",
            "rules": [
                {"id": "raw-material", "op": "in", "field": "material.battery_raw_material",
                 "values": ["cobalt", "lithium", "natural-graphite", "nickel"]},
                {"id": "third-party-verified", "op": "eq", "field": "supplier.third_party_verified",
                 "value": True},
                {"id": "recycled-cobalt", "op": "gte", "field": "battery.recycled_cobalt_pct",
                 "value": tune("cobalt", 8, 9), "severity": "major"},
            ],
        },
        {
            "id": "iso-14001-certification", "name": "Environmental management certification",
            "legal_basis": ["ISO 14001:2015", "Customer supplier code section 4.2"],
            "tags": ["environment", "certification"],
            "description": "Production sites hold a valid ISO 14001 certificate from an accredited body.",
            "rules": [
                {"id": "certificate-valid-days", "op": "gt", "field": "certificate.days_to_expiry",
                 "value": tune("expiry", 30, 61)},
                {"id": "accredited", "op": "eq", "field": "certificate.body_accredited", "value": True},
                {"id": "scope", "op": "eq", "field": "certificate.scope_covers_site", "value": True},
            ],
        },
        {
            "id": "anti-bribery-controls", "name": "Anti-bribery adequate procedures",
            "legal_basis": ["Bribery Act 2010 section 7", "Bribery Act 2010 section 9 guidance"],
            "jurisdiction": "GB",
            "tags": ["anti-corruption"],
            "description": "Intermediaries passed anti-bribery due diligence and training is current.",
            "rules": [
                {"id": "intermediary-dd", "op": "eq", "field": "intermediary.due_diligence_passed",
                 "value": True},
                {"id": "training-age", "op": "lte", "field": "intermediary.training_age_days",
                 "value": tune("training", 365, 366)},
                {"id": "cpi-score", "op": ">=", "field": "country.cpi_score", "value": tune("cpi", 30, 21),
                 "severity": "minor"},
            ],
        },
        {
            "id": "uflpa-entity-list", "name": "UFLPA entity list screening",
            "legal_basis": ["Uyghur Forced Labor Prevention Act section 2(d)"],
            "jurisdiction": "US",
            "tags": ["forced-labour", "customs"],
            "description": "Goods and their inputs are not linked to entities on the UFLPA entity list.",
            "rules": [
                {"id": "entity-list", "op": "non_membership", "field": "supplier.identifier_commitment",
                 "list_id": "uflpa-entity-list", "list_root": _list_root(seed, "uflpa-%d" % variant)},
                {"id": "origin-region", "op": "not_in", "field": "input.origin_region_code",
                 "values": ["CN-65"]},
                {"id": "tracing-depth", "op": "gte", "field": "input.tracing_depth_tiers",
                 "value": tune("depth", 3, 3)},
            ],
        },
        {
            "id": "supplier-code-of-conduct", "name": "Supplier code of conduct (ILO core conventions)",
            "legal_basis": ["ILO C029", "ILO C087", "ILO C098", "ILO C138", "ILO C182"],
            "tags": ["labour", "supply-chain"],
            "description": "Suppliers signed the code of conduct and pass the labour standards audit.",
            "rules": [
                {"id": "signed", "op": "eq", "field": "supplier.code_of_conduct_signed", "value": True},
                {"id": "minimum-age", "op": ">=", "field": "site.minimum_worker_age",
                 "value": tune("age", 15, 4)},
                {"id": "weekly-hours", "op": "<=", "field": "site.max_weekly_hours",
                 "value": tune("hours", 48, 13)},
                {"id": "freedom-of-association", "op": "eq", "field": "site.freedom_of_association",
                 "value": True},
            ],
        },
    ]


def build_policies(seed, count):
    """count policy documents: the families in turn, each turn one minor version newer."""
    policies = []
    variant = 0
    while len(policies) < count:
        for family in _policy_families(seed, variant):
            if len(policies) == count:
                break
            policy = {"schema": POLICY_SCHEMA, "version": "1.%d.0" % variant}
            policy.update({k: v for k, v in family.items() if v is not None})
            policies.append(policy)
        variant += 1
    return policies


# ---------------------------------------------------------------------------
# Keys

def build_keys(seed, base):
    """[(role, kid, seed bytes, public raw, metadata)] for every key, company key first."""
    keys = []
    for role, owner, usage, status, _, age_days in KEY_ROLES:
        key_seed = _digest(seed, "ed25519-seed|%s" % role)
        public = public_from_seed(key_seed)
        kid = "cap-%s-%s" % (role, fingerprint(public)[2:14])
        created = _timestamp(base - datetime.timedelta(days=age_days))
        meta = key_metadata(kid, public, owner, usage, created, status=status)
        keys.append((role, kid, key_seed, public, meta))
    return keys


def _signer_table(keys):
    table = []
    for (_, kid, key_seed, _, _), spec in zip(keys, KEY_ROLES):
        table.extend([(kid, key_seed)] * spec[4])
    return table


# ---------------------------------------------------------------------------
# Registry

def _entry_rows(seed, hashes, signers, start, first, last):
    """Rows first..last-1; each depends only on its index, so ranges can be built in parallel."""
    rows = []
    for index in range(first, last):
        pick = _digest(seed, "entry|%d" % index)
        policy_hash = hashes[index] if index < len(hashes) else hashes[
            int.from_bytes(pick[:4], "big") % len(hashes)]
        kid, key_seed = signers[pick[4] % len(signers)]
        # One entry a minute on average, strictly ordered: minute `index` plus 0-59 seconds.
        created_at = _timestamp(start + datetime.timedelta(seconds=60 * index + pick[5] % 60))
        manifest_hash = sha3_bytes(
            "cap-manifest.v1\nsequence=%d\npolicy=%s\nsupplier_commitment=0x%s\nbatch=%d\n"
            % (index, policy_hash, pick.hex(), index // 1000))
        proof_hash = sha3_bytes("cap-proof.v1\nmanifest=%s\npolicy=%s\nbackend=zkvm-mock\n"
                                % (manifest_hash, policy_hash))
        entry = {"manifest_hash": manifest_hash, "proof_hash": proof_hash, "policy_hash": policy_hash,
                 "kid": kid, "created_at": created_at}
        rows.append((manifest_hash, proof_hash, policy_hash, kid, sign_entry(key_seed, entry),
                     created_at))
    return rows


def build_entries(seed, records, keys, count, start, workers=None):
    """Registry rows (tuples in column order, without id) signed by the key their kid names.

    Large counts are signed in parallel processes; the rows are the same either way.
    """
    signers = _signer_table(keys)
    hashes = [r["policy_hash"] for r in records]
    workers = workers or os.cpu_count() or 1
    if count < PARALLEL_THRESHOLD or workers < 2:
        return _entry_rows(seed, hashes, signers, start, 0, count)
    bounds = list(range(0, count, PARALLEL_CHUNK)) + [count]
    rows = []
    # spawn, not fork: the caller may be a threaded process (a service manager, a test runner).
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_entry_rows, seed, hashes, signers, start, first, last)
                   for first, last in zip(bounds, bounds[1:])]
        for future in futures:
            rows.extend(future.result())
    return rows


def write_registry_sqlite(path, policy_rows, entry_rows):
    """Create a registry database at path (replaced atomically) in one transaction."""
    tmp = path + ".seeding"
    if os.path.exists(tmp):
        os.unlink(tmp)
    conn = sqlite3.connect(tmp)
    try:
        # Only the finished file is renamed into place, so no journal is needed while building.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        create_schema(conn)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO policies (policy_hash, ir_hash, policy_json, ir_json, created_at) "
                         "VALUES (?, ?, ?, ?, ?)", policy_rows)
        for start in range(0, len(entry_rows), INSERT_BATCH):
            conn.executemany("INSERT INTO registry_entries (manifest_hash, proof_hash, policy_hash, kid, "
                             "signature, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                             entry_rows[start:start + INSERT_BATCH])
        conn.commit()
    finally:
        conn.close()
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Files

def _write(data_dir, rel, data, mode=0o644):
    path = os.path.join(data_dir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"), mode)
    return path


def _json_file(value):
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def copy_content(data_dir, substitutions):
    """Copy sandbox/content/ into the data directory, replacing @NAME@ placeholders."""
    written = []
    for dirpath, dirnames, filenames in os.walk(CONTENT_DIR):
        dirnames.sort()
        for name in sorted(filenames):
            source = os.path.join(dirpath, name)
            rel = os.path.relpath(source, CONTENT_DIR).replace(os.sep, "/")
            with open(source, "r", encoding="utf-8") as handle:
                text = handle.read()
            for key, value in substitutions.items():
                text = text.replace("@%s@" % key, value)
            _write(data_dir, rel, text)
            written.append(rel)
    return written


def _ephemeral_files(data_dir, seed, base, kid):
    """logs/ and tmp/ files: present in a live pod, excluded from every backup."""
    lines = []
    moment = base
    requests = (("GET", "/healthz", 200), ("GET", "/readyz", 200), ("GET", "/api/v1/policies", 200),
                ("POST", "/api/v1/verify", 200), ("GET", "/metrics", 200))
    for index in range(40):
        moment += datetime.timedelta(seconds=5 + _number(seed, "log|%d" % index, 25))
        method, path, status = requests[index % len(requests)]
        lines.append('%s 127.0.0.1 "%s %s" %d %d %d.%dms sub=cap-sre' % (
            _timestamp(moment), method, path, status, 60 + _number(seed, "bytes|%d" % index, 400),
            _number(seed, "ms|%d" % index, 4), _number(seed, "frac|%d" % index, 10)))
    lines.append("%s INFO active signing kid %s" % (_timestamp(moment), kid))
    _write(data_dir, "logs/api.log", "\n".join(lines) + "\n")
    blob = b"".join(_digest(seed, "tmp|%d" % i) for i in range(256))
    _write(data_dir, "tmp/upload-%s.part" % _digest(seed, "tmp-name").hex()[:8], blob)


def seed_instance(data_dir, seed=42, policies=30, entries=300, registry_format="sqlite",
                  created_at_base=None):
    """Seed data_dir; returns a summary (kids, counts, public key, file hashes, timings).

    created_at_base: a 'YYYY-MM-DDTHH:MM:SSZ' string or aware datetime; by default a
    moment derived from the seed. Policies are created hourly from that moment,
    entries follow one day later, one a minute (at a
    seed-derived second of that minute).
    """
    if registry_format not in ("sqlite", "json"):
        raise ValueError("registry_format must be 'sqlite' or 'json'")
    if policies < MIN_POLICIES:
        raise ValueError("policies must be at least %d" % MIN_POLICIES)
    if entries < 0:
        raise ValueError("entries must not be negative")
    if created_at_base is None:
        base = default_created_at_base(seed)
    elif isinstance(created_at_base, datetime.datetime):
        base = created_at_base.astimezone(datetime.timezone.utc).replace(microsecond=0)
    else:
        base = parse_created_at(created_at_base)
    timings = {}
    started = time.monotonic()
    data_dir = os.path.abspath(data_dir)
    for sub in ("build", "keys/trusted", "logs", "tmp"):
        os.makedirs(os.path.join(data_dir, sub), exist_ok=True)

    keys = build_keys(seed, base)
    _, company_kid, company_seed, company_public, _ = keys[0]
    _write(data_dir, "keys/company.ed25519", company_seed, mode=0o600)
    for _, kid, _, public, meta in keys:
        _write(data_dir, "keys/%s.v1.json" % kid, _json_file(meta))
        _write(data_dir, "keys/trusted/%s.pub" % kid, public_pem(public))

    records = [make_record(p) for p in build_policies(seed, policies)]
    policy_rows = [policy_row(r, _timestamp(base + datetime.timedelta(hours=i)))
                   for i, r in enumerate(records)]
    _write(data_dir, "build/policy_store.json", serialize_store(records))
    timings["policies_seconds"] = round(time.monotonic() - started, 3)

    mark = time.monotonic()
    entry_rows = build_entries(seed, records, keys, entries, base + datetime.timedelta(days=1))
    timings["sign_seconds"] = round(time.monotonic() - mark, 3)

    mark = time.monotonic()
    sqlite_path = os.path.join(data_dir, "build", "registry.sqlite")
    json_path = os.path.join(data_dir, "build", "registry.json")
    if registry_format == "sqlite":
        write_registry_sqlite(sqlite_path, policy_rows, entry_rows)
        if os.path.exists(json_path):
            os.unlink(json_path)
        registry_path = sqlite_path
    else:
        scratch = os.path.join(data_dir, "build", ".registry-export.sqlite")
        write_registry_sqlite(scratch, policy_rows, entry_rows)
        try:
            export_json(scratch, json_path, mode=0o644)
        finally:
            os.unlink(scratch)
        if os.path.exists(sqlite_path):
            os.unlink(sqlite_path)
        registry_path = json_path
    timings["registry_seconds"] = round(time.monotonic() - mark, 3)

    files = copy_content(data_dir, {"CAP_COMPANY_KID": company_kid})
    _ephemeral_files(data_dir, seed, base, company_kid)
    registry_hash, registry_size = sha3_file(registry_path)
    store_hash, store_size = sha3_file(os.path.join(data_dir, "build", "policy_store.json"))
    timings["total_seconds"] = round(time.monotonic() - started, 3)
    return {
        "data_dir": data_dir,
        "seed": seed,
        "created_at_base": _timestamp(base),
        "kid": company_kid,
        "kids": [kid for _, kid, _, _, _ in keys],
        "company_public_key": base64.b64encode(company_public).decode("ascii"),
        "company_fingerprint": fingerprint(company_public),
        "policies": len(records),
        "entries": len(entry_rows),
        "policy_hashes": [r["policy_hash"] for r in sorted(records, key=lambda r: r["policy_hash"])],
        "sample_manifest_hash": entry_rows[0][0] if entry_rows else None,
        "registry_format": registry_format,
        "registry_path": os.path.relpath(registry_path, data_dir),
        "registry_sha3_256": registry_hash,
        "registry_size_bytes": registry_size,
        "policy_store_sha3_256": store_hash,
        "policy_store_size_bytes": store_size,
        "content_files": files,
        "timings": timings,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox.seed",
                                     description="Seed a CAP Verifier API data directory deterministically.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--policies", type=int, default=30)
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--format", choices=("sqlite", "json"), default="sqlite")
    parser.add_argument("--created-at-base", help="YYYY-MM-DDTHH:MM:SSZ (default: derived from --seed)")
    args = parser.parse_args(argv)
    try:
        summary = seed_instance(args.data_dir, seed=args.seed, policies=args.policies,
                                entries=args.entries, registry_format=args.format,
                                created_at_base=args.created_at_base)
    except ValueError as exc:
        parser.error(str(exc))
    summary.pop("policy_hashes")
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
