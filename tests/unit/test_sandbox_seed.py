"""The deterministic seeder (sandbox/seed.py): same bytes every time, no PII, no stray secrets."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
import yaml

import sandbox  # noqa: F401
from ansible.module_utils.cap_hashing import is_prefixed_hash
from ansible.module_utils.cap_keys import load_key_tree, parse_key_metadata, public_from_seed
from ansible.module_utils.cap_sqlite import load_json_into
from sandbox import seed as S
from sandbox.policy import parse_store_document, records_from_rows, serialize_store
from sandbox.registry import verify_entry

EMAIL_RE = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def tree(root):
    """{relative path: (bytes, mode)} of every file below root."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("seed") / "app"
    summary = S.seed_instance(str(data_dir), seed=42, policies=30, entries=300)
    return data_dir, summary


def rows_of(conn, sql):
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute(sql)]


def test_same_arguments_give_the_same_bytes_in_every_file(seeded, tmp_path):
    again = tmp_path / "again"
    S.seed_instance(str(again), seed=42, policies=30, entries=300)
    first, second = tree(seeded[0]), tree(again)
    assert sorted(first) == sorted(second)
    for rel in first:
        assert first[rel] == second[rel], rel


def test_parallel_signing_gives_the_same_rows_as_sequential():
    keys = S.build_keys(3, S.default_created_at_base(3))
    records = [{"policy_hash": "0x%064x" % n} for n in range(4)]
    start = S.default_created_at_base(3)
    sequential = S.build_entries(3, records, keys, 300, start, workers=1)
    original = (S.PARALLEL_THRESHOLD, S.PARALLEL_CHUNK)
    S.PARALLEL_THRESHOLD, S.PARALLEL_CHUNK = 100, 70
    try:
        parallel = S.build_entries(3, records, keys, 300, start, workers=2)
    finally:
        S.PARALLEL_THRESHOLD, S.PARALLEL_CHUNK = original
    assert parallel == sequential


def test_other_seeds_give_other_keys_and_entries(seeded, tmp_path):
    other = S.seed_instance(str(tmp_path / "other"), seed=43, policies=30, entries=300)
    assert other["kid"] != seeded[1]["kid"]
    assert other["registry_sha3_256"] != seeded[1]["registry_sha3_256"]
    assert other["created_at_base"] != seeded[1]["created_at_base"]


def test_layout_matches_the_runbook_pod(seeded):
    data_dir, summary = seeded
    for rel in ("build/registry.sqlite", "build/policy_store.json", "keys/company.ed25519",
                "helm/values-prod.yaml", "openapi/openapi.yaml", "prometheus/alerts.yml",
                "runbooks/backup-restore.md", "logs/api.log"):
        assert (data_dir / rel).is_file(), rel
    assert len(list((data_dir / "grafana" / "dashboards").glob("*.json"))) >= 2
    assert list((data_dir / "docs").glob("*.md")) and list((data_dir / "tmp").iterdir())
    for dashboard in (data_dir / "grafana" / "dashboards").glob("*.json"):
        assert json.loads(dashboard.read_text())["panels"]
    alerts = yaml.safe_load((data_dir / "prometheus" / "alerts.yml").read_text())
    assert {g["name"] for g in alerts["groups"]} >= {"cap-verifier-api", "cap-backup"}
    values = yaml.safe_load((data_dir / "helm" / "values-prod.yaml").read_text())
    assert values["api"]["keys"]["activeKid"] == summary["kid"]
    assert yaml.safe_load((data_dir / "openapi" / "openapi.yaml").read_text())["paths"]
    assert summary["registry_path"] == "build/registry.sqlite"


def test_keys_are_consistent_and_only_the_private_key_is_secret(seeded):
    data_dir, summary = seeded
    key_file = data_dir / "keys" / "company.ed25519"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    raw_seed = key_file.read_bytes()
    assert len(raw_seed) == 32
    public = public_from_seed(raw_seed)
    assert base64.b64encode(public).decode() == summary["company_public_key"]
    meta = json.loads((data_dir / "keys" / ("%s.v1.json" % summary["kid"])).read_text())
    assert parse_key_metadata(meta) == (summary["kid"], public)
    assert set(load_key_tree(str(data_dir / "keys"))) == set(summary["kids"])
    assert len(summary["kids"]) == 3
    assert sorted(p.name for p in (data_dir / "keys" / "trusted").iterdir()) == sorted(
        "%s.pub" % k for k in summary["kids"])
    forms = [raw_seed, raw_seed.hex().encode(), base64.b64encode(raw_seed)]
    for rel, (data, _) in tree(data_dir).items():
        if rel == "keys/company.ed25519":
            continue
        assert b"PRIVATE KEY" not in data, rel
        for form in forms:
            assert form not in data, rel


def test_no_pii_only_example_contacts_in_the_runbook_copy(seeded):
    data_dir, _ = seeded
    for rel, (data, _) in tree(data_dir).items():
        emails = EMAIL_RE.findall(data)
        if rel == "runbooks/backup-restore.md":
            assert emails and all(e.endswith(b"@example.com") for e in emails)
        else:
            assert not emails, (rel, emails)


def test_helm_values_reference_secrets_instead_of_holding_them(seeded):
    values = yaml.safe_load((seeded[0] / "helm" / "values-prod.yaml").read_text())
    forbidden = {"password", "token", "apikey", "privatekey", "secretkey", "accesskey", "jwtsecretvalue"}
    references = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                assert key.lower() not in forbidden, path + [key]
                if key == "existingSecret":
                    references.append(value)
                walk(value, path + [key])
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(values, [])
    assert "cap-keys-company" in references and "cap-api-jwt" in references


def test_policies_are_compiled_and_in_both_store_and_registry(seeded):
    data_dir, summary = seeded
    store_bytes = (data_dir / "build" / "policy_store.json").read_bytes()
    records = parse_store_document(json.loads(store_bytes))
    assert len(records) == summary["policies"] == 30
    assert serialize_store(records) == store_bytes
    assert len({r["policy"]["id"] for r in records}) >= 10
    conn = sqlite3.connect(str(data_dir / "build" / "registry.sqlite"))
    conn.row_factory = sqlite3.Row
    rebuilt = records_from_rows(conn.execute("SELECT * FROM policies").fetchall())
    conn.close()
    assert serialize_store(rebuilt) == store_bytes


def test_entries_are_realistic_signed_and_reference_existing_policies(seeded):
    data_dir, summary = seeded
    conn = sqlite3.connect(str(data_dir / "build" / "registry.sqlite"))
    entries = rows_of(conn, "SELECT * FROM registry_entries ORDER BY id")
    policies = {r["policy_hash"] for r in rows_of(conn, "SELECT policy_hash FROM policies")}
    schema = {r["name"]: r["sql"] for r in rows_of(conn, "SELECT name, sql FROM sqlite_master")}
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert {"registry_entries", "policies", "registry_entries_policy_hash"} <= set(schema)
    assert journal == "delete"
    assert len(entries) == 300
    keys = load_key_tree(str(data_dir / "keys"))
    assert {e["policy_hash"] for e in entries} == policies
    assert {e["kid"] for e in entries} == set(summary["kids"])
    assert len({e["manifest_hash"] for e in entries}) == 300
    previous = ""
    for entry in entries:
        for name in ("manifest_hash", "proof_hash", "policy_hash"):
            assert is_prefixed_hash(entry[name])
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", entry["created_at"])
        assert entry["created_at"] > previous
        previous = entry["created_at"]
        assert verify_entry(entry, keys) == (True, None)


def test_json_form_holds_the_same_rows_as_sqlite(seeded, tmp_path):
    data_dir = tmp_path / "json"
    summary = S.seed_instance(str(data_dir), seed=42, policies=30, entries=300, registry_format="json")
    assert summary["registry_path"] == "build/registry.json"
    assert not (data_dir / "build" / "registry.sqlite").exists()
    assert sorted(os.listdir(data_dir / "build")) == ["policy_store.json", "registry.json"]
    from_json = sqlite3.connect(":memory:")
    load_json_into(str(data_dir / "build" / "registry.json"), from_json)
    from_sqlite = sqlite3.connect(str(seeded[0] / "build" / "registry.sqlite"))
    for table in ("registry_entries", "policies"):
        sql = "SELECT * FROM %s ORDER BY rowid" % table
        assert from_json.execute(sql).fetchall() == from_sqlite.execute(sql).fetchall()
    from_json.close()
    from_sqlite.close()
    assert (data_dir / "build" / "policy_store.json").read_bytes() == (
        seeded[0] / "build" / "policy_store.json").read_bytes()


def test_created_at_base_can_be_fixed(tmp_path):
    summary = S.seed_instance(str(tmp_path / "fixed"), seed=1, policies=25, entries=3,
                              created_at_base="2025-11-10T12:00:00Z")
    assert summary["created_at_base"] == "2025-11-10T12:00:00Z"
    conn = sqlite3.connect(str(tmp_path / "fixed" / "build" / "registry.sqlite"))
    first = conn.execute("SELECT created_at FROM registry_entries ORDER BY id").fetchone()[0]
    conn.close()
    assert first.startswith("2025-11-11T12:00:")
    with pytest.raises(ValueError):
        S.seed_instance(str(tmp_path / "bad"), created_at_base="yesterday")


def test_reseeding_replaces_the_other_registry_form(tmp_path):
    data_dir = tmp_path / "app"
    S.seed_instance(str(data_dir), seed=5, policies=25, entries=5, registry_format="json")
    S.seed_instance(str(data_dir), seed=5, policies=25, entries=5, registry_format="sqlite")
    assert sorted(os.listdir(data_dir / "build")) == ["policy_store.json", "registry.sqlite"]


def test_cli_prints_a_summary_without_secrets(tmp_path, capsys):
    assert S.main(["--data-dir", str(tmp_path / "cli"), "--seed", "11", "--policies", "26",
                   "--entries", "12", "--format", "sqlite"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["policies"] == 26 and summary["entries"] == 12
    raw_seed = (tmp_path / "cli" / "keys" / "company.ed25519").read_bytes()
    text = json.dumps(summary)
    assert raw_seed.hex() not in text and base64.b64encode(raw_seed).decode() not in text


@pytest.mark.slow
def test_benchmark_scale_registry_is_about_100_mb(tmp_path):
    # The size knob reaches the benchmark's registry; how long it takes is in bench/README.md.
    summary = S.seed_instance(str(tmp_path / "bench"), seed=42, policies=30, entries=200000)
    assert summary["entries"] == 200000
    assert 80 * 1024 * 1024 <= summary["registry_size_bytes"] <= 140 * 1024 * 1024
