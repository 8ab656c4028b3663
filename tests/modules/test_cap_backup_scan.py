"""cap_backup_scan run through Ansible: fails naming file, line and kind, never the value."""

import base64
import json
import os
import sqlite3
import string
import subprocess

from tests.conftest import ROOT, VENV_BIN, ansible_env
from tests.unit.test_scan import ALNUM, jwt, rand, write


def staged_backup(root):
    """A staged backup with one planted item per line of the expected message; returns them."""
    planted = {
        "password": "hunter2-" + rand(16),
        "email": "%s.%s@corp-mail.de" % (rand(8).lower(), rand(8).lower()),
        "vault": "hvs.CAES" + rand(60),
        "aws_secret": rand(40, ALNUM + "/+"),
        "jwt": jwt(),
        "seed": os.urandom(32),
        "iban": "DE89370400440532013000",
    }
    write(root, "config/helm/values-prod.yaml",
          "replicaCount: 3\nauth:\n  existingSecret: cap-keys-public\n  password: %s\n"
          % planted["password"])
    write(root, "registry.json", '{"version": "cap-registry.v1", "rows": [\n["0x%s", "%s"]\n]}\n'
          % ("ab" * 32, planted["email"]))
    write(root, "keys/company.ed25519", planted["seed"])
    db = root / "policy.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE settings (name TEXT, value TEXT)")
    conn.executemany("INSERT INTO settings VALUES (?, ?)", [("upstream", planted["vault"]),
                                                            ("refund", planted["iban"])])
    conn.commit()
    conn.close()
    write(root, "config/aws/credentials",
          "[default]\naws_secret_access_key = %s\n" % planted["aws_secret"])
    write(root, "logs/api.log",
          "2025-11-10T12:00:01Z DEBUG Authorization: Bearer %s\n" % planted["jwt"])
    return planted


def raw_output(res):
    return res.proc.stdout + res.proc.stderr


def assert_never_shown(text, value):
    """Neither the value nor any 8-character piece of it appears."""
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode()
    for i in range(len(value) - 7):
        assert value[i:i + 8] not in text, "a piece of a planted value appears in the output"


def test_fails_naming_file_line_and_kind(module, tmp_path):
    staged_backup(tmp_path)
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)]))
    assert res.failed and not res.changed
    assert res.msg.startswith("7 findings: ")
    for part in ("config/aws/credentials:2 secret.aws_secret_access_key",
                 "config/helm/values-prod.yaml:4 secret.password_in_yaml",
                 "keys/company.ed25519 private_key.ed25519_file",
                 "logs/api.log:1 secret.jwt",
                 "registry.json:2 pii.email",
                 "policy.sqlite@"):
        assert part in res.msg, part
    assert res["counts"]["secret.vault_token"] == 1 and res["counts"]["pii.iban"] == 1
    assert res["files_scanned"] == 6
    assert res["bytes_scanned"] == sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())


def test_values_never_appear_in_output(module, tmp_path):
    planted = staged_backup(tmp_path)
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)]))
    assert res.failed
    text = raw_output(res)
    assert "registry.json" in text  # the output is there and names files
    for name, value in planted.items():
        if name != "iban":
            assert_never_shown(text, value)
    assert planted["iban"] not in text and planted["iban"][4:12] not in text


def test_report_only_when_fail_on_findings_is_false(module, tmp_path):
    staged_backup(tmp_path)
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)], fail_on_findings=False))
    assert not res.failed and not res.changed
    assert res["total"] == 7
    assert {f["kind"] for f in res["findings"]} >= {"pii.email", "secret.vault_token", "pii.iban"}
    sqlite_findings = [f for f in res["findings"] if f["file"] == "policy.sqlite"]
    assert all(f["line"] is None and isinstance(f["offset"], int) for f in sqlite_findings)


def test_allow_list_passes_a_clean_runbook_contact(module, tmp_path):
    write(tmp_path, "docs/backup-restore-runbook.md",
          "5. **Escalate to Engineering**\n   - Contact: cap-engineering@example.com\n"
          "   - Slack: #cap-incidents\n")
    write(tmp_path, "docs/oncall.md", "Backup owner: sre-oncall@example.com, +49 30 1234567\n")
    write(tmp_path, "registry.json", '["0x%s", "carol@corp-mail.de"]\n' % ("cd" * 32))
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)], allow=[
        "cap-engineering@example.com",
        {"kind": "pii.*", "path": "docs/*", "reason": "runbooks name their contacts"}]))
    assert res.failed
    assert res.msg == "1 finding: registry.json:1 pii.email"
    assert res["allowed"] == 3 and res["allow_hits"] == [1, 2]
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)], allow=[
        "*@example.com", "*@corp-mail.de", {"rule": "phone_international"}]))
    assert not res.failed, res.msg
    assert res["total"] == 0 and res["allow_hits"] == [2, 1, 1]


def test_check_mode_reports_the_same_and_changes_nothing(module, tmp_path):
    staged_backup(tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    normal = module("cap_backup_scan", dict(paths=[str(tmp_path)], fail_on_findings=False))
    checked = module("cap_backup_scan", dict(paths=[str(tmp_path)], fail_on_findings=False), check=True)
    assert not checked.changed and not checked.failed
    assert checked["findings"] == normal["findings"]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_symlink_reported_not_followed(module, tmp_path):
    outside = tmp_path / "live-keys"
    write(outside, "company.ed25519", os.urandom(32))
    backup = tmp_path / "staging"
    write(backup, "docs/readme.md", "Restore with the runbook.\n")
    os.makedirs(str(backup / "keys"))
    os.symlink(str(outside / "company.ed25519"), str(backup / "keys" / "company.key"))
    os.symlink(str(outside), str(backup / "keys" / "live"))
    res = module("cap_backup_scan", dict(paths=[str(backup)]))
    assert not res.failed, res.msg
    assert res["total"] == 0 and res["files_scanned"] == 1
    assert res["symlinks"] == [{"file": "keys/company.key", "target": str(outside / "company.ed25519")},
                               {"file": "keys/live", "target": str(outside)}]
    assert any("2 symbolic link(s) not followed" in w for w in res.get("warnings", []))


def test_bad_allow_entry_fails_before_scanning(module, tmp_path):
    write(tmp_path, "docs/a.md", "fine\n")
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)], allow=[{"kind": "pii.mail"}]))
    assert res.failed
    assert res.msg.startswith("cannot scan: allow[0].kind 'pii.mail' matches no kind")


def test_missing_path_fails_clearly(module, tmp_path):
    res = module("cap_backup_scan", dict(paths=[str(tmp_path / "staging")]))
    assert res.failed
    assert res.msg == "cannot scan: path to scan does not exist: %s" % (tmp_path / "staging")


def test_max_findings_caps_the_list(module, tmp_path):
    write(tmp_path, "export/users.csv", "".join(
        "%d,user%s@corp-mail.de\n" % (i, rand(6, string.ascii_lowercase)) for i in range(30)))
    res = module("cap_backup_scan", dict(paths=[str(tmp_path)], max_findings=5))
    assert res.failed and res.msg.startswith("30 findings: export/users.csv:1 pii.email;")
    assert res.msg.endswith("; and 25 more")
    assert len(res["findings"]) == 5 and res["findings_truncated"] and res["total"] == 30


def test_documentation_matches_the_argument_spec():
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-j", "cap_backup_scan"], cwd=ROOT,
                          env=ansible_env(), capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)["cap_backup_scan"]["doc"]
    assert set(doc["options"]) == {"paths", "allow", "fail_on_findings", "max_findings"}
    assert doc["options"]["paths"]["required"] is True
    assert doc["options"]["allow"]["default"] == []
