"""Whole-playbook measurements: backup.yml and drill.yml against a sandbox of bench size.

The playbooks run with the ansible.posix.json stdout callback, which records for every
task when it started and when its result arrived (duration.start/end, per host, with
the module's action name). Summing those gives each task's share; the playbook's wall
time comes from the clock around the ansible-playbook process.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tasks whose module reads or writes the backup's bytes: (label, action, task-name regex).
# Everything else is orchestration: facts, asserts, stat/find/file, locks, Vault reads,
# metrics, the audit line, the staging copies, bucket checks and the small pointer objects.
BYTE_WORK = (
    ("snapshot", "cap_sqlite_snapshot", None),
    ("scan", "cap_backup_scan", None),
    ("manifest", "cap_backup_manifest", None),
    ("sign", "cap_backup_sign", None),
    # Packs and encrypts in one pass (cap_package.package), the registry check beside it.
    ("pack+encrypt", "cap_backup_archive", None),
    # No longer run by the backup role (encryption is part of the packing step); kept so
    # that a run that still calls it shows up in the report.
    ("encrypt", "cap_backup_crypt", None),
    # Only the small sidecar files (.sha3, manifest copy, signature).
    ("sha3sum", "cap_sha3sum", None),
    ("S3 upload", "amazon.aws.s3_object", r"^cap_backup : Upload the backup"),
    # The monthly offsite copy: S3 copies the archive's bytes server-side.
    ("S3 copy", "amazon.aws.s3_object", r"^cap_backup : Copy the backup's objects"),
    ("S3 HEAD", "amazon.aws.s3_object_info", None),
)
# Modules that do next to nothing: their time per invocation is what Ansible itself
# costs to run a module (fork, AnsiballZ payload, interpreter start, result handling).
# Actions Ansible runs on the controller without starting a module process.
CONTROLLER_ACTIONS = frozenset((
    "ansible.builtin.set_fact", "set_fact", "ansible.builtin.assert", "assert",
    "ansible.builtin.debug", "debug", "ansible.builtin.fail", "fail", "ansible.builtin.meta",
    "meta", "ansible.builtin.include_tasks", "include_tasks", "ansible.builtin.import_tasks",
    "ansible.builtin.include_role", "include_role", "ansible.builtin.include_vars",
    "ansible.builtin.validate_argument_spec", "validate_argument_spec",
    "ansible.builtin.set_stats", "ansible.builtin.add_host",
))
CHEAP_ACTIONS = ("ansible.builtin.stat", "ansible.builtin.file", "ansible.builtin.find",
                 "ansible.builtin.lineinfile")


def _ts(text):
    return datetime.datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")


def _parse_json_output(stdout):
    """The json callback's document (other callbacks may print text after it)."""
    start = stdout.find("{")
    if start < 0:
        raise RuntimeError("ansible-playbook printed no JSON: %s" % stdout[-1000:])
    doc, _end = json.JSONDecoder().raw_decode(stdout[start:])
    return doc


def task_rows(doc):
    """[{name, action, seconds, invocations, skipped, failed}] in execution order."""
    rows = []
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            duration = task["task"]["duration"]
            if "end" not in duration:
                continue
            result = next(iter(task["hosts"].values()), {})
            items = result.get("results")
            rows.append({
                "name": task["task"]["name"],
                "action": result.get("action", ""),
                "seconds": (_ts(duration["end"]) - _ts(duration["start"])).total_seconds(),
                "invocations": len(items) if isinstance(items, list) and items else 1,
                "skipped": bool(result.get("skipped")),
                "failed": bool(result.get("failed")),
            })
    return rows


def run_playbook(state_dir, playbook, extra=(), log_dir=None):
    """Run a playbook against the sandbox; returns wall seconds, rc and task rows."""
    env = dict(os.environ)
    env.update(CAP_SANDBOX_DIR=state_dir, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               # profile_tasks (ansible.cfg) would print its table into the JSON; timer
               # prints one line after it, which the parser skips.
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.timer",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
           os.path.join("playbooks", playbook)] + list(extra)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if log_dir:
        stem = os.path.join(log_dir, "%s-%d" % (os.path.splitext(playbook)[0], int(time.time())))
        with open(stem + ".json", "w") as handle:
            handle.write(proc.stdout)
        with open(stem + ".stderr", "w") as handle:
            handle.write(proc.stderr)
    try:
        rows = task_rows(_parse_json_output(proc.stdout))
    except (RuntimeError, ValueError):
        rows = []
    return {"playbook": playbook, "rc": proc.returncode, "wall_seconds": wall, "tasks": rows,
            "stderr_tail": proc.stderr[-1500:] if proc.returncode else ""}


def classify(run):
    """Byte-work time per label, the rest, and the Ansible overhead estimate of one run."""
    rows = [r for r in run["tasks"] if not r["skipped"]]
    cheap = [r["seconds"] / r["invocations"] for r in rows if r["action"] in CHEAP_ACTIONS]
    per_call = statistics.median(cheap) if cheap else 0.0
    labels = {}
    byte_rows = []
    for row in rows:
        for label, action, name_re in BYTE_WORK:
            if row["action"] == action and (name_re is None or re.search(name_re, row["name"])):
                entry = labels.setdefault(label, {"seconds": 0.0, "invocations": 0, "work": 0.0})
                entry["seconds"] += row["seconds"]
                entry["invocations"] += row["invocations"]
                entry["work"] += max(0.0, row["seconds"] - row["invocations"] * per_call)
                byte_rows.append(row)
                break
    task_sum = sum(r["seconds"] for r in run["tasks"])
    byte_tasks = sum(v["seconds"] for v in labels.values())
    work = sum(v["work"] for v in labels.values())
    wall = run["wall_seconds"]
    return {
        "labels": labels, "per_call_seconds": per_call, "cheap_samples": len(cheap),
        "tasks_run": len(rows), "task_sum": task_sum, "byte_task_seconds": byte_tasks,
        "module_work_seconds": work, "outside_tasks_seconds": wall - task_sum,
        "other_task_seconds": task_sum - byte_tasks,
        "overhead_seconds": wall - work, "overhead_share": (wall - work) / wall if wall else 0.0,
        "invocations": sum(r["invocations"] for r in rows),
        "module_calls": sum(r["invocations"] for r in rows if r["action"] not in CONTROLLER_ACTIONS),
    }


def sandbox_cli(state_dir, *args):
    cmd = [sys.executable, "-m", "sandbox"] + list(args) + ["--state-dir", state_dir]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return proc, time.perf_counter() - started


def sandbox_up(state_dir, entries, policies):
    proc, seconds = sandbox_cli(state_dir, "up", "--entries", str(entries),
                                "--policies", str(policies), "--json")
    if proc.returncode != 0:
        raise RuntimeError("sandbox up failed (%d): %s" % (proc.returncode, proc.stderr[-2000:]))
    doc = json.loads(proc.stdout)
    return doc, seconds


def sandbox_down(state_dir):
    proc, seconds = sandbox_cli(state_dir, "down")
    return proc.returncode, seconds, proc.stderr[-1000:]


def read_drill_report(report_dir):
    reports = sorted(glob.glob(os.path.join(report_dir, "drill-*", "drill-report.json")),
                     key=os.path.getmtime)
    if not reports:
        return None
    with open(reports[-1]) as handle:
        return json.load(handle)
