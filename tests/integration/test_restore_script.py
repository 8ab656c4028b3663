"""scripts/restore.sh, the runbook's Appendix B command line, on a backup extracted by hand.

The backup made here is opened as an SRE would in the runbook's step 1 (the archive
decrypted with the data key Vault Transit unwraps from its header, then extracted with
cap_archive's safe extractor), and `restore.sh --verify-only --backup-dir D --manifest
D/backup.manifest.json` must print the runbook's step 2 lines exactly: one per manifest
entry with the first eight hex digits of its SHA3-256, then the total. A changed or a
missing file must produce a ❌ line naming it and a non-zero exit; --help must print
Appendix B.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.integration.playbook_runner import ROOT, playbook_env
from tests.integration.restore_helpers import (
    fingerprint,
    open_backup,
    targets,
)

SCRIPT = ROOT / "scripts" / "restore.sh"
RUNBOOK = ROOT / "docs" / "runbook.md"


def runbook_text(heading, after):
    """Runbook text below `heading` from the end of `after` to the next closing fence."""
    text = RUNBOOK.read_text()
    section = text[text.index(heading):]
    start = section.index(after) + len(after)
    return section[start:section.index("\n```", start)]


def appendix_b():
    """What the runbook shows `./scripts/restore.sh --help` printing."""
    return runbook_text("## Appendix B: Restore Script Usage", "./scripts/restore.sh --help\n").strip("\n")


def step_2_example():
    """The lines of the runbook's step 2 "Expected Output" block."""
    block = runbook_text("#### Step 2: Verify Backup Integrity", "**Expected Output:**\n```\n")
    return block.splitlines()


def restore_sh(args, sandbox, report_dir, timeout=600):
    env = playbook_env(sandbox.state_dir)
    env["CAP_PYTHON"] = sys.executable
    vars_file = report_dir / "site-vars.json"
    vars_file.write_text(json.dumps({"cap_restore_report_dir": str(report_dir)}))
    env["CAP_RESTORE_EXTRA_VARS"] = str(vars_file)
    return subprocess.run([str(SCRIPT)] + [str(a) for a in args], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_prints_the_runbooks_appendix_b():
    expected = appendix_b()
    assert expected.startswith("Usage: restore.sh [OPTIONS]") and "--verify-only" in expected
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n") == expected


@pytest.fixture(scope="module")
def extracted(sandbox, backup, tmp_path_factory):
    """D: the backup as the runbook's step 1 leaves it (tar -xzf of the decrypted archive)."""
    return open_backup(sandbox, backup.archive, tmp_path_factory.mktemp("restore"))


def expected_lines(manifest):
    return (["\U0001F50D Verifying backup integrity..."]
            + ["\u2705 %s: SHA3-256 matches (%s...)" % (f["path"], f["sha3_256"][:10])
               for f in manifest["files"]]
            + ["\u2705 All %d files verified successfully" % manifest["total_files"]])


def test_expected_lines_have_the_runbooks_shape():
    """The runbook's own step 2 example fixes the form the script's lines are held to."""
    example = step_2_example()
    assert example[0] == "\U0001F50D Verifying backup integrity..."
    entry = re.compile(r"^\u2705 (\S+): SHA3-256 matches \(0x[0-9a-f]{8,9}\.\.\.\)$")
    assert all(entry.match(line) for line in example[1:-1]), example
    assert re.match(r"^\u2705 All \d+ files verified successfully$", example[-1])
    mine = expected_lines({"files": [{"path": "registry.sqlite", "sha3_256": "0x" + "1da941f7" * 8}],
                           "total_files": 1})
    assert mine[1] == "\u2705 registry.sqlite: SHA3-256 matches (0x1da941f7...)"
    assert entry.match(mine[1])


@pytest.mark.sandbox
@pytest.mark.slow
def test_verify_only_prints_the_runbooks_lines(sandbox, extracted, tmp_path):
    manifest = json.loads((extracted / "backup.manifest.json").read_text())
    before = fingerprint(extracted)
    known_targets = set(targets(sandbox))
    proc = restore_sh(["--verify-only", "--backup-dir", extracted,
                       "--manifest", extracted / "backup.manifest.json"], sandbox, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == expected_lines(manifest)
    assert len(proc.stdout.splitlines()) == len(manifest["files"]) + 2
    # --verify-only touches nothing: no target, the backup directory as it was.
    assert set(targets(sandbox)) == known_targets
    assert fingerprint(extracted) == before


@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.parametrize("damage, path, line", [
    ("changed", "policy_store.json", "\u274C policy_store.json: SHA3-256 mismatch (expected 0x"),
    ("missing", "runbooks/key-rotation.md", "\u274C runbooks/key-rotation.md: missing (expected 0x"),
], ids=["changed-file", "missing-file"])
def test_verify_only_names_a_damaged_file(sandbox, extracted, tmp_path, damage, path, line):
    copy = tmp_path / "restore"
    shutil.copytree(str(extracted), str(copy))
    if damage == "changed":
        with open(str(copy / path), "ab") as handle:
            handle.write(b" ")
    else:
        (copy / path).unlink()
    proc = restore_sh(["--verify-only", "--backup-dir", copy, "--manifest", copy / "backup.manifest.json"],
                      sandbox, tmp_path)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0] == "\U0001F50D Verifying backup integrity..."
    bad = [x for x in lines if x.startswith("\u274C") and not x.startswith("\u274C Verification failed")]
    assert len(bad) == 1 and bad[0].startswith(line), lines
    assert not any(x.startswith("\u2705 All") for x in lines)
    assert lines[-1].startswith("\u274C Verification failed: 1 of ")
    assert "verification failed" in proc.stderr
