"""scripts/backup.sh as the runbook shows it (Appendix A and the CronJob), against the sandbox.

With CAP_SANDBOX_DIR set the sandbox inventory provides Vault (the signing key), metrics
and audit. The runbook's --encrypt defaults to false, and backup.sh passes
cap_backup_encrypt: false unless --encrypt is given, so the "Basic backup" example writes
a plain .tar.gz although the sandbox inventory encrypts playbook runs; "Encrypted backup"
writes <output>.enc with the given key file.

S3 uploads are switched off through CAP_BACKUP_EXTRA_VARS (the script's site settings
file): a backup encrypted with a throwaway key file must never become the session
sandbox's backups/latest.json, which the restore and drill tests read. test_backup_role.py
covers the uploads.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ansible.module_utils import cap_crypt, cap_manifest
from tests.integration import backup_checks as bc
from tests.integration.playbook_runner import ROOT, playbook_env

SCRIPT = ROOT / "scripts" / "backup.sh"
RUNBOOK = ROOT / "docs" / "runbook.md"


@pytest.fixture(scope="module")
def no_s3(tmp_path_factory):
    """Environment for backup.sh: a site settings file without S3 destinations."""
    site_vars = tmp_path_factory.mktemp("backup-sh") / "no-s3.json"
    site_vars.write_text(json.dumps({"cap_backup_s3_destinations": []}))
    return {"CAP_BACKUP_EXTRA_VARS": str(site_vars)}


def run_script(args, state_dir=None, cwd=None, env=None, timeout=600):
    """backup.sh ARGS, against the sandbox in state_dir when given."""
    if state_dir is not None:
        full_env = playbook_env(state_dir, env)
    else:
        full_env = dict(os.environ, **(env or {}))
        full_env.pop("CAP_SANDBOX_DIR", None)
    return subprocess.run([str(SCRIPT)] + [str(a) for a in args], cwd=str(cwd or ROOT),
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def describe(proc):
    return "exit %s\nstdout (last 60 lines):\n%s\nstderr:\n%s" % (
        proc.returncode, "\n".join(proc.stdout.splitlines()[-60:]), proc.stderr)


def appendix_a_help():
    """The help text printed in the runbook's Appendix A, below `./scripts/backup.sh --help`."""
    text = RUNBOOK.read_text()
    section = text[text.index("## Appendix A"):text.index("## Appendix B")]
    block = section[section.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("\n```")]
    command, _blank, help_text = block.partition("\n\n")
    assert command == "./scripts/backup.sh --help"
    return help_text


def check_plain_backup(archive, workdir):
    """A gzip tar.gz whose content matches its manifest, with sidecar; returns the manifest."""
    data = archive.read_bytes()
    assert data[:2] == b"\x1f\x8b", "%s is not gzip" % archive
    assert (Path(str(archive) + ".sha3").read_text()
            == "%s  %s\n" % (bc.sha3_hex(data), archive.name))
    bc.unpack(archive, workdir)
    manifest = cap_manifest.load_manifest(str(workdir / "backup.manifest.json"))
    problems = bc.check_tree_against_manifest(manifest, workdir)
    assert not problems, "\n".join(problems)
    return manifest


def test_help_is_the_runbooks_appendix_a():
    proc = run_script(["--help"])
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == appendix_a_help() + "\n"
    assert proc.stderr == ""


def test_missing_output_exits_2_with_a_message(tmp_path):
    proc = run_script(["--registry", "build/registry.sqlite", "--policy-store",
                       "build/policy_store.json"], cwd=tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert "backup.sh: --output is required" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.sandbox
@pytest.mark.slow
def test_basic_backup_example_writes_a_plain_tar_gz(sandbox, tmp_path, no_s3):
    out = tmp_path / "backup"
    out.mkdir()
    # As in the runbook: run from the application root with its relative paths.
    proc = run_script(["--output", out / "cap-backup.tar.gz",
                       "--registry", "build/registry.sqlite",
                       "--policy-store", "build/policy_store.json"],
                      state_dir=sandbox.state_dir, cwd=sandbox["cap_source_data_dir"], env=no_s3)
    assert proc.returncode == 0, describe(proc)
    archive = out / "cap-backup.tar.gz"
    assert archive.is_file() and not (out / "cap-backup.tar.gz.enc").exists()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    manifest = check_plain_backup(archive, tmp_path / "extracted")
    assert manifest["encryption"] == "none" and manifest["compression"] == "gzip"
    copy = out / "cap-backup.manifest.json"
    assert copy.read_bytes() == (tmp_path / "extracted" / "backup.manifest.json").read_bytes()
    assert (out / "cap-backup.manifest.json.sig").is_file()
    source = Path(sandbox["cap_source_data_dir"])
    assert (tmp_path / "extracted" / "policy_store.json").read_bytes() == \
        (source / "build" / "policy_store.json").read_bytes()


@pytest.mark.sandbox
@pytest.mark.slow
def test_encrypted_backup_example_is_decryptable_with_the_key_file(sandbox, tmp_path, no_s3):
    key = os.urandom(32)
    key_file = tmp_path / "backup.key"
    key_file.write_text(base64.b64encode(key).decode() + "\n")
    key_file.chmod(0o600)
    out = tmp_path / "backup"
    out.mkdir()
    proc = run_script(["--output", out / "cap-backup-encrypted.tar.gz",
                       "--registry", "build/registry.sqlite",
                       "--policy-store", "build/policy_store.json",
                       "--encrypt", "--encryption-key", key_file],
                      state_dir=sandbox.state_dir, cwd=sandbox["cap_source_data_dir"], env=no_s3)
    assert proc.returncode == 0, describe(proc)
    encrypted = out / "cap-backup-encrypted.tar.gz.enc"
    assert encrypted.is_file()
    assert not (out / "cap-backup-encrypted.tar.gz").exists(), "plaintext archive left behind"
    assert stat.S_IMODE(encrypted.stat().st_mode) == 0o600
    assert cap_crypt.read_header(str(encrypted)).key_id == cap_crypt.derive_key_id(key)
    with pytest.raises(cap_crypt.CapCryptError):
        bc.decrypt_archive(encrypted, os.urandom(32), tmp_path / "wrong.tar.gz")
    plain = tmp_path / "decrypted.tar.gz"
    bc.decrypt_archive(encrypted, key, plain)
    manifest = cap_manifest.load_manifest(str(out / "cap-backup-encrypted.manifest.json"))
    assert manifest["encryption"] == "aes-256-gcm"
    bc.unpack(plain, tmp_path / "extracted")
    problems = bc.check_tree_against_manifest(manifest, tmp_path / "extracted")
    assert not problems, "\n".join(problems)


@pytest.mark.sandbox
@pytest.mark.slow
def test_cronjob_form_expands_the_literal_date_in_utc(sandbox, tmp_path, no_s3):
    """The CronJob passes `$(date +%Y%m%d-%H%M%S)` unexpanded (no shell runs over container
    args) and nothing else; the sandbox inventory supplies the application root."""
    out = tmp_path / "backup"
    out.mkdir()
    literal = str(out) + "/cap-backup-$(date +%Y%m%d-%H%M%S).tar.gz"
    started = time.time()
    proc = run_script(["--output", literal], state_dir=sandbox.state_dir, cwd=tmp_path, env=no_s3)
    ended = time.time()
    assert proc.returncode == 0, describe(proc)
    archives = [n for n in os.listdir(out) if n.endswith(".tar.gz")]
    assert len(archives) == 1, os.listdir(out)
    match = re.match(r"^cap-backup-(\d{8}-\d{6})\.tar\.gz$", archives[0])
    assert match, archives
    stamp = match.group(1)
    assert bc.utc_stamp(started) <= stamp <= bc.utc_stamp(ended)
    manifest = check_plain_backup(out / archives[0], tmp_path / "extracted")
    assert manifest["backup_id"] == "backup-" + stamp
    assert not any("$(" in name for name in os.listdir(out))


@pytest.mark.sandbox
@pytest.mark.slow
def test_failing_run_exits_non_zero_with_the_playbooks_error(sandbox, tmp_path, no_s3):
    out = tmp_path / "backup"
    out.mkdir()
    missing = tmp_path / "nowhere" / "build" / "registry.sqlite"
    policy_store = Path(sandbox["cap_source_data_dir"]) / "build" / "policy_store.json"
    proc = run_script(["--output", out / "cap-backup.tar.gz", "--registry", missing,
                       "--policy-store", policy_store], state_dir=sandbox.state_dir, env=no_s3)
    assert proc.returncode == 1, describe(proc)
    assert "backup.sh: backup failed; see the task output above" in proc.stderr
    assert "Backup source %s does not exist or is not readable" % missing in proc.stdout + proc.stderr
    assert bc.backup_files(out) == []
