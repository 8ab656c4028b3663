"""`make bench`: the backup pipeline's speed and memory, the playbook's time, the drill's RTO.

    .venv/bin/python bench/run.py [--write-readme] [--quick] [--repeats N] ...

1. Core pipeline (module_utils APIs, each run in a fresh interpreter) against a naive
   shell pipeline (sqlite3 .backup, openssl dgst, tar czf, openssl enc) on the same
   cached reference data set, interleaved, after a warm-up; median, min and max per
   stage; peak RSS at 1x and 2x the input; archive sizes; correctness of the archives.
2. A profile of the core pipeline's primitives on the same data (where the time goes).
3. backup.yml against a sandbox seeded at the same size, per-task times from the
   ansible.posix.json callback, and the share of Ansible's own overhead.
4. drill.yml after that backup: RTO, RPO and every step's duration.

Prints the report (Markdown); --write-readme also writes it to bench/README.md. Data
sets are cached in bench/.data/ (git-ignored); everything else lives in a temporary
directory that is removed at the end, and the sandbox started here is stopped by the
PIDs it recorded (`python -m sandbox down --state-dir ...`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import dataset  # noqa: E402
import playbooks  # noqa: E402
import report  # noqa: E402
import shell_pipeline  # noqa: E402

CORE_SCRIPT = os.path.join(HERE, "core_pipeline.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Fixed names and times, so the archives of the "role" and "early" variants are
# byte-identical (the archive format is deterministic) and can be compared.
BACKUP_ID = "backup-bench"
CREATED_AT = "2025-01-01T00:00:00Z"


def say(message):
    print("bench: %s" % message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Background load: the machine may be shared, so every measured run records how much
# CPU time other processes used while it ran.

def _busy_jiffies():
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]


def _own_cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class LoadProbe:
    """CPU seconds used by this benchmark and by everything else during a run."""

    def __enter__(self):
        self._busy = _busy_jiffies()
        self._own = _own_cpu()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        busy = (_busy_jiffies() - self._busy) / CLK_TCK
        self.own_cpu = _own_cpu() - self._own
        self.foreign_cpu = max(0.0, busy - self.own_cpu)
        self.foreign_share = self.foreign_cpu / (self.wall * os.cpu_count()) if self.wall else 0.0
        return False


QUIET_WINDOW = 2.0
# Seconds spent waiting for quiet and on discarded attempts, for the report.
WAITED = {"seconds": 0.0}


def wait_for_quiet(max_wait, threshold):
    """Wait (up to max_wait s) for QUIET_WINDOW seconds in which other processes used less
    than `threshold` of the machine. Returns the last measured share."""
    started = time.monotonic()
    deadline = started + max_wait
    while True:
        before = _busy_jiffies()
        time.sleep(QUIET_WINDOW)
        share = (_busy_jiffies() - before) / CLK_TCK / os.cpu_count() / QUIET_WINDOW
        if share < threshold or time.monotonic() >= deadline:
            WAITED["seconds"] += time.monotonic() - started
            return share


# ---------------------------------------------------------------------------
# Pipelines

class Runner:
    def __init__(self, tmp, key_file, args):
        self.tmp = tmp
        self.key_file = key_file
        self.args = args
        self.count = 0
        self.retry_budget = args.retry_budget
        self.discarded = 0

    def _workdir(self, label):
        self.count += 1
        path = os.path.join(self.tmp, "%03d-%s" % (self.count, label))
        os.makedirs(path)
        return path

    def core(self, mode, app_dir, extra=None):
        work = self._workdir(mode)
        spec = dict(mode=mode, app_dir=app_dir, work_dir=work, key_file=self.key_file,
                    backup_id=BACKUP_ID, created_at=CREATED_AT)
        spec.update(extra or {})
        with LoadProbe() as probe:
            proc = subprocess.run([sys.executable, CORE_SCRIPT, json.dumps(spec)], cwd=ROOT,
                                  capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("core pipeline (%s) failed: %s" % (mode, proc.stderr[-3000:]))
        result = json.loads(proc.stdout)
        result.update(work_dir=work, process_wall_seconds=probe.wall, cpu_seconds=probe.own_cpu,
                      foreign_share=probe.foreign_share)
        return result

    def shell(self, app_dir):
        work = self._workdir("shell")
        plan = dataset.staging_plan(app_dir)
        with LoadProbe() as probe:
            result = shell_pipeline.run(app_dir, work, self.key_file, plan,
                                        os.path.join(app_dir, dataset.REGISTRY))
        result.update(work_dir=work, cpu_seconds=probe.own_cpu, foreign_share=probe.foreign_share)
        return result

    def verify_core(self, result):
        work = self._workdir("verify")
        spec = dict(mode="verify", work_dir=work, key_file=self.key_file,
                    encrypted=result["encrypted"], sidecar=result["sidecar"],
                    stage_dir=result["stage_dir"], archive_sha3_256=result["archive_sha3_256"])
        proc = subprocess.run([sys.executable, CORE_SCRIPT, json.dumps(spec)], cwd=ROOT,
                              capture_output=True, text=True)
        shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            return {"manifest_ok": False, "error": proc.stderr[-1500:]}
        return json.loads(proc.stdout)

    def drop(self, result):
        shutil.rmtree(result["work_dir"], ignore_errors=True)


def measured(runner, args, run):
    """One measured run, repeated while other processes disturbed it.

    Waits for a quiet second first; a run during which other processes used more than
    --disturbed of the machine is done again (up to --attempts times, while the retry
    budget lasts), and the least disturbed attempt is kept. The others are discarded.
    """
    best = None
    for attempt in range(1, args.attempts + 1):
        wait_for_quiet(args.quiet_wait, args.quiet_threshold)
        started = time.monotonic()
        result = run()
        result["attempts"] = attempt
        result["attempt_seconds"] = time.monotonic() - started
        if best is None or result["foreign_share"] < best["foreign_share"]:
            best, result = result, best
        if result is not None:
            # The attempt not kept: its time counts as time spent repeating runs.
            runner.drop(result)
            runner.discarded += 1
            WAITED["seconds"] += result["attempt_seconds"]
        if best["foreign_share"] <= args.disturbed:
            break
        if attempt < args.attempts:
            runner.retry_budget -= time.monotonic() - started
            if runner.retry_budget <= 0:
                break
    best["attempts"] = attempt
    return best


def _stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": list(values)}


def summarise(runs):
    """Median/min/max per stage and of the totals, peak RSS, CPU use, background load."""
    stages = []
    for index, row in enumerate(runs[0]["stages"]):
        name = row["stage"]
        seconds = [r["stages"][index]["seconds"] for r in runs]
        peaks = [r["stages"][index]["peak_rss_kib"] for r in runs]
        cpu = statistics.median(r["stages"][index]["cpu_seconds"] for r in runs)
        stages.append(dict(stage=name, peak_rss_kib=max(peaks), cpu_seconds=cpu, **_stats(seconds)))
    totals = [r["total_seconds"] for r in runs]
    out = {"stages": stages, "total": _stats(totals),
           "peak_rss_kib": max(r["peak_rss_kib"] for r in runs),
           # CPU of the stages alone (not the interpreter's start-up), every thread counted.
           "cpu_seconds": statistics.median(sum(st["cpu_seconds"] for st in r["stages"])
                                            for r in runs),
           "process_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
           "foreign_share": _stats([r["foreign_share"] for r in runs]),
           "attempts": sum(r.get("attempts", 1) for r in runs),
           "archive_bytes": runs[-1]["archive_bytes"],
           "encrypted_bytes": runs[-1]["encrypted_bytes"]}
    for extra in ("check_seconds", "check_wait_seconds"):
        if all(extra in r for r in runs):
            out[extra] = statistics.median(r[extra] for r in runs)
    if "baseline_rss_kib" in runs[0]:
        out["baseline_rss_kib"] = max(r["baseline_rss_kib"] for r in runs)
    return out


def pipelines(runner, sets, args):
    """Part 1 and 2: core (role, early) against shell at 1x; core at 2x; profile."""
    app1, _info1 = sets["1x"]
    app2, _info2 = sets["2x"]
    results = {"role": [], "early": [], "shell": [], "role_2x": [], "early_2x": []}
    say("warm-up (page cache, interpreter): one unmeasured run of each pipeline")
    for func in (lambda: runner.core("role", app1), lambda: runner.core("early", app1),
                 lambda: runner.shell(app1), lambda: runner.core("role", app2)):
        runner.drop(func())
    order = ["role", "shell", "early"]
    checks = {}
    for rep in range(args.repeats):
        # Rotate the order, so no pipeline always runs right after the same other one.
        for name in order[rep % 3:] + order[:rep % 3]:
            result = measured(runner, args, lambda: runner.shell(app1) if name == "shell"
                              else runner.core(name, app1))
            say("1x %-5s run %d: %.2f s (background load %.0f%%, attempt %d)"
                % (name, rep + 1, result["total_seconds"], 100 * result["foreign_share"],
                   result["attempts"]))
            results[name].append(result)
            last = rep == args.repeats - 1
            if last and name in ("role", "early"):
                checks[name] = runner.verify_core(result)
            elif last and name == "shell":
                checks["shell"] = shell_pipeline.verify(result, result["work_dir"], runner.key_file)
            runner.drop(result)
    for rep in range(args.repeats):
        for name in ("role", "early"):
            result = measured(runner, args, lambda: runner.core(name, app2))
            say("2x %-5s run %d: %.2f s, peak RSS %.1f MiB (background load %.0f%%)"
                % (name, rep + 1, result["total_seconds"], result["peak_rss_kib"] / 1024,
                   100 * result["foreign_share"]))
            results[name + "_2x"].append(result)
            if rep == args.repeats - 1 and name == "role":
                checks["role_2x"] = runner.verify_core(result)
            runner.drop(result)
    say("profile: each primitive alone on the 1x data")
    prof = measured(runner, args, lambda: runner.core("profile", app1))
    runner.drop(prof)
    out = {name: summarise(runs) for name, runs in results.items()}
    out["threads"] = results["role"][-1]["threads"]
    out["block_size"] = prof.get("block_size")
    out["checks"] = checks
    out["profile"] = prof
    out["early_identical"] = (checks.get("early", {}).get("decrypted_sha3_256") is not None
                              and checks.get("early", {}).get("decrypted_sha3_256")
                              == checks.get("role", {}).get("decrypted_sha3_256"))
    # The commands as the README shows them: placeholders for the temporary paths.
    display_plan = [("$APP/" + os.path.relpath(src, app1), rel)
                    for src, rel in dataset.staging_plan(app1)]
    out["shell_commands"] = shell_pipeline.commands(
        "$APP", "$STAGE", "$WORK", "$KEY_FILE", display_plan, "$APP/" + dataset.REGISTRY,
        quote=lambda text: '"%s"' % text if " " in text else text)
    out["staged_copies"] = len(display_plan)
    out["registry_rows"] = results["role"][-1]["registry_rows"]
    out["registry_rows_2x"] = results["role_2x"][-1]["registry_rows"]
    out["total_files"] = results["role"][-1]["total_files"]
    return out


# ---------------------------------------------------------------------------
# Playbooks

def playbook_part(tmp, params, args):
    """Part 3 and 4: sandbox up at bench size, backup.yml N times, drill.yml, down."""
    state_dir = args.sandbox_dir or os.path.join(tmp, "sandbox")
    log_dir = os.path.join(tmp, "playbook-logs")
    os.makedirs(log_dir)
    out = {"entries": params["entries"], "policies": params["policies"], "backups": [],
           "reused_sandbox": bool(args.sandbox_dir)}
    started_here = False
    try:
        if args.sandbox_dir:
            with open(os.path.join(state_dir, "endpoints.json")) as handle:
                doc = json.load(handle)
            out["up_seconds"] = None
        else:
            say("sandbox up with %d entries and %d policies (seeding included)"
                % (params["entries"], params["policies"]))
            started_here = True
            doc, seconds = playbooks.sandbox_up(state_dir, params["entries"], params["policies"])
            out["up_seconds"] = seconds
        summary = doc.get("cap_source_seed_summary") or {}
        out["seed_timings"] = summary.get("timings", {})
        out["registry_bytes"] = summary.get("registry_size_bytes")
        out["policy_store_bytes"] = summary.get("policy_store_size_bytes")
        out["seed"] = doc.get("seed")
        for index in range(args.backup_runs):
            run = None
            for attempt in range(1, args.playbook_attempts + 1):
                wait_for_quiet(args.quiet_wait, args.quiet_threshold)
                with LoadProbe() as probe:
                    this = playbooks.run_playbook(state_dir, "backup.yml", log_dir=log_dir)
                this["foreign_share"] = probe.foreign_share
                if this["rc"] != 0:
                    raise RuntimeError("backup.yml failed (rc %d): %s"
                                       % (this["rc"], this["stderr_tail"]))
                this["split"] = playbooks.classify(this)
                this["attempts"] = attempt
                say("backup.yml run %d, attempt %d: %.1f s (byte-work modules %.1f s, "
                    "background load %.0f%%)" % (index + 1, attempt, this["wall_seconds"],
                                                 this["split"]["module_work_seconds"],
                                                 100 * probe.foreign_share))
                if run is None or this["foreign_share"] < run["foreign_share"]:
                    if run is not None:
                        WAITED["seconds"] += run["wall_seconds"]
                    run = this
                else:
                    WAITED["seconds"] += this["wall_seconds"]
                # A backup is named by the second it starts in; never two in one second.
                time.sleep(1.1)
                if run["foreign_share"] <= args.disturbed:
                    break
            run["attempts"] = attempt
            out["backups"].append(run)
        if not args.skip_drill:
            report_dir = os.path.join(tmp, "drill-reports")
            os.makedirs(report_dir)
            wait_for_quiet(args.quiet_wait, args.quiet_threshold)
            with LoadProbe() as probe:
                drill = playbooks.run_playbook(state_dir, "drill.yml",
                                               ["-e", "cap_drill_report_dir=%s" % report_dir],
                                               log_dir=log_dir)
            drill["foreign_share"] = probe.foreign_share
            drill["report"] = playbooks.read_drill_report(report_dir)
            if drill["report"] is None:
                raise RuntimeError("drill.yml (rc %d) wrote no report: %s"
                                   % (drill["rc"], drill["stderr_tail"]))
            say("drill.yml: %.1f s, result %s, RTO %.1f s"
                % (drill["wall_seconds"], drill["report"]["result"],
                   drill["report"]["objectives"]["rto"]["measured_seconds"]))
            out["drill"] = drill
    finally:
        if started_here:
            rc, seconds, err = playbooks.sandbox_down(state_dir)
            out["down_seconds"] = seconds
            if rc != 0:
                say("sandbox down failed (%d): %s" % (rc, err))
            else:
                say("sandbox down in %.1f s" % seconds)
        if args.keep_logs:
            kept = os.path.join(dataset.DATA_DIR, "playbook-logs")
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(log_dir, kept)
            say("playbook output kept in %s" % kept)
    return out


# ---------------------------------------------------------------------------
# Machine

def _deflate_version():
    try:
        import deflate
    except ImportError:
        return "not installed"
    return deflate.__version__


def _first_line(cmd):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


def machine():
    import sqlite3
    import ssl
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kib = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
    try:
        from cryptography.hazmat.backends.openssl import backend
        import cryptography
        crypto = "cryptography %s on %s" % (cryptography.__version__, backend.openssl_version_text())
    except Exception:  # noqa: BLE001  (only describes the machine)
        crypto = "cryptography not importable"
    try:
        import ansible
        ansible_core = ansible.__version__ if hasattr(ansible, "__version__") else None
        if ansible_core is None:
            from ansible.release import __version__ as ansible_core
    except ImportError:
        ansible_core = "not installed"
    return {
        "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu_model": model,
        "ram_gib": mem_kib / 1024 / 1024, "kernel": platform.release(),
        "python": sys.version.split()[0], "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "deflate": _deflate_version(),
        "python_openssl": ssl.OPENSSL_VERSION, "cryptography": crypto,
        "sqlite_python": sqlite3.sqlite_version,
        "sqlite_cli": _first_line(["sqlite3", "--version"]).split()[0],
        "openssl_cli": _first_line(["openssl", "version"]),
        "gzip": _first_line(["gzip", "--version"]), "tar": _first_line(["tar", "--version"]),
        "gnu_time": shell_pipeline.HAS_GNU_TIME, "ansible_core": ansible_core,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


# ---------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-readme", action="store_true",
                        help="also write the report to bench/README.md")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the data, one repeat, one backup run (development)")
    parser.add_argument("--repeats", type=int, help="measured runs per pipeline (default 5)")
    parser.add_argument("--backup-runs", type=int, help="backup.yml runs (default 3)")
    parser.add_argument("--skip-playbooks", action="store_true",
                        help="only the pipelines (parts 1 and 2)")
    parser.add_argument("--skip-drill", action="store_true", help="no drill.yml run")
    parser.add_argument("--sandbox-dir",
                        help="use the sandbox already running in this state directory "
                             "(not started or stopped here)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each measured run, wait up to this many seconds for the "
                             "machine to be quiet (default 60)")
    parser.add_argument("--quiet-threshold", type=float, default=0.10,
                        help="'quiet': other processes use less than this share of all CPUs "
                             "(default 0.10)")
    parser.add_argument("--disturbed", type=float, default=0.15,
                        help="a pipeline run during which other processes used more than this "
                             "share of all CPUs is done again (default 0.15)")
    parser.add_argument("--attempts", type=int, default=4,
                        help="attempts per measured pipeline run (default 4)")
    parser.add_argument("--retry-budget", type=float, default=900.0,
                        help="seconds the benchmark may spend on repeated attempts in all "
                             "(default 900)")
    parser.add_argument("--playbook-attempts", type=int, default=2,
                        help="attempts per backup.yml run when other processes disturbed it "
                             "(default 2)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="copy the playbooks' JSON output to bench/.data/playbook-logs/")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.backup_runs is None:
        args.backup_runs = 1 if args.quick else 3
    if args.repeats < 1 or args.backup_runs < 1:
        parser.error("--repeats and --backup-runs must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    names = ("quick-1x", "quick-2x") if args.quick else ("1x", "2x")
    sets = {}
    for label, name in zip(("1x", "2x"), names):
        sets[label] = dataset.ensure(name, say=say)
    info = {"machine": machine(), "started": started, "quick": args.quick,
            "repeats": args.repeats, "backup_runs": args.backup_runs,
            "datasets": {label: info for label, (_app, info) in sets.items()},
            "command": "make bench" if args.write_readme and not args.quick else
            " ".join(["bench/run.py"] + (argv if argv is not None else sys.argv[1:])),
            "quiet_wait": args.quiet_wait, "quiet_threshold": args.quiet_threshold,
            "disturbed": args.disturbed, "attempts": args.attempts,
            "retry_budget": args.retry_budget}
    tmp = tempfile.mkdtemp(prefix="cap-bench-")
    try:
        key_file = os.path.join(tmp, "bench.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
        runner = Runner(tmp, key_file, args)
        info["pipelines"] = pipelines(runner, sets, args)
        info["pipelines"]["discarded"] = runner.discarded
        if not args.skip_playbooks:
            info["playbooks"] = playbook_part(tmp, sets["1x"][1]["parameters"], args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["finished"] = time.time()
    info["waiting_seconds"] = WAITED["seconds"]
    text = report.render(info)
    print(text)
    if args.write_readme:
        with open(os.path.join(HERE, "README.md"), "w") as handle:
            handle.write(text)
        say("wrote bench/README.md")
    with open(os.path.join(dataset.DATA_DIR, "last-run.json"), "w") as handle:
        json.dump(info, handle, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
