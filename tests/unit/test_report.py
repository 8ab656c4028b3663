"""Restore and DR drill reports: schema, the four renderings, the summary, writing, metrics."""

import copy
import json
import math
import os
import re
import stat
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from ansible.module_utils.cap_report import (
    CHECKLIST,
    METRICS,
    ReportError,
    check_counts,
    checklist_missing,
    epoch_seconds,
    metric_updates,
    render_html,
    render_junit,
    render_markdown,
    summary_lines,
    validate_report,
    write_reports,
)

ARCHIVE_HASH = "0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f"
POLICY_HASH = "0x0afcb402e74ff6a11601863fc4ae2f2d756124db71bc703f5889ecefcd371ff4"
NASTY = "0xabc<script>alert('x')</script> & | `tick` *star* [link](http://evil) \x00\x1b end"

STEPS = (
    ("preflight", "Preflight checks", 3.2),
    ("fetch_backup", "Fetch backup from S3", 41.7),
    ("verify_backup", "Verify backup integrity", 12.4),
    ("deploy", "Deploy empty target", 212.9),
    ("restore_registry", "Restore registry", 35.0),
    ("restore_policy_store", "Restore policy store", 8.1),
    ("restore_key_metadata", "Restore key metadata", 6.6),
    ("verify_restore", "Verify restore completeness", 55.3),
    ("smoke_tests", "Smoke tests", 14.8),
    ("compare_source", "Compare with the live system", 72.5),
    ("teardown", "Tear down the target", 30.2),
)


def drill_report():
    """A passed drill that reports every runbook checklist item."""
    steps, offset = [], 0
    for name, title, seconds in STEPS:
        steps.append({"name": name, "title": title, "duration_seconds": seconds, "status": "ok",
                      "started_at": "2025-11-10T13:%02d:%02dZ" % divmod(int(offset), 60),
                      "detail": ""})
        offset += seconds
    checks = [{"id": item, "section": section, "name": name, "passed": True, "detail": ""}
              for item, section, name in CHECKLIST]
    checks += [
        {"id": "drill.policies", "section": "Drill Comparison", "passed": True,
         "name": "Every policy identical to the live system", "detail": "25 of 25"},
        {"id": "drill.registry_entries", "section": "Drill Comparison", "passed": True,
         "name": "Every registry entry identical to the live system", "detail": "120 of 120"},
    ]
    return {
        "schema": "cap-drill-report.v1",
        "kind": "drill",
        "drill_id": "drill-20251110-130000",
        "result": "passed",
        "started_at": "2025-11-10T13:00:00Z",
        "finished_at": "2025-11-10T13:08:02Z",
        "duration_seconds": 482.7,
        "backup": {"backup_id": "backup-20251110-120000", "created_at": "2025-11-10T12:00:00Z",
                   "location": "s3://cap-backups/prod/backup-20251110-120000.tar.gz.enc",
                   "archive_sha3_256": ARCHIVE_HASH, "encrypted": True,
                   "signature_kid": "cap-backup-2025"},
        "source": {"url": "https://cap-prod.example.com"},
        "target": {"platform": "kubernetes", "name": "cap-restore",
                   "url": "https://cap-restore.example.com"},
        "objectives": {"rto": {"target_seconds": 1800, "measured_seconds": 375.4, "met": True},
                       "rpo": {"target_seconds": 3600, "measured_seconds": 3120, "met": True}},
        "steps": steps,
        "checks": checks,
        "differences": [],
        "differences_total": 0,
        "counts": {"policies": {"backup": 25, "restored": 25, "source": 25},
                   "registry_entries": {"backup": 120, "restored": 120, "source": 120}},
        "error": None,
        "teardown": {"done": True, "key_material_removed": True,
                     "detail": "namespace cap-restore deleted"},
    }


def failed_drill_report():
    """A failed drill: RTO missed, a failed and a skipped step, a failed and unrun checks."""
    doc = drill_report()
    doc["result"] = "failed"
    doc["objectives"]["rto"].update(measured_seconds=2143.9, met=False)
    doc["steps"][7].update(status="failed", detail=NASTY)
    doc["steps"][8].update(status="skipped", started_at=None, duration_seconds=0,
                           detail="after a failed step")
    for check in doc["checks"]:
        if check["id"] == "hash.policy_hash":
            check.update(passed=False, detail="2 of 25 differ: " + NASTY)
        elif check["section"] == "Smoke Tests":
            check.update(passed=None, detail=None)
    doc["differences"] = [
        {"kind": "policy", "id": POLICY_HASH, "field": "policy_hash", "expected": POLICY_HASH,
         "actual": POLICY_HASH[:-6] + "<&|>`x"},
        {"kind": "registry_entry", "id": "0xd490be94", "field": "kid",
         "expected": "company-2025", "actual": None},
    ]
    doc["differences_total"] = 7
    doc["counts"]["policies"]["restored"] = 24
    doc["error"] = "Verify restore completeness failed:\n" + NASTY
    return doc


def restore_report():
    doc = drill_report()
    del doc["drill_id"], doc["objectives"]
    doc.update(schema="cap-restore-report.v1", kind="restore", restore_id="restore-20251110-140000",
               source=None)
    doc["checks"] = [c for c in doc["checks"] if c["section"] != "Drill Comparison"]
    for sides in doc["counts"].values():
        sides["source"] = None
    return doc


def errors_of(doc, kind="drill"):
    with pytest.raises(ReportError) as info:
        validate_report(doc, kind)
    return info.value.errors


# Schema ---------------------------------------------------------------------------------

def test_valid_reports_pass_validation():
    for doc, kind in ((drill_report(), "drill"), (failed_drill_report(), "drill"),
                      (restore_report(), "restore")):
        assert validate_report(doc, kind) is doc


def test_missing_field_is_named():
    doc = drill_report()
    del doc["backup"]["archive_sha3_256"]
    del doc["teardown"]
    errors = errors_of(doc)
    assert "report.backup.archive_sha3_256 is missing" in errors
    assert "report.teardown is missing" in errors


def test_invalid_fields_are_named_with_their_path():
    doc = drill_report()
    doc["steps"][1]["status"] = "done"
    doc["checks"][3]["passed"] = "yes"
    doc["objectives"]["rpo"]["target_seconds"] = 0
    doc["backup"]["archive_sha3_256"] = "0xABC"
    doc["duration_seconds"] = True
    errors = errors_of(doc)
    text = "\n".join(errors)
    assert 'report.steps[1].status must be one of ok, failed, skipped, got "done"' in errors
    assert "report.checks[3].passed must be true or false or null" in text
    assert "report.objectives.rpo.target_seconds must be a number > 0" in text
    assert "report.backup.archive_sha3_256 must be 0x and 64 lowercase hex digits" in text
    assert "report.duration_seconds must be a number >= 0, got true" in text


def test_unknown_fields_and_wrong_schema_are_refused():
    doc = drill_report()
    doc["extra"] = 1
    doc["schema"] = "cap-drill-report.v2"
    doc["kind"] = "restore"
    errors = errors_of(doc)
    assert "report.extra is not a field of this schema" in errors
    assert 'report.schema must be one of cap-drill-report.v1, got "cap-drill-report.v2"' in errors
    assert 'report.kind must be one of drill, got "restore"' in errors
    assert errors_of("not a dict") == ['report must be an object, got "not a dict"']


def test_restore_report_has_no_objectives_and_no_drill_comparison():
    doc = restore_report()
    doc["objectives"] = drill_report()["objectives"]
    doc["checks"][0]["section"] = "Drill Comparison"
    errors = errors_of(doc, "restore")
    assert ("report.objectives is not a field of a restore report (only drills have objectives)"
            in errors)
    assert any(e.startswith("report.checks[0].section must be one of") for e in errors)


def test_drill_needs_a_source_restore_may_not():
    doc = drill_report()
    doc["source"] = None
    assert errors_of(doc) == ["report.source must be an object, got null"]
    validate_report(restore_report(), "restore")


def test_timestamps_are_utc_with_z_and_in_order():
    doc = drill_report()
    doc["started_at"] = "2025-11-10T14:00:00+01:00"
    doc["backup"]["created_at"] = "2025-13-40T12:00:00Z"
    errors = errors_of(doc)
    assert any(e.startswith("report.started_at must be a UTC timestamp") for e in errors)
    assert any(e.startswith("report.backup.created_at must be a UTC timestamp") for e in errors)
    doc = drill_report()
    doc["finished_at"] = "2025-11-10T12:59:59Z"
    assert errors_of(doc) == ["report.finished_at is before started_at"]
    doc = drill_report()
    doc["finished_at"] = "2025-11-10T13:08:02.250Z"
    validate_report(doc, "drill")
    assert epoch_seconds("2025-11-10T12:00:00Z") == 1762776000


def test_objective_met_must_agree_with_the_measurement():
    doc = drill_report()
    doc["objectives"]["rto"].update(measured_seconds=1800, met=True)
    assert errors_of(doc) == ["report.objectives.rto.met is true, but measured_seconds 1800 is "
                              "not below target_seconds 1800"]
    doc = failed_drill_report()
    doc["objectives"]["rpo"].update(measured_seconds=None, met=True)
    assert errors_of(doc) == ["report.objectives.rpo.met is true, but measured_seconds is null"]
    doc = failed_drill_report()
    doc["objectives"]["rpo"].update(measured_seconds=10, met=False)
    assert errors_of(doc) == ["report.objectives.rpo.met is false, but measured_seconds 10 is "
                              "below target_seconds 3600"]


def test_a_passed_report_cannot_contradict_itself():
    doc = failed_drill_report()
    doc["result"] = "passed"
    errors = errors_of(doc)
    assert "report.result is 'passed' but error is set" in errors
    assert "report.result is 'passed' but step verify_restore failed" in errors
    assert "report.result is 'passed' but check hash.policy_hash failed" in errors
    assert "report.result is 'passed' but check smoke.healthz was not run" in errors
    assert "report.result is 'passed' but 7 difference(s) were found" in errors
    assert "report.result is 'passed' but the RTO objective was not met" in errors
    doc = drill_report()
    doc["teardown"]["key_material_removed"] = False
    doc["checks"] = []
    errors = errors_of(doc)
    assert "report.result is 'passed' but key material was not removed" in errors
    assert "report.result is 'passed' but no checks were reported" in errors


def test_only_a_drill_needs_the_archive_hash_to_pass():
    drill = drill_report()
    drill["backup"]["archive_sha3_256"] = None
    assert "report.result is 'passed' but the backup archive hash is unknown" in errors_of(drill)
    restore = restore_report()
    restore["backup"].update(archive_sha3_256=None, location="/restore/backup-20251110-120000")
    validate_report(restore, "restore")


def test_a_failed_report_may_have_unknowns():
    doc = failed_drill_report()
    doc["backup"].update(archive_sha3_256=None, created_at=None, signature_kid=None)
    doc["objectives"]["rpo"].update(measured_seconds=None, met=False)
    doc["target"]["url"] = None
    doc["counts"]["registry_entries"]["restored"] = None
    doc["teardown"].update(done=False, key_material_removed=False, detail=None)
    validate_report(doc, "drill")
    for render in (render_markdown, render_html, render_junit, summary_lines):
        render(doc)


def test_duplicates_and_lists_are_checked():
    doc = drill_report()
    doc["steps"][2]["name"] = "preflight"
    doc["checks"][1]["id"] = doc["checks"][0]["id"]
    doc["differences"] = [{"kind": "policy", "id": "x", "field": "f", "expected": [1], "actual": 2}]
    doc["differences_total"] = 0
    doc["result"] = "failed"
    errors = errors_of(doc)
    assert 'report.steps[2].name repeats step "preflight"' in errors
    assert 'report.checks[1].id repeats check "functional.pods_running"' in errors
    assert ("report.differences[0].expected must be a string, number, boolean or null, got a list"
            in errors)
    assert "report.differences_total is 0, fewer than the 1 differences listed" in errors
    doc = drill_report()
    doc["steps"] = "x"
    assert errors_of(doc) == ['report.steps must be a list, got "x"']


def test_skipped_step_may_lack_a_start_time_others_may_not():
    doc = failed_drill_report()
    doc["steps"][3]["started_at"] = None
    assert errors_of(doc) == ["report.steps[3].started_at must be a UTC timestamp "
                              "YYYY-MM-DDTHH:MM:SSZ, got null"]


def test_error_message_lists_everything_in_one_string():
    doc = drill_report()
    doc["result"] = "maybe"
    del doc["counts"]
    with pytest.raises(ReportError) as info:
        validate_report(doc, "drill")
    assert "report.counts is missing" in str(info.value)
    assert 'report.result must be one of passed, failed, got "maybe"' in str(info.value)


def test_checklist_missing_names_unreported_runbook_items():
    doc = drill_report()
    assert checklist_missing(doc) == []
    doc["checks"] = [c for c in doc["checks"] if c["id"] not in ("hash.ir_hash", "smoke.etag")]
    assert checklist_missing(doc) == ["hash.ir_hash", "smoke.etag"]


# Markdown -------------------------------------------------------------------------------

def _table_cells(line):
    """Cells of a Markdown table row, splitting only on unescaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_markdown_has_the_runbook_checklist_by_section():
    text = render_markdown(failed_drill_report())
    assert text.startswith("# DR drill report: FAILED\n")
    sections = re.findall(r"^### (.+) \(\d+/\d+\)$", text, re.M)
    assert sections == ["Functional Checks", "Hash Integrity Checks", "Signature Checks",
                        "API Functionality Checks", "Compliance Checks", "Smoke Tests",
                        "Drill Comparison"]
    assert "- [x] All pods running `functional.pods_running`" in text
    assert re.search(r"^- \[ \] policy_hash matches original \(SHA3-256\) \*\*FAILED\*\*", text,
                     re.M)
    assert "- [ ] Health check *(not run)* `smoke.healthz`" in text
    assert "| RTO | \\< 1800 s (30 min) | 2143.9 s (35 min 44 s) | **missed** |" in text
    assert "| RPO | \\< 3600 s (1 h) | 3120.0 s (52 min 00 s) | met |" in text


def test_markdown_escapes_pipes_and_html_in_tables():
    text = render_markdown(failed_drill_report())
    assert "<script>" not in text
    # Every row of the steps table has its seven columns despite the '|' in a detail.
    steps_rows = [line for line in text.splitlines() if "`verify_restore`" in line]
    assert len(_table_cells(steps_rows[0])) == 7
    diff_rows = [line for line in text.splitlines() if line.startswith("| policy |")]
    assert len(_table_cells(diff_rows[0])) == 5
    assert "\\|" in diff_rows[0]
    assert "\x00" not in text and "\x1b" not in text
    assert "7 differences; the first 2 are listed." in text


def test_markdown_of_a_passed_restore():
    text = render_markdown(restore_report())
    assert text.startswith("# Restore report: PASSED\n")
    assert "## Objectives" not in text
    assert "None: the restored system matches." in text
    assert "Drill Comparison" not in text


# HTML -----------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Balance(HTMLParser):
    """Checks that every element is closed in order; collects tags, attributes and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append("</%s> closes %s" % (tag, self.stack[-1:] or "nothing"))
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text):
    parser = Balance()
    parser.feed(text)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


@pytest.mark.parametrize("factory", [drill_report, failed_drill_report, restore_report])
def test_html_is_balanced_self_contained_and_script_free(factory):
    text = render_html(factory())
    assert text.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    parser = parse_html(text)
    names = [tag for tag, _attrs in parser.tags]
    assert "script" not in names and "link" not in names and "img" not in names
    assert "iframe" not in names and "object" not in names
    for _tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs)
        for name in ("src", "href"):
            assert name not in attrs
    assert "@import" not in text and "url(" not in text
    assert names.count("style") == 1 and names.count("title") >= 1


def test_html_header_badges_and_objectives():
    passed = parse_html(render_html(drill_report()))
    header = [attrs for tag, attrs in passed.tags if tag == "header"][0]
    assert header["class"] == "card hero passed"
    assert "PASSED" in passed.text
    assert passed.text.count("MET") == 2
    failed_text = render_html(failed_drill_report())
    failed = parse_html(failed_text)
    assert 'class="card hero"' in failed_text
    assert "FAILED" in failed.text and "MISSED" in failed.text and "MET" in failed.text
    assert "35 min 44 s" in failed.text
    assert "measured 2143.9 s \u00b7 target < 1800 s (30 min)" in failed.text
    # The header and both objectives come before the steps.
    assert failed_text.index("objective met") < failed_text.index("<h2>Steps</h2>")


def test_html_step_chart_scales_to_the_longest_step():
    doc = failed_drill_report()
    parser = parse_html(render_html(doc))
    rects = [attrs for tag, attrs in parser.tags if tag == "rect"]
    assert len(rects) == len(doc["steps"])
    widths = [float(r["width"]) for r in rects]
    longest = max(step["duration_seconds"] for step in doc["steps"])
    assert max(widths) == 560.0
    for rect, step in zip(rects, doc["steps"]):
        expected = 560 * step["duration_seconds"] / longest
        assert float(rect["width"]) == pytest.approx(expected, abs=0.1)
    failed_index = [i for i, s in enumerate(doc["steps"]) if s["status"] == "failed"][0]
    assert rects[failed_index]["fill"] == "#cf222e"
    ok_fills = {r["fill"] for i, r in enumerate(rects) if doc["steps"][i]["status"] == "ok"}
    assert ok_fills == {"#2da44e"}
    assert "Verify restore completeness" in parser.text and "55.3 s  failed" in parser.text
    assert "skipped" in parser.text


def test_html_escapes_everything_and_shows_the_error_and_hashes():
    doc = failed_drill_report()
    text = render_html(doc)
    parser = parse_html(text)
    assert "<script>" not in text
    joined = "".join(parser.text)
    assert "0xabc<script>alert('x')</script> & | `tick`" in joined
    assert "\x00" not in text and "\x1b" not in text
    assert "Verify restore completeness failed:" in joined
    # The differing hash is in monospace with its differing tail marked.
    assert ('<td class="mono">%s<mark>&lt;&amp;|&gt;`x</mark></td>' % POLICY_HASH[:-6]) in text
    assert '<td class="mono">%s</td>' % POLICY_HASH in text
    assert ARCHIVE_HASH in joined
    assert "(missing)" in joined


def test_html_checklist_items_by_section():
    doc = failed_drill_report()
    parser = parse_html(render_html(doc))
    items = [attrs["class"] for tag, attrs in parser.tags if tag == "li"]
    assert len(items) == len(doc["checks"])
    assert items.count("fail") == 1
    assert items.count("notrun") == 6
    assert items.count("pass") == len(doc["checks"]) - 7
    assert "4/5 passed" in parser.text and "0/6 passed" in parser.text


def test_html_has_print_styles():
    assert "@media print" in render_html(drill_report())


# JUnit ----------------------------------------------------------------------------------

# Element and attribute shapes of Jenkins' junit-10.xsd, which GitLab and AWX also read.
JUNIT_ATTRS = {
    "testsuites": {"name", "time", "tests", "failures", "errors"},
    "testsuite": {"name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp",
                  "hostname", "id", "package", "file", "log", "url"},
    "properties": set(),
    "property": {"name", "value"},
    "testcase": {"name", "time", "classname", "group"},
    "failure": {"type", "message"},
    "error": {"type", "message"},
    "skipped": {"type", "message"},
    "system-out": set(),
    "system-err": set(),
}
JUNIT_CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"testsuite", "properties", "testcase", "system-out", "system-err"},
    "properties": {"property"},
    "property": set(),
    "testcase": {"skipped", "error", "failure", "system-out", "system-err"},
    "failure": set(), "error": set(), "skipped": set(), "system-out": set(), "system-err": set(),
}


def check_junit_shape(element):
    assert set(element.attrib) <= JUNIT_ATTRS[element.tag], element.tag
    for child in element:
        assert child.tag in JUNIT_CHILDREN[element.tag], (element.tag, child.tag)
        check_junit_shape(child)


@pytest.mark.parametrize("factory", [drill_report, failed_drill_report, restore_report])
def test_junit_parses_and_has_the_junit_shape(factory):
    doc = factory()
    root = ET.fromstring(render_junit(doc).encode("utf-8"))
    assert root.tag == "testsuites"
    check_junit_shape(root)
    suites = root.findall("testsuite")
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
        assert suite.get("errors") == "0"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", suite.get("timestamp"))
        assert re.match(r"^\d+\.\d{3}$", suite.get("time"))
        for case in cases:
            assert case.get("classname").startswith("cap.%s." % doc["kind"])
            assert re.match(r"^\d+\.\d{3}$", case.get("time"))
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)
    assert int(root.get("failures")) == sum(int(s.get("failures")) for s in suites)
    names = [s.get("name") for s in suites]
    expected = ["Result"] + (["Objectives"] if doc["kind"] == "drill" else []) + ["Steps"]
    expected += [section for section in ("Functional Checks", "Hash Integrity Checks",
                                         "Signature Checks", "API Functionality Checks",
                                         "Compliance Checks", "Smoke Tests", "Drill Comparison")
                 if any(c["section"] == section for c in doc["checks"])]
    assert names == expected
    check_cases = sum(len(s.findall("testcase")) for s in suites
                      if s.get("name") not in ("Result", "Objectives", "Steps"))
    assert check_cases == len(doc["checks"])
    steps = [s for s in suites if s.get("name") == "Steps"][0]
    assert len(steps.findall("testcase")) == len(doc["steps"])


def test_junit_failures_carry_message_and_detail():
    doc = failed_drill_report()
    root = ET.fromstring(render_junit(doc).encode("utf-8"))
    by_name = dict((c.get("name"), c) for c in root.iter("testcase"))
    failure = by_name["hash.policy_hash: policy_hash matches original (SHA3-256)"].find("failure")
    assert failure.get("type") == "CheckFailed"
    assert failure.get("message").startswith("2 of 25 differ: 0xabc<script>alert('x')</script> & |")
    assert "\x00" not in failure.text
    rto = by_name["RTO"].find("failure")
    assert rto.get("type") == "ObjectiveMissed"
    assert rto.get("message") == "RTO 2143.9 s is not below the 1800 s objective"
    assert by_name["RPO"].find("failure") is None
    assert "RPO measured 3120.0 s" in by_name["RPO"].find("system-out").text
    step = by_name["Verify restore completeness (verify_restore)"]
    assert step.find("failure").get("type") == "StepFailed"
    assert step.get("time") == "55.300"
    assert by_name["Smoke tests (smoke_tests)"].find("skipped") is not None
    assert by_name["smoke.healthz: Health check"].find("skipped").get("message") == "not run"
    result = by_name["DR drill result"].find("failure")
    assert result.get("message").startswith("Verify restore completeness failed: 0xabc")
    assert "the RTO objective was not met" in result.text
    differences = by_name["Differences"].find("failure")
    assert differences.get("message") == "7 difference(s) between expected and restored values"
    assert POLICY_HASH in differences.text and "(5 more not listed)" in differences.text
    props = dict((p.get("name"), p.get("value")) for p in root.iter("property"))
    assert props["archive_sha3_256"] == ARCHIVE_HASH and props["result"] == "failed"


def test_junit_of_a_passed_drill_has_no_failures():
    root = ET.fromstring(render_junit(drill_report()).encode("utf-8"))
    assert root.get("failures") == "0"
    assert root.get("time") == "482.700"
    assert not list(root.iter("failure"))


# Summary --------------------------------------------------------------------------------

def test_summary_lines_cover_objectives_steps_checks_and_result():
    lines = summary_lines(failed_drill_report())
    text = "\n".join(lines)
    assert lines[0] == "CAP DR drill drill-20251110-130000: FAILED"
    assert lines[-1] == "Result: FAILED"
    assert all("\n" not in line and "\x00" not in line for line in lines)
    assert re.search(r"^RTO\s+< 1800 s\s+2143.9 s\s+35 min 44 s\s+MISSED$", text, re.M)
    assert re.search(r"^RPO\s+< 3600 s\s+3120.0 s\s+52 min 00 s\s+met$", text, re.M)
    assert re.search(r"^ 8\s+Verify restore completeness\s+FAILED\s+55.3 s$", text, re.M)
    assert re.search(r"^ 9\s+Smoke tests\s+skipped\s+0.0 s$", text, re.M)
    assert re.search(r"^\s+Total\s+482.7 s$", text, re.M)
    assert re.search(r"^Hash Integrity Checks\s+4\s+1\s+0$", text, re.M)
    assert re.search(r"^All checks\s+21\s+1\s+6$", text, re.M)
    assert "  FAILED hash.policy_hash: policy_hash matches original" in text
    assert "Differences: 7" in text and "  ... 5 more in the report" in text
    # Hashes that differ only at the end stay distinguishable.
    assert "expected 0x0afcb402e\u2026cefcd371ff4, actual 0x0afcb402e\u2026cefcd<&|>`x" in text


def test_summary_of_a_restore_has_no_objectives():
    lines = summary_lines(restore_report())
    assert lines[0] == "CAP Restore restore-20251110-140000: PASSED"
    assert not any(line.startswith("RTO") for line in lines)


# Writing --------------------------------------------------------------------------------

def test_write_reports_writes_all_formats_atomically_and_idempotently(tmp_path):
    doc = drill_report()
    dest = tmp_path / "reports" / "drill-20251110-130000"
    first = write_reports(doc, "drill", str(dest))
    assert first["changed"] and first["created_dir"]
    names = sorted(os.listdir(str(dest)))
    assert names == ["drill-report.html", "drill-report.json", "drill-report.md",
                     "drill-report.xml"]
    for name in names:
        assert stat.S_IMODE(os.stat(str(dest / name)).st_mode) == 0o644
    raw = (dest / "drill-report.json").read_text()
    assert json.loads(raw) == doc
    assert raw == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    mtimes = dict((n, os.stat(str(dest / n)).st_mtime_ns) for n in names)
    second = write_reports(copy.deepcopy(doc), "drill", str(dest))
    assert not second["changed"] and second["changed_files"] == []
    assert mtimes == dict((n, os.stat(str(dest / n)).st_mtime_ns) for n in names)
    doc["finished_at"] = "2025-11-10T13:08:03Z"
    third = write_reports(doc, "drill", str(dest), formats=["json", "junit"])
    assert sorted(os.path.basename(p) for p in third["changed_files"]) == [
        "drill-report.json", "drill-report.xml"]


def test_write_reports_check_mode_and_restore_defaults(tmp_path):
    dest = tmp_path / "restore"
    result = write_reports(restore_report(), "restore", str(dest), check_mode=True)
    assert result["changed"] and not dest.exists()
    assert sorted(result["paths"]) == ["json", "md"]
    result = write_reports(restore_report(), "restore", str(dest), basename="restore-1")
    assert sorted(os.listdir(str(dest))) == ["restore-1.json", "restore-1.md"]
    result = write_reports(restore_report(), "restore", str(dest), basename="restore-1",
                           check_mode=True)
    assert not result["changed"]


def test_write_reports_refuses_bad_names_formats_and_documents(tmp_path):
    with pytest.raises(ReportError, match="basename must match"):
        write_reports(drill_report(), "drill", str(tmp_path), basename="../x")
    with pytest.raises(ReportError, match="formats must be among"):
        write_reports(drill_report(), "drill", str(tmp_path), formats=["pdf"])
    with pytest.raises(ReportError, match="at least one"):
        write_reports(drill_report(), "drill", str(tmp_path), formats=[])
    with pytest.raises(ReportError, match="report.schema must be one of cap-restore-report.v1"):
        write_reports(drill_report(), "restore", str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


# Metrics --------------------------------------------------------------------------------

def by_metric(updates):
    return dict(((u["name"], tuple(sorted(u["labels"].items()))), u) for u in updates)


def test_metric_updates_of_a_passed_drill():
    updates = metric_updates(drill_report())
    for update in updates:
        assert update["name"] in METRICS
        assert update["type"] == METRICS[update["name"]][0]
        assert update["help"] == METRICS[update["name"]][1]
    m = by_metric(updates)
    assert m[("cap_drill_attempts_total", (("status", "success"),))]["value"] == 1
    assert m[("cap_drill_attempts_total", (("status", "failure"),))]["value"] == 0
    assert m[("cap_drill_attempts_total", (("status", "failure"),))]["action"] == "inc"
    assert m[("cap_drill_last_result", ())]["value"] == 1
    assert m[("cap_drill_rto_seconds", ())]["value"] == 375.4
    assert m[("cap_drill_rpo_seconds", ())]["value"] == 3120
    assert m[("cap_drill_objective_met", (("objective", "rto"),))]["value"] == 1
    assert m[("cap_drill_checks_passed", ())]["value"] == len(drill_report()["checks"])
    assert m[("cap_drill_checks_total", ())]["value"] == len(drill_report()["checks"])
    finished = epoch_seconds("2025-11-10T13:08:02Z")
    assert m[("cap_drill_last_success_timestamp", ())]["value"] == finished


def test_metric_updates_of_a_failed_drill_leave_last_success_alone():
    doc = failed_drill_report()
    doc["objectives"]["rpo"].update(measured_seconds=None, met=False)
    m = by_metric(metric_updates(doc))
    assert ("cap_drill_last_success_timestamp", ()) not in m
    assert m[("cap_drill_attempts_total", (("status", "failure"),))]["value"] == 1
    assert m[("cap_drill_last_result", ())]["value"] == 0
    assert m[("cap_drill_rpo_seconds", ())]["value"] == "NaN"
    assert m[("cap_drill_objective_met", (("objective", "rto"),))]["value"] == 0
    counts = check_counts(doc)
    assert m[("cap_drill_checks_passed", ())]["value"] == counts["passed"] == 21


def test_metric_updates_of_a_restore():
    doc = restore_report()
    doc["result"] = "failed"
    doc["checks"][5]["passed"] = False  # hash.policy_hash
    for check in doc["checks"]:
        if check["id"] in ("smoke.etag", "smoke.verify"):
            check["passed"] = None
    m = by_metric(metric_updates(doc))
    assert all(name.startswith("cap_restore_") for name, _labels in m)
    assert m[("cap_restore_hash_verification_success_ratio", ())]["value"] == pytest.approx(0.8)
    assert m[("cap_restore_smoke_test_pass_ratio", ())]["value"] == pytest.approx(4 / 6.0)
    assert m[("cap_restore_registry_entries_restored", ())]["value"] == 120
    assert m[("cap_restore_duration_seconds", ())]["value"] == 482.7
    assert ("cap_restore_last_success_timestamp", ()) not in m
    doc["checks"] = [c for c in doc["checks"] if c["section"] != "Smoke Tests"]
    m = by_metric(metric_updates(doc))
    assert m[("cap_restore_smoke_test_pass_ratio", ())]["value"] == "NaN"
    assert math.isnan(float(m[("cap_restore_smoke_test_pass_ratio", ())]["value"]))
