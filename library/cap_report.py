#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_report
short_description: Write a restore or DR drill report as JSON, Markdown, HTML and JUnit XML
description:
  - Validates one report document against its schema, C(cap-drill-report.v1) or
    C(cap-restore-report.v1) (docs/reports.md), and writes it in the chosen formats to
    O(dest_dir) as C(<basename>.json), C(.md), C(.html) and C(.xml).
  - C(json) is the document itself with sorted keys and two-space indentation; C(md) is the
    runbook's Validation Checklist form; C(html) is a self-contained page (inline CSS and
    SVG, no scripts, no external assets); C(junit) is JUnit XML for CI (Jenkins, GitLab, AWX)
    with one testsuite per checklist section and one testcase per check, objective and step.
  - Every value is escaped for the format it goes into, so hashes or error texts with
    C(<), C(&) or C(|) cannot break a rendering.
  - A document that does not follow the schema fails the task with a message naming each
    missing or invalid field. A document with C(result=passed) that contradicts itself
    (a failed check, a missed objective, differences, an error) also fails.
  - Files are written under a temporary name and renamed into place, mode 0644. A file whose
    content would not change is left alone; O(dest_dir) is created (0755) when missing.
  - Returns RV(summary_lines), a plain-text summary to print at the end of a play, and
    RV(metrics), the updates that record this run with M(cap_metrics).
version_added: "1.0.0"
author: CAP Engineering
options:
  kind:
    description:
      - Which report this is; selects the schema, the default O(formats) and O(basename).
      - A C(drill) report compares a restore with the live system and has RTO and RPO
        objectives; a C(restore) report has neither.
    type: str
    required: true
    choices: [drill, restore]
  report:
    description:
      - The report document, a dict that follows the schema of O(kind) (docs/reports.md).
    type: dict
    required: true
  dest_dir:
    description: Directory for the report files. Created (mode 0755) when missing.
    type: path
    required: true
  formats:
    description:
      - Formats to write. C(json) goes to C(<basename>.json), C(md) to C(.md), C(html) to
        C(.html), C(junit) to C(.xml).
      - Defaults to all four for O(kind=drill), to C(json) and C(md) for O(kind=restore).
    type: list
    elements: str
    choices: [json, md, html, junit]
  basename:
    description:
      - File name without extension, letters, digits, C(.), C(_) and C(-) only.
      - Defaults to C(drill-report) or C(restore-report).
    type: str
notes:
  - Supports check mode; the document is validated and RV(changed) tells whether any file
    would change, nothing is written.
  - RV(changed) is true when a file's content (or mode) changes, or O(dest_dir) is created.
seealso:
  - module: cap_metrics
"""

EXAMPLES = r"""
# Write the drill report in all four formats, then print the summary table.
- name: Write the DR drill report
  cap_report:
    kind: drill
    report: "{{ _cap_drill_report }}"
    dest_dir: "{{ cap_drill_report_dir }}/{{ _cap_drill_report.drill_id }}"
  register: __cap_drill_report_files

- name: Show the drill summary
  ansible.builtin.debug:
    msg: "{{ __cap_drill_report_files.summary_lines }}"

- name: Record the drill in the metrics
  cap_metrics:
    path: /var/lib/prometheus/node-exporter/cap_drill.prom
    metrics: "{{ __cap_drill_report_files.metrics }}"

# A restore report as JSON and Markdown plus a JUnit file for the CI job that ran it.
- name: Write the restore report
  cap_report:
    kind: restore
    report: "{{ _cap_restore_report }}"
    dest_dir: /restore/reports
    basename: "restore-{{ _cap_restore_report.restore_id }}"
    formats: [json, md, junit]
"""

RETURN = r"""
paths:
  description: Path of each written format, by format name.
  type: dict
  returned: always
  sample:
    json: /var/lib/cap/reports/drill-20251110-130000/drill-report.json
    md: /var/lib/cap/reports/drill-20251110-130000/drill-report.md
    html: /var/lib/cap/reports/drill-20251110-130000/drill-report.html
    junit: /var/lib/cap/reports/drill-20251110-130000/drill-report.xml
files:
  description: The paths of RV(paths) as a list, in the order json, md, html, junit.
  type: list
  elements: str
  returned: always
changed_files:
  description: Files whose content or mode changed (or would change in check mode).
  type: list
  elements: str
  returned: always
result:
  description: The report's result.
  type: str
  returned: always
  sample: passed
checks:
  description: Number of checks that passed, failed and were not run, and the total.
  type: dict
  returned: always
  sample: {passed: 29, failed: 0, not_run: 0, total: 29}
checklist_missing:
  description:
    - Ids of the runbook's checklist items (Validation Checklist and smoke tests) that the
      report does not carry; docs/reports.md lists them.
  type: list
  elements: str
  returned: always
  sample: [functional.pods_running]
failure_reasons:
  description: Why the report is not a pass, one sentence each; empty for a passed report.
  type: list
  elements: str
  returned: always
  sample: ["check hash.policy_hash failed", "the RTO objective was not met"]
summary_lines:
  description:
    - Plain-text summary, one line per item - result, backup and target, objectives,
      steps with durations, checks by section, differences, teardown, result.
  type: list
  elements: str
  returned: always
metrics:
  description:
    - Updates for the C(metrics) option of M(cap_metrics) that record this run with the
      metric names of docs/monitoring.md. Values the report lacks are C(NaN).
  type: list
  elements: dict
  returned: always
  sample:
    - {name: cap_drill_attempts_total, type: counter, action: inc, value: 1,
       labels: {status: success}, help: DR drill attempts by result.}
    - {name: cap_drill_rto_seconds, type: gauge, action: set, value: 375.4, labels: {},
       help: Recovery time measured by the last DR drill.}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_report import (
    FORMATS,
    KINDS,
    ReportError,
    check_counts,
    checklist_missing,
    failure_reasons,
    metric_updates,
    validate_report,
    write_reports,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", required=True, choices=list(KINDS)),
            report=dict(type="dict", required=True),
            dest_dir=dict(type="path", required=True),
            formats=dict(type="list", elements="str", choices=list(FORMATS)),
            basename=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    doc = p["report"]
    try:
        validate_report(doc, p["kind"])
    except ReportError as exc:
        module.fail_json(msg="invalid %s report: %s" % (p["kind"], exc), errors=exc.errors)
    try:
        written = write_reports(doc, p["kind"], p["dest_dir"], formats=p["formats"],
                                basename=p["basename"], check_mode=module.check_mode)
    except ReportError as exc:
        module.fail_json(msg="cannot write the %s report: %s" % (p["kind"], exc),
                         errors=exc.errors)
    except OSError as exc:
        module.fail_json(msg="cannot write the %s report to %s: %s"
                         % (p["kind"], exc.filename or p["dest_dir"], exc.strerror))
    paths = written["paths"]
    module.exit_json(
        changed=written["changed"],
        paths=paths,
        files=[paths[fmt] for fmt in FORMATS if fmt in paths],
        changed_files=written["changed_files"],
        result=doc["result"],
        checks=check_counts(doc),
        checklist_missing=checklist_missing(doc),
        failure_reasons=failure_reasons(doc),
        summary_lines=written["summary_lines"],
        metrics=metric_updates(doc),
    )


if __name__ == "__main__":
    main()
