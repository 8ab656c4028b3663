# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore and DR drill reports: validate one JSON document, render it four ways.

validate_report() checks a document against cap-drill-report.v1 or cap-restore-report.v1.
render_markdown(), render_html() and render_junit() turn it into the runbook's checklist
form, a self-contained page and a JUnit file for CI; summary_lines() gives the plain-text
table a playbook prints at the end; write_reports() writes the chosen formats atomically.
metric_updates() turns a report into the cap_metrics updates of the metrics in METRICS.
docs/reports.md describes the schema field by field, docs/monitoring.md the metrics.
"""

from __future__ import annotations

import calendar
import datetime
import html
import json
import os
import re
import xml.etree.ElementTree as ET

from ansible.module_utils.cap_fsutil import atomic_write_bytes, same_content
from ansible.module_utils.cap_hashing import is_prefixed_hash

KINDS = ("drill", "restore")
SCHEMAS = {"drill": "cap-drill-report.v1", "restore": "cap-restore-report.v1"}
ID_FIELDS = {"drill": "drill_id", "restore": "restore_id"}
TITLES = {"drill": "DR drill", "restore": "Restore"}
RESULTS = ("passed", "failed")
STEP_STATUSES = ("ok", "failed", "skipped")

# The runbook's Validation Checklist sections, then the smoke tests of its Step 8, then
# what only a drill does: compare the restored system with the live one.
RUNBOOK_SECTIONS = ("Functional Checks", "Hash Integrity Checks", "Signature Checks",
                    "API Functionality Checks", "Compliance Checks")
SECTIONS = {
    "drill": RUNBOOK_SECTIONS + ("Smoke Tests", "Drill Comparison"),
    "restore": RUNBOOK_SECTIONS + ("Smoke Tests",),
}

# The runbook's checklist items (Validation Checklist and Step 8 smoke tests) with the
# check ids the roles report them under; checklist_missing() names the ones a report lacks.
CHECKLIST = (
    ("functional.pods_running", "Functional Checks", "All pods running"),
    ("functional.healthz", "Functional Checks", "Health check returns 200 (/healthz)"),
    ("functional.readyz", "Functional Checks", "Readiness check returns 200 (/readyz)"),
    ("functional.registry_accessible", "Functional Checks",
     "Registry accessible (SQLite query succeeds)"),
    ("functional.policy_store_loaded", "Functional Checks", "Policy store loaded (25+ policies)"),
    ("hash.policy_hash", "Hash Integrity Checks", "policy_hash matches original (SHA3-256)"),
    ("hash.ir_hash", "Hash Integrity Checks", "ir_hash matches original (SHA3-256)"),
    ("hash.manifest_hash", "Hash Integrity Checks", "manifest_hash matches original (SHA3-256)"),
    ("hash.proof_hash", "Hash Integrity Checks", "proof_hash matches original (SHA3-256)"),
    ("hash.etag", "Hash Integrity Checks", "ETag matches original (first 16 chars of policy_hash)"),
    ("signature.kids_valid", "Signature Checks", "Registry entries have valid KIDs"),
    ("signature.verify", "Signature Checks", "Signatures verify with restored public keys"),
    ("signature.private_keys_from_kms", "Signature Checks",
     "Private keys retrieved from KMS (not in backup)"),
    ("api.policy_compile", "API Functionality Checks", "/policy/compile works (create new policy)"),
    ("api.policy_get", "API Functionality Checks", "/policy/:id works (retrieve policy)"),
    ("api.verify", "API Functionality Checks", "/verify works (verify compliance)"),
    ("api.auth", "API Functionality Checks", "Authentication works (OAuth2 JWT)"),
    ("compliance.no_pii", "Compliance Checks", "No PII in backup archive"),
    ("compliance.no_audit_logs", "Compliance Checks", "Audit logs not included (ephemeral)"),
    ("compliance.no_secrets", "Compliance Checks", "Secrets not in backup"),
    ("smoke.healthz", "Smoke Tests", "Health check"),
    ("smoke.readyz", "Smoke Tests", "Readiness check"),
    ("smoke.policy_retrieval", "Smoke Tests", "Policy retrieval (hash matches)"),
    ("smoke.verify", "Smoke Tests", "Verify endpoint"),
    ("smoke.etag", "Smoke Tests", "ETag matches original"),
    ("smoke.registry_query", "Smoke Tests", "Registry query"),
)

# The runbook's objectives: RTO < 30 minutes, RPO < 1 hour.
DEFAULT_OBJECTIVES = {"rto": 1800, "rpo": 3600}
OBJECTIVE_NAMES = {"rto": "RTO", "rpo": "RPO"}

FORMATS = ("json", "md", "html", "junit")
EXTENSIONS = {"json": ".json", "md": ".md", "html": ".html", "junit": ".xml"}
DEFAULT_FORMATS = {"drill": FORMATS, "restore": ("json", "md")}
DEFAULT_BASENAMES = {"drill": "drill-report", "restore": "restore-report"}
REPORT_MODE = 0o644

# Every metric the project writes: name -> (type, help). Alerts, dashboard and roles
# use these names; tests/unit/test_monitoring.py checks that they agree. The backup help
# texts are the ones the cap_backup role writes.
METRICS = {
    "cap_backup_attempts_total": ("counter", "Backup attempts by result."),
    "cap_backup_duration_seconds": ("gauge", "Duration of the last backup attempt."),
    "cap_backup_size_bytes": ("gauge", "Size of the last successful backup archive."),
    "cap_backup_last_success_timestamp": ("gauge", "Unix time of the last successful backup."),
    "cap_restore_attempts_total": ("counter", "Restore attempts by result."),
    "cap_restore_duration_seconds": ("gauge", "Duration of the last restore."),
    "cap_restore_hash_verification_success_ratio": (
        "gauge", "Share of the last restore's hash integrity checks that passed (0..1)."),
    "cap_restore_registry_entries_restored": (
        "gauge", "Registry entries in the system after the last restore."),
    "cap_restore_smoke_test_pass_ratio": (
        "gauge", "Share of the last restore's smoke tests that passed (0..1)."),
    "cap_restore_last_success_timestamp": ("gauge", "Unix time of the last successful restore."),
    "cap_drill_attempts_total": ("counter", "DR drill attempts by result."),
    "cap_drill_last_success_timestamp": ("gauge", "Unix time of the last successful DR drill."),
    "cap_drill_last_result": ("gauge", "Result of the last DR drill: 1 passed, 0 failed."),
    "cap_drill_rto_seconds": ("gauge", "Recovery time measured by the last DR drill."),
    "cap_drill_rpo_seconds": (
        "gauge", "Recovery point (backup age) measured by the last DR drill."),
    "cap_drill_objective_met": (
        "gauge", "Whether the last DR drill met an objective: 1 met, 0 missed."),
    "cap_drill_checks_passed": ("gauge", "Checks the last DR drill passed."),
    "cap_drill_checks_total": ("gauge", "Checks the last DR drill reported."),
}
# Labels of the metrics that have any, with their values.
METRIC_LABELS = {
    "cap_backup_attempts_total": {"status": ("success", "failure")},
    "cap_restore_attempts_total": {"status": ("success", "failure")},
    "cap_drill_attempts_total": {"status": ("success", "failure")},
    "cap_drill_objective_met": {"objective": ("rto", "rpo")},
}

TIMESTAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,6})?Z$")
REPORT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
BASENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Characters XML 1.0 cannot carry at all; they are dropped from every rendering.
_INVALID_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


class ReportError(Exception):
    """A report document does not follow its schema; errors lists every problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        shown = self.errors[:20]
        more = len(self.errors) - len(shown)
        super().__init__("; ".join(shown) + ("; and %d more" % more if more > 0 else ""))


# Validation --------------------------------------------------------------------------------

def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == value and value not in (float("inf"), float("-inf")))


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_timestamp(value):
    """datetime (UTC, aware) of 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z', or None when malformed."""
    if not isinstance(value, str):
        return None
    match = TIMESTAMP_RE.match(value)
    if not match:
        return None
    try:
        parsed = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    fraction = match.group(2)
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[1:].ljust(6, "0")))
    return parsed.replace(tzinfo=datetime.timezone.utc)


def epoch_seconds(value):
    """Unix time of a report timestamp, as an int (fractions dropped)."""
    parsed = parse_timestamp(value)
    if parsed is None:
        raise ReportError(["%r is not a UTC timestamp YYYY-MM-DDTHH:MM:SSZ" % (value,)])
    return calendar.timegm(parsed.utctimetuple())


class _Checker:
    """Collects schema errors with the path of the field each one is about."""

    def __init__(self):
        self.errors = []

    def error(self, path, message):
        self.errors.append("%s %s" % (path, message))

    def fields(self, value, path, required, nullable=False, hints=None):
        """A dict with exactly the keys in required. Returns it, or None when unusable.

        hints maps a key that is not allowed to the message that explains why.
        """
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            self.error(path, "must be an object%s, got %s" % (" or null" if nullable else "",
                                                              _shown(value)))
            return None
        for key in required:
            if key not in value:
                self.error("%s.%s" % (path, key), "is missing")
        for key in sorted(set(value) - set(required), key=str):
            self.error("%s.%s" % (path, key),
                       (hints or {}).get(key, "is not a field of this schema"))
        return value

    def string(self, value, path, nullable=False, pattern=None, choices=None, empty=False):
        if value is None and nullable:
            return
        if not isinstance(value, str):
            self.error(path, "must be a string%s, got %s" % (" or null" if nullable else "",
                                                            _shown(value)))
        elif choices is not None and value not in choices:
            self.error(path, "must be one of %s, got %s" % (", ".join(choices), _shown(value)))
        elif not empty and not value.strip():
            self.error(path, "must not be empty")
        elif pattern is not None and not pattern.match(value):
            self.error(path, "must match %s, got %s" % (pattern.pattern, _shown(value)))

    def timestamp(self, value, path, nullable=False):
        if value is None and nullable:
            return
        if parse_timestamp(value) is None:
            self.error(path, "must be a UTC timestamp YYYY-MM-DDTHH:MM:SSZ%s, got %s"
                       % (" or null" if nullable else "", _shown(value)))

    def number(self, value, path, nullable=False, positive=False):
        if value is None and nullable:
            return
        if not _is_number(value) or value < 0 or (positive and value == 0):
            self.error(path, "must be a number %s%s, got %s"
                       % ("> 0" if positive else ">= 0", " or null" if nullable else "",
                          _shown(value)))

    def count(self, value, path, nullable=False):
        if value is None and nullable:
            return
        if not _is_count(value):
            self.error(path, "must be an integer >= 0%s, got %s"
                       % (" or null" if nullable else "", _shown(value)))

    def boolean(self, value, path, nullable=False):
        if value is None and nullable:
            return
        if not isinstance(value, bool):
            self.error(path, "must be true or false%s, got %s"
                       % (" or null" if nullable else "", _shown(value)))

    def scalar(self, value, path):
        if value is not None and not isinstance(value, (str, bool)) and not _is_number(value):
            self.error(path, "must be a string, number, boolean or null, got %s" % _shown(value))

    def items(self, value, path):
        if not isinstance(value, list):
            self.error(path, "must be a list, got %s" % _shown(value))
            return []
        return value


def _shown(value):
    """A short, unambiguous rendering of a value for error messages."""
    if isinstance(value, (dict, list)):
        return "a %s" % ("object" if isinstance(value, dict) else "list")
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


TOP_FIELDS = {
    "drill": ("schema", "kind", "drill_id", "result", "started_at", "finished_at",
              "duration_seconds", "backup", "source", "target", "objectives", "steps", "checks",
              "differences", "differences_total", "counts", "error", "teardown"),
    "restore": ("schema", "kind", "restore_id", "result", "started_at", "finished_at",
                "duration_seconds", "backup", "source", "target", "steps", "checks",
                "differences", "differences_total", "counts", "error", "teardown"),
}
BACKUP_FIELDS = ("backup_id", "created_at", "location", "archive_sha3_256", "encrypted",
                 "signature_kid")
TARGET_FIELDS = ("platform", "name", "url")
OBJECTIVE_FIELDS = ("target_seconds", "measured_seconds", "met")
STEP_FIELDS = ("name", "title", "started_at", "duration_seconds", "status", "detail")
CHECK_FIELDS = ("id", "section", "name", "passed", "detail")
DIFFERENCE_FIELDS = ("kind", "id", "field", "expected", "actual")
COUNT_FIELDS = ("policies", "registry_entries")
COUNT_SIDES = ("backup", "restored", "source")
TEARDOWN_FIELDS = ("done", "key_material_removed", "detail")


def objective_met(target_seconds, measured_seconds):
    """The runbook's objectives are strict: RTO < 30 minutes, RPO < 1 hour."""
    return measured_seconds is not None and measured_seconds < target_seconds


def validate_report(doc, kind):
    """Check doc against the schema of kind ('drill' or 'restore').

    Returns doc unchanged. Raises ReportError naming every missing or invalid field, and
    every way in which a report that says 'passed' contradicts its own content.
    """
    if kind not in KINDS:
        raise ReportError(["kind must be one of %s, got %s" % (", ".join(KINDS), _shown(kind))])
    c = _Checker()
    hints = {"objectives": "is not a field of a restore report (only drills have objectives)"}
    if c.fields(doc, "report", TOP_FIELDS[kind], hints=hints) is None:
        raise ReportError(c.errors)
    c.string(doc.get("schema"), "report.schema", choices=(SCHEMAS[kind],))
    c.string(doc.get("kind"), "report.kind", choices=(kind,))
    id_field = ID_FIELDS[kind]
    c.string(doc.get(id_field), "report.%s" % id_field, pattern=REPORT_ID_RE)
    c.string(doc.get("result"), "report.result", choices=RESULTS)
    c.timestamp(doc.get("started_at"), "report.started_at")
    c.timestamp(doc.get("finished_at"), "report.finished_at")
    started = parse_timestamp(doc.get("started_at"))
    finished = parse_timestamp(doc.get("finished_at"))
    if started and finished and finished < started:
        c.error("report.finished_at", "is before started_at")
    c.number(doc.get("duration_seconds"), "report.duration_seconds")

    backup = c.fields(doc.get("backup"), "report.backup", BACKUP_FIELDS)
    if backup is not None:
        c.string(backup.get("backup_id"), "report.backup.backup_id", pattern=REPORT_ID_RE)
        c.timestamp(backup.get("created_at"), "report.backup.created_at", nullable=True)
        c.string(backup.get("location"), "report.backup.location")
        sha = backup.get("archive_sha3_256")
        if sha is not None and not is_prefixed_hash(sha):
            c.error("report.backup.archive_sha3_256",
                    "must be 0x and 64 lowercase hex digits, or null, got %s" % _shown(sha))
        c.boolean(backup.get("encrypted"), "report.backup.encrypted")
        c.string(backup.get("signature_kid"), "report.backup.signature_kid", nullable=True)

    source = c.fields(doc.get("source"), "report.source", ("url",), nullable=(kind == "restore"))
    if source is not None:
        c.string(source.get("url"), "report.source.url")
    target = c.fields(doc.get("target"), "report.target", TARGET_FIELDS)
    if target is not None:
        c.string(target.get("platform"), "report.target.platform")
        c.string(target.get("name"), "report.target.name")
        c.string(target.get("url"), "report.target.url", nullable=True)

    if kind == "drill":
        objectives = c.fields(doc.get("objectives"), "report.objectives", ("rto", "rpo"))
        for key in ("rto", "rpo") if objectives is not None else ():
            path = "report.objectives.%s" % key
            objective = c.fields(objectives.get(key), path, OBJECTIVE_FIELDS)
            if objective is None:
                continue
            before = len(c.errors)
            c.number(objective.get("target_seconds"), path + ".target_seconds", positive=True)
            c.number(objective.get("measured_seconds"), path + ".measured_seconds", nullable=True)
            c.boolean(objective.get("met"), path + ".met")
            if len(c.errors) == before:
                expected = objective_met(objective["target_seconds"], objective["measured_seconds"])
                if objective["met"] != expected:
                    if objective["measured_seconds"] is None:
                        why = "measured_seconds is null"
                    elif expected:
                        why = "measured_seconds %s is below target_seconds %s" % (
                            objective["measured_seconds"], objective["target_seconds"])
                    else:
                        why = "measured_seconds %s is not below target_seconds %s" % (
                            objective["measured_seconds"], objective["target_seconds"])
                    c.error(path + ".met", "is %s, but %s" % (_shown(objective["met"]), why))

    names = set()
    for index, step in enumerate(c.items(doc.get("steps"), "report.steps")):
        path = "report.steps[%d]" % index
        if c.fields(step, path, STEP_FIELDS) is None:
            continue
        c.string(step.get("name"), path + ".name", pattern=NAME_RE)
        if isinstance(step.get("name"), str):
            if step["name"] in names:
                c.error(path + ".name", "repeats step %s" % _shown(step["name"]))
            names.add(step["name"])
        c.string(step.get("title"), path + ".title")
        c.string(step.get("status"), path + ".status", choices=STEP_STATUSES)
        c.timestamp(step.get("started_at"), path + ".started_at",
                    nullable=(step.get("status") == "skipped"))
        c.number(step.get("duration_seconds"), path + ".duration_seconds")
        c.string(step.get("detail"), path + ".detail", nullable=True, empty=True)

    ids = set()
    for index, check in enumerate(c.items(doc.get("checks"), "report.checks")):
        path = "report.checks[%d]" % index
        if c.fields(check, path, CHECK_FIELDS) is None:
            continue
        c.string(check.get("id"), path + ".id", pattern=NAME_RE)
        if isinstance(check.get("id"), str):
            if check["id"] in ids:
                c.error(path + ".id", "repeats check %s" % _shown(check["id"]))
            ids.add(check["id"])
        c.string(check.get("section"), path + ".section", choices=SECTIONS[kind])
        c.string(check.get("name"), path + ".name")
        c.boolean(check.get("passed"), path + ".passed", nullable=True)
        c.string(check.get("detail"), path + ".detail", nullable=True, empty=True)

    differences = c.items(doc.get("differences"), "report.differences")
    for index, difference in enumerate(differences):
        path = "report.differences[%d]" % index
        if c.fields(difference, path, DIFFERENCE_FIELDS) is None:
            continue
        c.string(difference.get("kind"), path + ".kind")
        c.string(difference.get("id"), path + ".id", empty=True)
        c.string(difference.get("field"), path + ".field")
        c.scalar(difference.get("expected"), path + ".expected")
        c.scalar(difference.get("actual"), path + ".actual")
    total = doc.get("differences_total")
    c.count(total, "report.differences_total")
    if _is_count(total) and total < len(differences):
        c.error("report.differences_total", "is %d, fewer than the %d differences listed"
                % (total, len(differences)))

    counts = c.fields(doc.get("counts"), "report.counts", COUNT_FIELDS)
    for key in COUNT_FIELDS if counts is not None else ():
        path = "report.counts.%s" % key
        sides = c.fields(counts.get(key), path, COUNT_SIDES)
        for side in COUNT_SIDES if sides is not None else ():
            c.count(sides.get(side), "%s.%s" % (path, side), nullable=True)

    c.string(doc.get("error"), "report.error", nullable=True)
    teardown = c.fields(doc.get("teardown"), "report.teardown", TEARDOWN_FIELDS)
    if teardown is not None:
        c.boolean(teardown.get("done"), "report.teardown.done")
        c.boolean(teardown.get("key_material_removed"), "report.teardown.key_material_removed")
        c.string(teardown.get("detail"), "report.teardown.detail", nullable=True, empty=True)

    if not c.errors and doc["result"] == "passed":
        for reason in failure_reasons(doc, kind):
            c.error("report.result", "is 'passed' but %s" % reason)
    if c.errors:
        raise ReportError(c.errors)
    return doc


def failure_reasons(doc, kind=None):
    """Why a (schema-valid) report is not a pass; empty when everything in it passed."""
    kind = kind or doc["kind"]
    reasons = []
    if doc.get("error"):
        reasons.append("error is set")
    for step in doc["steps"]:
        if step["status"] == "failed":
            reasons.append("step %s failed" % step["name"])
    if not doc["checks"]:
        reasons.append("no checks were reported")
    for check in doc["checks"]:
        if check["passed"] is False:
            reasons.append("check %s failed" % check["id"])
        elif check["passed"] is None:
            reasons.append("check %s was not run" % check["id"])
    if doc["differences_total"]:
        reasons.append("%d difference(s) were found" % doc["differences_total"])
    if kind == "drill":
        for key in ("rto", "rpo"):
            if not doc["objectives"][key]["met"]:
                reasons.append("the %s objective was not met" % OBJECTIVE_NAMES[key])
    if not doc["teardown"]["key_material_removed"]:
        reasons.append("key material was not removed")
    # A restore may start from an extracted directory (the runbook's --backup-dir), which
    # has no archive; a drill always fetches one.
    if kind == "drill" and doc["backup"]["archive_sha3_256"] is None:
        reasons.append("the backup archive hash is unknown")
    return reasons


def checklist_missing(doc):
    """Ids of the runbook's checklist items (CHECKLIST) that the report does not carry."""
    present = set(check["id"] for check in doc["checks"])
    return [item for item, _section, _name in CHECKLIST if item not in present]


# Shared helpers for the renderings ------------------------------------------------------

def clean_text(value):
    """Text of a value without characters that XML 1.0 (and so HTML) cannot carry."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return _INVALID_CHARS_RE.sub("", str(value))


def one_line(value, limit=None):
    """clean_text on one line, optionally cut to limit characters with an ellipsis."""
    text = " ".join(clean_text(value).split())
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 1, 1)] + "\u2026"
    return text


def middle_cut(value, limit):
    """one_line text cut in the middle, keeping both ends: hashes differ anywhere."""
    text = one_line(value)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (limit - 1 - head):]


def seconds_text(value):
    """'1234.5 s', or 'not measured' for None."""
    if value is None:
        return "not measured"
    return "%.1f s" % value


def human_duration(value):
    """'12.3 s', '20 min 34 s', '1 h 02 min 05 s'; 'not measured' for None."""
    if value is None:
        return "not measured"
    if value < 60:
        return "%.1f s" % value
    total = int(round(value))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return "%d h %02d min %02d s" % (hours, minutes, seconds)
    return "%d min %02d s" % (minutes, seconds)


def target_text(seconds):
    """'< 1800 s (30 min)' for an objective's target."""
    if seconds % 3600 == 0:
        words = "%d h" % (seconds // 3600)
    elif seconds % 60 == 0:
        words = "%d min" % (seconds // 60)
    else:
        words = human_duration(seconds)
    return "< %s s (%s)" % (_number(seconds), words)


def _number(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def value_text(value):
    """How a difference's expected or actual value reads: null is '(missing)'."""
    if value is None:
        return "(missing)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return clean_text(value)


def check_counts(doc):
    """{'passed', 'failed', 'not_run', 'total'} over all checks."""
    passed = sum(1 for check in doc["checks"] if check["passed"] is True)
    failed = sum(1 for check in doc["checks"] if check["passed"] is False)
    total = len(doc["checks"])
    return {"passed": passed, "failed": failed, "not_run": total - passed - failed, "total": total}


def step_counts(doc):
    counts = dict((status, 0) for status in STEP_STATUSES)
    for step in doc["steps"]:
        counts[step["status"]] += 1
    return counts


def sections_of(doc):
    """[(section, [checks])] in the schema's section order, only sections with checks."""
    grouped = []
    for section in SECTIONS[doc["kind"]]:
        checks = [check for check in doc["checks"] if check["section"] == section]
        if checks:
            grouped.append((section, checks))
    return grouped


def report_id(doc):
    return doc[ID_FIELDS[doc["kind"]]]


def _title(doc):
    return "%s %s" % (TITLES[doc["kind"]], report_id(doc))


def _count_mismatch(sides):
    values = [sides[side] for side in COUNT_SIDES if sides[side] is not None]
    return len(set(values)) > 1


# Markdown ---------------------------------------------------------------------------------

# '_' only matters at a word boundary (CommonMark ignores intraword underscores), so
# policy_hash stays readable in the plain file.
_MD_ESCAPE_RE = re.compile(r"([\\`*\[\]<>|~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_MD_ENTITY_RE = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def md_text(value):
    """Inline Markdown text that renders exactly as the value, on one line, safe in tables."""
    text = one_line(value)
    text = _MD_ENTITY_RE.sub("&amp;", text)
    return _MD_ESCAPE_RE.sub(r"\\\1", text)


def md_code(value):
    """A code span for hashes, URLs and ids; falls back to md_text when a backtick is in it."""
    text = one_line(value)
    if not text or "`" in text:
        return md_text(text) if text else ""
    # GitHub splits table cells on '|' before it parses code spans; '\|' is the escape.
    return "`%s`" % text.replace("|", "\\|")


def _md_value(value):
    return "*(missing)*" if value is None else md_code(value_text(value))


def _md_table(header, rows):
    lines = ["| %s |" % " | ".join(header), "|%s|" % "|".join("---" for _ in header)]
    for row in rows:
        lines.append("| %s |" % " | ".join(cell if cell else " " for cell in row))
    return lines


def render_markdown(doc):
    """The report as Markdown: objectives, steps, the runbook's checklist, differences."""
    kind = doc["kind"]
    result = doc["result"].upper()
    lines = ["# %s report: %s" % (md_text(TITLES[kind]), result), ""]
    lines += _md_table(("", ""), [
        ("**%s**" % ("Drill" if kind == "drill" else "Restore"), md_code(report_id(doc))),
        ("**Result**", "**%s**" % result),
        ("**Started**", md_text(doc["started_at"])),
        ("**Finished**", md_text(doc["finished_at"])),
        ("**Duration**", md_text("%s (%s)" % (seconds_text(doc["duration_seconds"]),
                                              human_duration(doc["duration_seconds"])))),
    ])
    lines.append("")
    if doc.get("error"):
        lines += ["> **Error:** %s" % md_text(doc["error"]), ""]

    if kind == "drill":
        lines += ["## Objectives", ""]
        rows = []
        for key in ("rto", "rpo"):
            objective = doc["objectives"][key]
            measured = objective["measured_seconds"]
            rows.append((OBJECTIVE_NAMES[key], md_text(target_text(objective["target_seconds"])),
                         md_text("%s (%s)" % (seconds_text(measured), human_duration(measured))
                                 if measured is not None else "not measured"),
                         "met" if objective["met"] else "**missed**"))
        lines += _md_table(("Objective", "Target", "Measured", "Result"), rows) + [""]

    lines += ["## Backup, source and target", ""]
    backup = doc["backup"]
    rows = [
        ("Backup", md_code(backup["backup_id"])),
        ("Backup created", md_text(backup["created_at"] or "unknown")),
        ("Backup location", md_code(backup["location"])),
        ("Archive SHA3-256", md_code(backup["archive_sha3_256"]) or "unknown"),
        ("Encrypted", "yes" if backup["encrypted"] else "no"),
        ("Signature KID", md_code(backup["signature_kid"]) or "unsigned"),
    ]
    if doc.get("source"):
        rows.append(("Source", md_code(doc["source"]["url"])))
    target = doc["target"]
    rows += [
        ("Target", md_text("%s %s" % (target["platform"], target["name"]))),
        ("Target URL", md_code(target["url"]) or "unknown"),
    ]
    lines += _md_table(("", ""), rows) + [""]

    lines += ["## Steps", ""]
    if doc["steps"]:
        rows = []
        for number, step in enumerate(doc["steps"], 1):
            rows.append((str(number), md_text(step["title"]), md_code(step["name"]),
                         md_text(step["started_at"] or ""),
                         md_text(seconds_text(step["duration_seconds"])),
                         step["status"] if step["status"] != "failed" else "**failed**",
                         md_text(step["detail"] or "")))
        lines += _md_table(("#", "Step", "Name", "Started", "Duration", "Status", "Detail"), rows)
    else:
        lines.append("No steps were run.")
    lines.append("")

    counts = check_counts(doc)
    lines += ["## Validation checklist", "",
              "%d passed, %d failed, %d not run, of %d checks."
              % (counts["passed"], counts["failed"], counts["not_run"], counts["total"]), ""]
    for section, checks in sections_of(doc):
        passed = sum(1 for check in checks if check["passed"] is True)
        lines += ["### %s (%d/%d)" % (md_text(section), passed, len(checks)), ""]
        for check in checks:
            mark = "x" if check["passed"] is True else " "
            state = {True: "", False: " **FAILED**", None: " *(not run)*"}[check["passed"]]
            detail = " \u2014 %s" % md_text(check["detail"]) if check["detail"] else ""
            lines.append("- [%s] %s%s%s `%s`" % (mark, md_text(check["name"]), state, detail,
                                                 check["id"]))
        lines.append("")

    lines += ["## Differences", ""]
    if doc["differences"]:
        if doc["differences_total"] > len(doc["differences"]):
            lines += ["%d differences; the first %d are listed."
                      % (doc["differences_total"], len(doc["differences"])), ""]
        rows = [(md_text(d["kind"]), md_code(d["id"]), md_text(d["field"]),
                 _md_value(d["expected"]), _md_value(d["actual"]))
                for d in doc["differences"]]
        lines += _md_table(("Kind", "Id", "Field", "Expected", "Actual"), rows)
    elif doc["differences_total"]:
        lines.append("%d differences (none listed)." % doc["differences_total"])
    else:
        lines.append("None: the restored system matches.")
    lines.append("")

    lines += ["## Counts", ""]
    rows = []
    for key, label in (("policies", "Policies"), ("registry_entries", "Registry entries")):
        sides = doc["counts"][key]
        rows.append((label + (" **(differ)**" if _count_mismatch(sides) else ""),)
                    + tuple("" if sides[side] is None else str(sides[side])
                            for side in COUNT_SIDES))
    lines += _md_table(("", "Backup", "Restored", "Source"), rows) + [""]

    teardown = doc["teardown"]
    lines += ["## Teardown", ""]
    lines += _md_table(("", ""), [
        ("Done", "yes" if teardown["done"] else "no"),
        ("Key material removed", "yes" if teardown["key_material_removed"] else "**no**"),
        ("Detail", md_text(teardown["detail"] or "")),
    ])
    lines += ["", "---", "", "Schema `%s`." % doc["schema"], ""]
    return "\n".join(lines)


# HTML -------------------------------------------------------------------------------------

def esc(value):
    """HTML text and attribute escaping of any value."""
    return html.escape(clean_text(value), quote=True)


_CSS = """
:root { --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --muted: #57606a; --line: #d0d7de; --skip: #8c959f; --card: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 0 0 8px; display: flex; justify-content: space-between; gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 20px; margin: 0 0 18px; break-inside: avoid; page-break-inside: avoid; }
.hero { display: flex; align-items: center; justify-content: space-between; gap: 20px;
  border-left: 10px solid var(--bad); }
.hero.passed { border-left-color: var(--ok); }
.sub { color: var(--muted); margin: 0; }
.badge { display: inline-block; border-radius: 8px; padding: 4px 12px; font-weight: 700;
  letter-spacing: .04em; color: #fff; background: var(--bad); white-space: nowrap; }
.badge.ok { background: var(--ok); }
.badge.big { font-size: 30px; padding: 10px 26px; border-radius: 12px; }
.badge.small { font-size: 12px; padding: 1px 8px; }
.stats { display: flex; flex-wrap: wrap; gap: 10px 26px; margin-top: 10px; color: var(--muted); }
.stats b { color: #1f2328; font-size: 17px; }
.objectives { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; margin: 0 0 18px; }
.objective { margin: 0; border-top: 8px solid var(--bad); background: var(--bad-bg); }
.objective.met { border-top-color: var(--ok); background: var(--ok-bg); }
.objective .head { display: flex; justify-content: space-between; align-items: center; }
.objective .name { font-size: 14px; font-weight: 600; color: var(--muted);
  text-transform: uppercase; letter-spacing: .05em; }
.objective .measured { font-size: 36px; font-weight: 700; line-height: 1.2; margin: 10px 0 2px; }
.objective .target { color: var(--muted); }
.meter { position: relative; height: 10px; border-radius: 5px; background: rgba(0,0,0,.08);
  margin-top: 12px; }
.meter span { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 5px;
  background: var(--bad); }
.objective.met .meter span { background: var(--ok); }
.meter i { position: absolute; top: -2px; bottom: -2px; width: 3px; margin-left: -1px;
  background: #1f2328; }
mark { background: #ffd8b5; color: inherit; }
.alert { border: 2px solid var(--bad); background: var(--bad-bg); }
.alert h2 { color: var(--bad); }
.alert pre { white-space: pre-wrap; word-break: break-word; margin: 0;
  font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  fill: #1f2328; }
svg .axis { font-size: 11px; fill: var(--muted); }
table { width: 100%; border-collapse: collapse; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px;
  border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 13px; word-break: break-all; }
.status-ok { color: var(--ok); font-weight: 600; }
.status-failed { color: var(--bad); font-weight: 700; }
.status-skipped { color: var(--skip); }
.sections { columns: 2 380px; column-gap: 18px; }
.sections .card { display: inline-block; width: 100%; }
.count { font-weight: 600; color: var(--ok); white-space: nowrap; }
.count.bad { color: var(--bad); }
ul.checks { list-style: none; margin: 0; padding: 0; }
ul.checks li { display: grid; grid-template-columns: 26px 1fr; padding: 5px 0;
  border-bottom: 1px solid #eaeef2; }
ul.checks li:last-child { border-bottom: 0; }
.mark { font-weight: 700; font-size: 16px; }
li.pass .mark { color: var(--ok); }
li.fail .mark { color: var(--bad); }
li.fail .label { color: var(--bad); font-weight: 600; }
li.notrun .mark, li.notrun .label { color: var(--skip); }
.detail { grid-column: 2; color: var(--muted); font-size: 13px; word-break: break-word; }
.id { color: var(--skip); font-size: 12px; font-family: ui-monospace, Menlo, Consolas, monospace; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-word; }
.details { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 18px; }
.details .card { margin: 0; }
tr.differ td { background: var(--bad-bg); }
footer { color: var(--muted); font-size: 13px; text-align: center; }
@media (max-width: 700px) {
  .objectives { grid-template-columns: 1fr; }
  .hero { flex-direction: column; align-items: flex-start; }
}
@media print {
  body { background: #fff; font-size: 12px; }
  main { max-width: none; padding: 0; }
  .card { border-color: #999; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .sections { columns: 2; }
}
"""

_STEP_COLORS = {"ok": "#2da44e", "failed": "#cf222e", "skipped": "#afb8c1"}


def _steps_svg(steps):
    """A horizontal bar chart of step durations, bars scaled to the longest step."""
    label_w, bar_w, value_w, row_h, top = 260, 560, 120, 28, 26
    width = label_w + bar_w + value_w
    height = top + row_h * len(steps) + 8
    longest = max([step["duration_seconds"] for step in steps] + [0])
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" '
             'aria-labelledby="steps-chart-title">' % (width, height),
             '<title id="steps-chart-title">Step durations, longest %s</title>'
             % esc(seconds_text(longest))]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        x = label_w + bar_w * fraction
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#d0d7de" '
                     'stroke-dasharray="%s"/>' % (x, top - 6, x, height - 4,
                                                  "none" if fraction == 0 else "3 3"))
        parts.append('<text class="axis" x="%.1f" y="%d" text-anchor="%s">%s</text>'
                     % (x, top - 10, "start" if fraction == 0 else "middle",
                        esc(seconds_text(longest * fraction))))
    for index, step in enumerate(steps):
        y = top + index * row_h
        duration = step["duration_seconds"]
        bar = bar_w * duration / longest if longest > 0 else 0
        if duration > 0:
            bar = max(bar, 2)
        color = _STEP_COLORS[step["status"]]
        label = one_line(step["title"], 34)
        value = "skipped" if step["status"] == "skipped" else seconds_text(duration)
        if step["status"] == "failed":
            value += "  failed"
        parts.append('<g><title>%s: %s (%s)</title>'
                     % (esc(step["title"]), esc(seconds_text(duration)), esc(step["status"])))
        parts.append('<text x="%d" y="%d" text-anchor="end"%s>%s</text>'
                     % (label_w - 10, y + 18, ' font-weight="700" fill="#cf222e"'
                        if step["status"] == "failed" else "", esc(label)))
        parts.append('<rect x="%d" y="%d" width="%.1f" height="%d" rx="3" fill="%s"/>'
                     % (label_w, y + 5, bar, row_h - 10, color))
        parts.append('<text x="%.1f" y="%d"%s>%s</text></g>'
                     % (label_w + bar + 8, y + 18, ' font-weight="700" fill="#cf222e"'
                        if step["status"] == "failed" else "", esc(value)))
    parts.append("</svg>")
    return "\n".join(parts)


def _dl(rows):
    out = ["<dl>"]
    for label, value_html in rows:
        out.append("<dt>%s</dt><dd>%s</dd>" % (esc(label), value_html))
    out.append("</dl>")
    return "\n".join(out)


def _mono(value, missing="unknown"):
    if value is None or value == "":
        return '<span class="status-skipped">%s</span>' % esc(missing)
    return '<span class="mono">%s</span>' % esc(value)


def _marked_actual(expected, actual):
    """The actual value with the part that differs from expected in a <mark>."""
    if actual is None:
        return '<em class="status-failed">(missing)</em>'
    want, got = clean_text(value_text(expected) if expected is not None else ""), clean_text(
        value_text(actual))
    same = 0
    while same < min(len(want), len(got)) and want[same] == got[same]:
        same += 1
    if expected is None or same == 0:
        return "<mark>%s</mark>" % esc(got)
    return "%s<mark>%s</mark>" % (esc(got[:same]), esc(got[same:]))


def _objective_card(key, objective):
    met = objective["met"]
    measured = objective["measured_seconds"]
    target = objective["target_seconds"]
    # The bar runs to 125% of the target (further when measured is beyond that); the
    # tick marks the target itself.
    scale = max(target * 1.25, measured or 0)
    fill = 0 if measured is None else measured / scale
    names = {"rto": "Recovery time objective", "rpo": "Recovery point objective"}
    return "\n".join([
        '<section class="card objective%s">' % (" met" if met else ""),
        '<div class="head"><span class="name">%s \u00b7 %s</span>'
        '<span class="badge%s">%s</span></div>'
        % (esc(OBJECTIVE_NAMES[key]), esc(names[key]), " ok" if met else "",
           "MET" if met else "MISSED"),
        '<div class="measured">%s</div>' % esc(human_duration(measured)),
        '<div class="target">measured %s \u00b7 target %s</div>' % (esc(seconds_text(measured)),
                                                                   esc(target_text(target))),
        '<div class="meter" title="measured against target"><span style="width: %.1f%%"></span>'
        '<i style="left: %.1f%%"></i></div>' % (fill * 100, target / scale * 100),
        "</section>",
    ])


def render_html(doc):
    """The report as one self-contained HTML5 page: inline CSS and SVG, no scripts."""
    kind = doc["kind"]
    passed = doc["result"] == "passed"
    title = "%s report %s: %s" % (TITLES[kind], report_id(doc), doc["result"].upper())
    checks = check_counts(doc)
    steps = step_counts(doc)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>%s</title>" % esc(title), "<style>%s</style>" % _CSS, "</head>", "<body>",
           "<main>"]

    out += [
        '<header class="card hero%s">' % (" passed" if passed else ""),
        "<div>",
        "<h1>%s report</h1>" % esc(TITLES[kind]),
        '<p class="sub"><span class="mono">%s</span> \u00b7 %s \u2192 %s \u00b7 %s</p>'
        % (esc(report_id(doc)), esc(doc["started_at"]), esc(doc["finished_at"]),
           esc(human_duration(doc["duration_seconds"]))),
        '<div class="stats">',
        "<span><b>%d/%d</b> checks passed</span>" % (checks["passed"], checks["total"]),
        "<span><b>%d</b> failed</span>" % checks["failed"],
        "<span><b>%d</b> not run</span>" % checks["not_run"],
        "<span><b>%d</b> steps ok, <b>%d</b> failed, <b>%d</b> skipped</span>"
        % (steps["ok"], steps["failed"], steps["skipped"]),
        "<span><b>%d</b> differences</span>" % doc["differences_total"],
        "</div>",
        "</div>",
        '<div class="badge big%s">%s</div>' % (" ok" if passed else "", esc(doc["result"].upper())),
        "</header>",
    ]

    if kind == "drill":
        out.append('<div class="objectives">')
        out += [_objective_card(key, doc["objectives"][key]) for key in ("rto", "rpo")]
        out.append("</div>")

    if doc.get("error"):
        out += ['<section class="card alert">', "<h2>Error</h2>",
                "<pre>%s</pre>" % esc(doc["error"]), "</section>"]

    out += ['<section class="card">', "<h2>Steps</h2>"]
    if doc["steps"]:
        out.append(_steps_svg(doc["steps"]))
        out += ["<table>",
                "<thead><tr><th>#</th><th>Step</th><th>Started</th><th class=\"num\">Duration</th>"
                "<th>Status</th><th>Detail</th></tr></thead>",
                "<tbody>"]
        for number, step in enumerate(doc["steps"], 1):
            out.append('<tr><td class="num">%d</td><td>%s<div class="id">%s</div></td><td>%s</td>'
                       '<td class="num">%s</td><td class="status-%s">%s</td><td>%s</td></tr>'
                       % (number, esc(step["title"]), esc(step["name"]),
                          esc(step["started_at"] or ""),
                          esc(seconds_text(step["duration_seconds"])),
                          esc(step["status"]), esc(step["status"]), esc(step["detail"] or "")))
        out += ["</tbody>", "</table>"]
    else:
        out.append('<p class="sub">No steps were run.</p>')
    out.append("</section>")

    out += ['<h2>Validation checklist</h2>', '<div class="sections">']
    for section, section_checks in sections_of(doc):
        ok = sum(1 for check in section_checks if check["passed"] is True)
        out += ['<section class="card">',
                '<h3><span>%s</span><span class="count%s">%d/%d passed</span></h3>'
                % (esc(section), "" if ok == len(section_checks) else " bad", ok,
                   len(section_checks)),
                '<ul class="checks">']
        for check in section_checks:
            css, mark, state = {True: ("pass", "\u2713", "passed"),
                                False: ("fail", "\u2717", "failed"),
                                None: ("notrun", "\u2013", "not run")}[check["passed"]]
            detail = check["detail"] or ("" if check["passed"] is not None else "not run")
            out.append('<li class="%s"><span class="mark" title="%s">%s</span>'
                       '<span class="label">%s <span class="id">%s</span></span>%s</li>'
                       % (css, state, mark, esc(check["name"]), esc(check["id"]),
                          '<span class="detail">%s</span>' % esc(detail) if detail else ""))
        out += ["</ul>", "</section>"]
    if not doc["checks"]:
        out.append('<section class="card"><p class="sub">No checks were run.</p></section>')
    out.append("</div>")

    if doc["differences"] or doc["differences_total"]:
        out += ['<section class="card">', "<h2>Differences (%d)</h2>" % doc["differences_total"]]
        if doc["differences_total"] > len(doc["differences"]):
            out.append('<p class="sub">The first %d are listed.</p>' % len(doc["differences"]))
        out += ["<table>", "<thead><tr><th>Kind</th><th>Id</th><th>Field</th><th>Expected</th>"
                "<th>Actual</th></tr></thead>", "<tbody>"]
        for d in doc["differences"]:
            out.append('<tr><td>%s</td><td class="mono">%s</td><td>%s</td><td class="mono">%s</td>'
                       '<td class="mono">%s</td></tr>'
                       % (esc(d["kind"]), esc(d["id"]), esc(d["field"]),
                          esc(value_text(d["expected"])),
                          _marked_actual(d["expected"], d["actual"])))
        out += ["</tbody>", "</table>", "</section>"]

    backup = doc["backup"]
    target = doc["target"]
    out += ['<div class="details">', '<section class="card">', "<h2>Backup</h2>", _dl([
        ("Backup ID", _mono(backup["backup_id"])),
        ("Created", esc(backup["created_at"] or "unknown")),
        ("Location", _mono(backup["location"])),
        ("Archive SHA3-256", _mono(backup["archive_sha3_256"])),
        ("Encrypted", "yes" if backup["encrypted"] else "no"),
        ("Signature KID", _mono(backup["signature_kid"], "unsigned")),
    ]), "</section>", '<section class="card">', "<h2>Systems</h2>", _dl(
        ([("Source", _mono(doc["source"]["url"]))] if doc.get("source") else [])
        + [("Target platform", esc(target["platform"])), ("Target name", _mono(target["name"])),
           ("Target URL", _mono(target["url"]))]), "</section>"]

    out += ['<section class="card">', "<h2>Counts</h2>", "<table>",
            '<thead><tr><th></th><th class="num">Backup</th><th class="num">Restored</th>'
            '<th class="num">Source</th></tr></thead>', "<tbody>"]
    for key, label in (("policies", "Policies"), ("registry_entries", "Registry entries")):
        sides = doc["counts"][key]
        out.append('<tr%s><td>%s</td>%s</tr>' % (
            ' class="differ"' if _count_mismatch(sides) else "", esc(label),
            "".join('<td class="num">%s</td>' % ("\u2013" if sides[side] is None else sides[side])
                    for side in COUNT_SIDES)))
    out += ["</tbody>", "</table>", "</section>"]

    teardown = doc["teardown"]
    out += ['<section class="card">', "<h2>Teardown</h2>", _dl([
        ("Done", '<span class="status-%s">%s</span>' % ("ok" if teardown["done"] else "skipped",
                                                         "yes" if teardown["done"] else "no")),
        ("Key material removed", '<span class="status-%s">%s</span>'
         % ("ok" if teardown["key_material_removed"] else "failed",
            "yes" if teardown["key_material_removed"] else "no")),
        ("Detail", esc(teardown["detail"] or "")),
    ]), "</section>", "</div>"]

    out += ["<footer>%s \u00b7 schema %s</footer>" % (esc(title), esc(doc["schema"])),
            "</main>", "</body>", "</html>", ""]
    return "\n".join(out)


# JUnit XML --------------------------------------------------------------------------------

def _slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _seconds_attr(value):
    return "%.3f" % (value or 0)


def _junit_case(suite, classname, name, seconds=0, failure=None, skipped=None, detail=None,
                output=None):
    """A testcase; failure is (type, message), detail the failure's text, output system-out."""
    case = ET.SubElement(suite, "testcase", {"classname": classname, "name": one_line(name),
                                             "time": _seconds_attr(seconds)})
    if failure is not None:
        element = ET.SubElement(case, "failure", {"message": one_line(failure[1], 500),
                                                  "type": failure[0]})
        element.text = clean_text(detail or failure[1])
    elif skipped is not None:
        ET.SubElement(case, "skipped", {"message": one_line(skipped, 500)})
    if output:
        ET.SubElement(case, "system-out").text = clean_text(output)
    return case


def _junit_suite(root, index, name, doc, package):
    return ET.SubElement(root, "testsuite", {
        "name": name, "tests": "0", "failures": "0", "errors": "0", "skipped": "0",
        "time": "0.000", "timestamp": doc["started_at"].rstrip("Z").split(".")[0],
        "id": str(index), "package": package,
    })


def _finish_suite(suite):
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for case in cases if case.find("failure") is not None)))
    suite.set("skipped", str(sum(1 for case in cases if case.find("skipped") is not None)))
    suite.set("time", _seconds_attr(sum(float(case.get("time")) for case in cases)))


def render_junit(doc):
    """The report as JUnit XML: one testsuite per group, one testcase per item."""
    kind = doc["kind"]
    package = "cap.%s" % kind
    root = ET.Element("testsuites", {"name": "CAP %s %s" % (TITLES[kind], report_id(doc))})
    suites = []

    suite = _junit_suite(root, len(suites), "Result", doc, package)
    suites.append(suite)
    properties = ET.SubElement(suite, "properties")
    for name, value in (("schema", doc["schema"]), (ID_FIELDS[kind], report_id(doc)),
                        ("result", doc["result"]), ("started_at", doc["started_at"]),
                        ("finished_at", doc["finished_at"]),
                        ("backup_id", doc["backup"]["backup_id"]),
                        ("archive_sha3_256", doc["backup"]["archive_sha3_256"] or ""),
                        ("source_url", doc["source"]["url"] if doc.get("source") else ""),
                        ("target", "%s %s" % (doc["target"]["platform"], doc["target"]["name"])),
                        ("target_url", doc["target"]["url"] or "")):
        ET.SubElement(properties, "property", {"name": name, "value": one_line(value)})
    reasons = failure_reasons(doc)
    # The run's own verdict, so CI marks the build failed even when the cause (an error
    # outside any step, say) has no testcase of its own.
    _junit_case(suite, package + ".result", "%s result" % TITLES[kind],
                failure=("Failed", doc["error"] or "; ".join(reasons) or "failed")
                if doc["result"] == "failed" else None,
                detail="\n".join(([doc["error"]] if doc["error"] else []) + reasons))
    listed = "\n".join("%s %s %s: expected %s, actual %s"
                       % (d["kind"], d["id"], d["field"], value_text(d["expected"]),
                          value_text(d["actual"])) for d in doc["differences"])
    if doc["differences_total"] > len(doc["differences"]):
        listed += "\n(%d more not listed)" % (doc["differences_total"] - len(doc["differences"]))
    _junit_case(suite, package + ".result", "Differences",
                failure=("Differences", "%d difference(s) between expected and restored values"
                         % doc["differences_total"]) if doc["differences_total"] else None,
                detail=listed.strip())
    teardown = doc["teardown"]
    _junit_case(suite, package + ".result", "Key material removed",
                failure=None if teardown["key_material_removed"]
                else ("KeyMaterialLeft", teardown["detail"] or "key material was not removed"))
    _junit_case(suite, package + ".result", "Teardown",
                skipped=None if teardown["done"] else (teardown["detail"] or "teardown not done"))

    if kind == "drill":
        suite = _junit_suite(root, len(suites), "Objectives", doc, package)
        suites.append(suite)
        for key in ("rto", "rpo"):
            objective = doc["objectives"][key]
            measured = objective["measured_seconds"]
            name = OBJECTIVE_NAMES[key]
            measured_text = "%s measured %s, target %s" % (
                name, seconds_text(measured), target_text(objective["target_seconds"]))
            if objective["met"]:
                failure = None
            elif measured is None:
                failure = ("ObjectiveNotMeasured", "%s was not measured" % OBJECTIVE_NAMES[key])
            else:
                failure = ("ObjectiveMissed", "%s %s is not below the %s s objective"
                           % (OBJECTIVE_NAMES[key], seconds_text(measured),
                              _number(objective["target_seconds"])))
            # time stays 0: an objective is a measurement, not time the suite spent.
            _junit_case(suite, package + ".objectives", name, failure=failure,
                        output=measured_text)

    suite = _junit_suite(root, len(suites), "Steps", doc, package)
    suites.append(suite)
    for step in doc["steps"]:
        failure = skipped = None
        if step["status"] == "failed":
            failure = ("StepFailed", step["detail"] or "step failed")
        elif step["status"] == "skipped":
            skipped = step["detail"] or "skipped"
        _junit_case(suite, package + ".steps", "%s (%s)" % (step["title"], step["name"]),
                    step["duration_seconds"], failure=failure, skipped=skipped)

    for section, checks in sections_of(doc):
        suite = _junit_suite(root, len(suites), section, doc, package)
        suites.append(suite)
        for check in checks:
            failure = skipped = None
            if check["passed"] is False:
                failure = ("CheckFailed", check["detail"] or "check failed")
            elif check["passed"] is None:
                skipped = check["detail"] or "not run"
            _junit_case(suite, "%s.%s" % (package, _slug(section)),
                        "%s: %s" % (check["id"], check["name"]), failure=failure, skipped=skipped,
                        output=check["detail"] if check["passed"] else None)

    for suite in suites:
        _finish_suite(suite)
    root.set("tests", str(sum(int(s.get("tests")) for s in suites)))
    root.set("failures", str(sum(int(s.get("failures")) for s in suites)))
    root.set("errors", "0")
    root.set("time", _seconds_attr(doc["duration_seconds"]))
    if hasattr(ET, "indent"):
        ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n%s\n' % ET.tostring(root, encoding="unicode")


# Plain-text summary -----------------------------------------------------------------------

def _text_table(header, rows, right=()):
    widths = [len(cell) for cell in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]

    def line(cells):
        out = []
        for index, cell in enumerate(cells):
            out.append(cell.rjust(widths[index]) if index in right else cell.ljust(widths[index]))
        return "  ".join(out).rstrip()

    return [line(header)] + [line(row) for row in rows]


def summary_lines(doc):
    """Plain-text summary the playbook prints at the end: one list item per line."""
    kind = doc["kind"]
    backup = doc["backup"]
    target = doc["target"]
    lines = ["CAP %s: %s" % (_title(doc), doc["result"].upper()),
             "%s -> %s (%s)" % (doc["started_at"], doc["finished_at"],
                                human_duration(doc["duration_seconds"])),
             "Backup:  %s (created %s) %s" % (one_line(backup["backup_id"]),
                                              backup["created_at"] or "unknown",
                                              one_line(backup["location"], 70)),
             "Archive: %s" % (backup["archive_sha3_256"] or "unknown")]
    if doc.get("source"):
        lines.append("Source:  %s" % one_line(doc["source"]["url"], 90))
    lines.append("Target:  %s %s %s" % (one_line(target["platform"]), one_line(target["name"], 40),
                                        one_line(target["url"] or "", 60)))
    lines.append("")
    if kind == "drill":
        rows = []
        for key in ("rto", "rpo"):
            objective = doc["objectives"][key]
            measured = objective["measured_seconds"]
            rows.append((OBJECTIVE_NAMES[key], "< %s s" % _number(objective["target_seconds"]),
                         seconds_text(measured),
                         human_duration(measured) if measured is not None else "",
                         "met" if objective["met"] else "MISSED"))
        lines += _text_table(("Objective", "Target", "Measured", "", "Result"), rows,
                             right=(1, 2, 3)) + [""]
    if doc["steps"]:
        rows = [(str(number), one_line(step["title"], 44), step["status"].upper()
                 if step["status"] == "failed" else step["status"],
                 seconds_text(step["duration_seconds"]))
                for number, step in enumerate(doc["steps"], 1)]
        rows.append(("", "Total", "", seconds_text(doc["duration_seconds"])))
        lines += _text_table(("#", "Step", "Status", "Duration"), rows, right=(0, 3)) + [""]
    counts = check_counts(doc)
    rows = []
    for section, checks in sections_of(doc):
        passed = sum(1 for check in checks if check["passed"] is True)
        failed = sum(1 for check in checks if check["passed"] is False)
        rows.append((section, str(passed), str(failed), str(len(checks) - passed - failed)))
    rows.append(("All checks", str(counts["passed"]), str(counts["failed"]),
                 str(counts["not_run"])))
    lines += _text_table(("Checks", "Passed", "Failed", "Not run"), rows, right=(1, 2, 3))
    failed_checks = [check for check in doc["checks"] if check["passed"] is False]
    for check in failed_checks:
        lines.append("  FAILED %s: %s" % (check["id"], one_line(
            "%s%s" % (check["name"], (" - " + check["detail"]) if check["detail"] else ""), 90)))
    missing = checklist_missing(doc)
    if missing:
        lines.append("  Runbook checklist items not reported: %s" % ", ".join(missing))
    lines.append("")
    lines.append("Differences: %d" % doc["differences_total"])
    shown = doc["differences"][:5]
    for d in shown:
        lines.append("  %s %s %s: expected %s, actual %s"
                     % (one_line(d["kind"]), middle_cut(d["id"], 23), one_line(d["field"]),
                        middle_cut(value_text(d["expected"]), 23),
                        middle_cut(value_text(d["actual"]), 23)))
    if doc["differences_total"] > len(shown):
        lines.append("  ... %d more in the report" % (doc["differences_total"] - len(shown)))
    teardown = doc["teardown"]
    lines.append("Teardown: %s, key material %s" % ("done" if teardown["done"] else "NOT done",
                                                    "removed" if teardown["key_material_removed"]
                                                    else "NOT removed"))
    if doc["error"]:
        lines.append("Error: %s" % one_line(doc["error"], 200))
    lines.append("Result: %s" % doc["result"].upper())
    return lines


# Metrics ----------------------------------------------------------------------------------

def _metric(name, value, labels=None, action="set"):
    mtype, help_text = METRICS[name]
    return {"name": name, "type": mtype, "help": help_text, "labels": labels or {},
            "value": value, "action": action}


def _ratio(doc, section):
    checks = [check for check in doc["checks"] if check["section"] == section]
    if not checks:
        return "NaN"
    return sum(1 for check in checks if check["passed"] is True) / float(len(checks))


def metric_updates(doc):
    """The cap_metrics updates (its 'metrics' option) that record this report.

    Both status series of the attempts counter are written (the other one by 0) so they
    exist from the first run on. A value the report does not have is written as NaN,
    so a panel shows 'not measured' rather than the previous run's value.
    """
    kind = doc["kind"]
    passed = doc["result"] == "passed"
    status = "success" if passed else "failure"
    other = "failure" if passed else "success"
    name = "cap_%s_attempts_total" % kind
    updates = [_metric(name, 1, {"status": status}, "inc"),
               _metric(name, 0, {"status": other}, "inc")]
    if kind == "drill":
        counts = check_counts(doc)
        updates.append(_metric("cap_drill_last_result", 1 if passed else 0))
        for key in ("rto", "rpo"):
            objective = doc["objectives"][key]
            measured = objective["measured_seconds"]
            updates.append(_metric("cap_drill_%s_seconds" % key,
                                   "NaN" if measured is None else measured))
            updates.append(_metric("cap_drill_objective_met", 1 if objective["met"] else 0,
                                   {"objective": key}))
        updates.append(_metric("cap_drill_checks_passed", counts["passed"]))
        updates.append(_metric("cap_drill_checks_total", counts["total"]))
    else:
        restored = doc["counts"]["registry_entries"]["restored"]
        updates.append(_metric("cap_restore_duration_seconds", doc["duration_seconds"]))
        updates.append(_metric("cap_restore_hash_verification_success_ratio",
                               _ratio(doc, "Hash Integrity Checks")))
        updates.append(_metric("cap_restore_registry_entries_restored",
                               "NaN" if restored is None else restored))
        updates.append(_metric("cap_restore_smoke_test_pass_ratio", _ratio(doc, "Smoke Tests")))
    if passed:
        updates.append(_metric("cap_%s_last_success_timestamp" % kind,
                               epoch_seconds(doc["finished_at"])))
    return updates


# Writing ----------------------------------------------------------------------------------

RENDERERS = {
    "json": lambda doc: json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n",
    "md": render_markdown,
    "html": render_html,
    "junit": render_junit,
}


def render(doc, fmt):
    """The bytes of doc in one of FORMATS."""
    return RENDERERS[fmt](doc).encode("utf-8")


def report_paths(dest_dir, formats, basename):
    return dict((fmt, os.path.join(dest_dir, basename + EXTENSIONS[fmt])) for fmt in formats)


def write_reports(doc, kind, dest_dir, formats=None, basename=None, check_mode=False,
                  mode=REPORT_MODE):
    """Validate doc and write it in formats to dest_dir/<basename>.<ext>, atomically.

    Files whose content would not change are left alone. dest_dir is created (0755)
    when missing. With check_mode nothing is written. Returns a dict with paths
    (format -> path), changed_files, changed, created_dir and summary_lines.
    Raises ReportError for an invalid document, a bad format or basename, OSError on I/O.
    """
    validate_report(doc, kind)
    formats = list(DEFAULT_FORMATS[kind] if formats is None else formats)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise ReportError(["formats must be among %s, got %s" % (", ".join(FORMATS), ", ".join(
            str(fmt) for fmt in unknown))])
    if not formats:
        raise ReportError(["formats must name at least one of %s" % ", ".join(FORMATS)])
    formats = [fmt for fmt in FORMATS if fmt in formats]
    basename = DEFAULT_BASENAMES[kind] if basename is None else basename
    if not isinstance(basename, str) or not BASENAME_RE.match(basename):
        raise ReportError(["basename must match %s (a file name without directory), got %s"
                           % (BASENAME_RE.pattern, _shown(basename))])
    paths = report_paths(dest_dir, formats, basename)
    created_dir = not os.path.isdir(dest_dir)
    if created_dir and os.path.exists(dest_dir):
        raise ReportError(["dest_dir %s exists and is not a directory" % dest_dir])
    if created_dir and not check_mode:
        os.makedirs(dest_dir, 0o755)
    changed_files = []
    for fmt in formats:
        path = paths[fmt]
        data = render(doc, fmt)
        if same_content(path, data):
            if (os.stat(path).st_mode & 0o7777) != mode:
                if not check_mode:
                    os.chmod(path, mode)
                changed_files.append(path)
            continue
        if not check_mode:
            atomic_write_bytes(path, data, mode=mode)
        changed_files.append(path)
    return {"paths": paths, "changed_files": changed_files,
            "changed": bool(changed_files) or created_dir, "created_dir": created_dir,
            "summary_lines": summary_lines(doc)}
