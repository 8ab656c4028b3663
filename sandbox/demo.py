"""`make drill`: the project's main job, end to end, on the sandbox.

Brings the sandbox up (seeded), takes a backup to the sandbox's S3, runs the DR drill,
prints the drill's summary and where its HTML report is, and brings the sandbox down
again unless asked to keep it.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from sandbox import ROOT
from ansible.module_utils.cap_report import summary_lines


def _playbook(state_dir, name, extra=()):
    env = dict(os.environ)
    env["CAP_SANDBOX_DIR"] = state_dir
    env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    cmd = [binary, os.path.join("playbooks", name)] + list(extra)
    print("\n==> %s" % " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def _newest_report(report_dir):
    reports = sorted(glob.glob(os.path.join(report_dir, "drill-*", "drill-report.json")),
                     key=os.path.getmtime)
    return reports[-1] if reports else None


def run_drill(box, keep=False, say=print):
    """Up, backup, drill, summary, down (unless keep). Returns the exit status."""
    report_dir = os.path.join(ROOT, "reports")
    status = 1
    try:
        doc, _already_up = box.up()
        say("sandbox up in %s" % doc["state_dir"])
        if _playbook(doc["state_dir"], "backup.yml") != 0:
            say("make drill: the backup failed; see its output above")
            return 1
        status = _playbook(doc["state_dir"], "drill.yml", ["-e", "cap_drill_report_dir=%s" % report_dir])
        report = _newest_report(report_dir)
        if report:
            with open(report) as handle:
                drill = json.load(handle)
            print("\n" + "\n".join(summary_lines(drill)))
            print("\nHTML report: %s" % os.path.join(os.path.dirname(report), "drill-report.html"))
        else:
            say("make drill: the drill wrote no report")
            status = status or 1
        return status
    finally:
        if keep:
            say("sandbox kept (KEEP=1): `make sandbox-down` stops it")
        else:
            box.down()
            say("sandbox down")
