"""cap_report run through Ansible: files, idempotence, check mode, errors, documentation."""

import json
import os
import stat
import subprocess
import xml.etree.ElementTree as ET

from tests.conftest import ROOT, VENV_BIN, ansible_env
from tests.unit.test_report import drill_report, failed_drill_report, restore_report

FILES = ["drill-report.html", "drill-report.json", "drill-report.md", "drill-report.xml"]


def test_drill_report_written_in_four_formats_then_unchanged(module, tmp_path):
    dest = tmp_path / "reports"
    args = {"kind": "drill", "report": drill_report(), "dest_dir": str(dest)}
    first = module("cap_report", args)
    assert not first.failed, first.msg
    assert first.changed
    assert sorted(os.listdir(str(dest))) == FILES
    for name in FILES:
        assert stat.S_IMODE(os.stat(str(dest / name)).st_mode) == 0o644
    assert first["paths"] == {"json": str(dest / "drill-report.json"),
                              "md": str(dest / "drill-report.md"),
                              "html": str(dest / "drill-report.html"),
                              "junit": str(dest / "drill-report.xml")}
    assert first["files"] == [first["paths"][fmt] for fmt in ("json", "md", "html", "junit")]
    assert json.loads((dest / "drill-report.json").read_text()) == drill_report()
    assert first["result"] == "passed"
    assert first["checks"] == {"passed": 28, "failed": 0, "not_run": 0, "total": 28}
    assert first["checklist_missing"] == [] and first["failure_reasons"] == []
    assert first["summary_lines"][0] == "CAP DR drill drill-20251110-130000: PASSED"
    assert first["summary_lines"][-1] == "Result: PASSED"
    assert {m["name"] for m in first["metrics"]} >= {"cap_drill_attempts_total",
                                                      "cap_drill_last_success_timestamp"}
    second = module("cap_report", args)
    assert not second.failed and not second.changed
    assert second["changed_files"] == []


def test_failed_drill_report_is_written_and_not_a_task_failure(module, tmp_path):
    result = module("cap_report", {"kind": "drill", "report": failed_drill_report(),
                                   "dest_dir": str(tmp_path), "basename": "drill-1"})
    assert not result.failed, result.msg
    assert result["result"] == "failed"
    assert "the RTO objective was not met" in result["failure_reasons"]
    root = ET.parse(str(tmp_path / "drill-1.xml")).getroot()
    assert int(root.get("failures")) > 0
    assert "<script>" not in (tmp_path / "drill-1.html").read_text()


def test_check_mode_validates_and_writes_nothing(module, tmp_path):
    dest = tmp_path / "new"
    result = module("cap_report", {"kind": "drill", "report": drill_report(),
                                   "dest_dir": str(dest)}, check=True)
    assert not result.failed and result.changed
    assert not dest.exists()
    bad = drill_report()
    del bad["checks"][0]["passed"]
    result = module("cap_report", {"kind": "drill", "report": bad, "dest_dir": str(dest)},
                    check=True)
    assert result.failed
    assert "report.checks[0].passed is missing" in result.msg


def test_invalid_report_fails_naming_the_fields(module, tmp_path):
    bad = drill_report()
    bad["objectives"]["rto"]["measured_seconds"] = "fast"
    bad["backup"]["archive_sha3_256"] = "0x<&|>"
    result = module("cap_report", {"kind": "drill", "report": bad, "dest_dir": str(tmp_path)})
    assert result.failed
    assert result.msg.startswith("invalid drill report: ")
    assert 'report.objectives.rto.measured_seconds must be a number >= 0 or null, got "fast"' \
        in result.msg
    assert "report.backup.archive_sha3_256 must be 0x and 64 lowercase hex digits" in result.msg
    assert len(result["errors"]) == 2
    assert os.listdir(str(tmp_path)) == []


def test_restore_defaults_and_format_choice(module, tmp_path):
    result = module("cap_report", {"kind": "restore", "report": restore_report(),
                                   "dest_dir": str(tmp_path)})
    assert not result.failed, result.msg
    assert sorted(os.listdir(str(tmp_path))) == ["restore-report.json", "restore-report.md"]
    result = module("cap_report", {"kind": "restore", "report": restore_report(),
                                   "dest_dir": str(tmp_path), "formats": ["junit", "junit"]})
    assert not result.failed and result.changed
    assert result["paths"] == {"junit": str(tmp_path / "restore-report.xml")}
    result = module("cap_report", {"kind": "restore", "report": restore_report(),
                                   "dest_dir": str(tmp_path), "formats": ["pdf"]})
    assert result.failed and "pdf" in result.msg
    result = module("cap_report", {"kind": "restore", "report": restore_report(),
                                   "dest_dir": str(tmp_path), "basename": "../escape"})
    assert result.failed
    assert result.msg.startswith("cannot write the restore report: basename must match")


def test_kind_and_report_must_agree(module, tmp_path):
    result = module("cap_report", {"kind": "restore", "report": drill_report(),
                                   "dest_dir": str(tmp_path)})
    assert result.failed
    assert "report.schema must be one of cap-restore-report.v1" in result.msg
    assert "report.objectives is not a field of a restore report" in result.msg


def test_unwritable_destination_fails_clearly(module, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = module("cap_report", {"kind": "drill", "report": drill_report(),
                                   "dest_dir": str(blocker)})
    assert result.failed
    assert result.msg == "cannot write the drill report: dest_dir %s exists and is not a directory" \
        % blocker


def test_documentation_matches_the_argument_spec():
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-j", "cap_report"], cwd=ROOT,
                          env=ansible_env(), capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)["cap_report"]
    options = doc["doc"]["options"]
    assert set(options) == {"kind", "report", "dest_dir", "formats", "basename"}
    assert options["kind"]["choices"] == ["drill", "restore"]
    assert options["formats"]["choices"] == ["json", "md", "html", "junit"]
    assert all(options[name].get("required") for name in ("kind", "report", "dest_dir"))
    assert set(doc["return"]) >= {"paths", "files", "changed_files", "summary_lines", "metrics"}
