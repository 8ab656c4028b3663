"""The naive shell pipeline the core pipeline is measured against.

The same staging tree, made with standard tools, one command per stage:

  collect   cp of the policy store, key metadata, configuration and documentation
  snapshot  sqlite3 SRC ".backup DEST"
  hash      openssl dgst -sha3-256 over every staged file, into SHA3SUMS (archived)
  archive   tar czf (gzip's default level, 6: the same as the core pipeline)
  encrypt   openssl enc -aes-256-ctr -pbkdf2 -pass file:KEY

Each stage runs under /usr/bin/time (GNU time) for its peak RSS: the rusage of a
waited-for child includes its own waited-for children, so `tar czf` counts gzip and
a bash pipeline counts every command in it. Without GNU time the peak comes from
getrusage(RUSAGE_CHILDREN) of a fresh helper process per stage.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

GNU_TIME = "/usr/bin/time"

STAGES = ("collect", "snapshot", "hash", "archive", "encrypt")


def _has_gnu_time():
    if not os.access(GNU_TIME, os.X_OK):
        return False
    probe = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stderr.strip().isdigit()


HAS_GNU_TIME = _has_gnu_time()

# Without GNU time: run the command from a small Python that reports RUSAGE_CHILDREN.
_RUSAGE_HELPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(['bash', '-c', sys.argv[1]])\n"
    "sys.stderr.write('%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(rc)\n"
)


def commands(app_dir, stage, work, key_file, plan, registry, quote=shlex.quote):
    """The bash command of each stage; `quote` may give the README a more readable form."""
    q = quote
    dirs = sorted({os.path.dirname(rel) for _src, rel in plan if os.path.dirname(rel)})
    collect = ("mkdir -p %s && " % " ".join(q(os.path.join(stage, d)) for d in dirs)) if dirs else ""
    collect += " && ".join("cp %s %s" % (q(src), q(os.path.join(stage, rel))) for src, rel in plan)
    archive = os.path.join(work, "shell.tar.gz")
    return [
        ("collect", collect),
        ("snapshot", "sqlite3 %s %s" % (q(registry), q(".backup '%s'" % os.path.join(stage, "registry.sqlite")))),
        ("hash", "cd %s && find . -type f -print0 | sort -z | xargs -0 openssl dgst -sha3-256 -r "
                 "> ../SHA3SUMS && mv ../SHA3SUMS SHA3SUMS" % q(stage)),
        ("archive", "tar czf %s -C %s ." % (q(archive), q(stage))),
        ("encrypt", "openssl enc -aes-256-ctr -pbkdf2 -pass file:%s -in %s -out %s"
                    % (q(key_file), q(archive), q(archive + ".enc"))),
    ]


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_stage(command):
    """(seconds, CPU seconds, peak RSS in KiB) of one bash command; raises on failure."""
    with tempfile.NamedTemporaryFile("r", prefix="cap-bench-time-", suffix=".txt") as out:
        if HAS_GNU_TIME:
            argv = [GNU_TIME, "-f", "%M", "-o", out.name, "bash", "-c", "set -euo pipefail; " + command]
        else:
            argv = [sys.executable, "-c", _RUSAGE_HELPER, "set -euo pipefail; " + command]
        cpu = _children_cpu()
        started = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        cpu = _children_cpu() - cpu
        if proc.returncode != 0:
            raise RuntimeError("shell stage failed (%d): %s\n%s" % (proc.returncode, command,
                                                                     proc.stderr[-2000:]))
        text = out.read().strip() if HAS_GNU_TIME else proc.stderr.strip().splitlines()[-1]
    return seconds, cpu, int(text.splitlines()[-1])


def run(app_dir, work, key_file, plan, registry):
    """One run of the shell pipeline into work/; returns stage rows, totals and sizes."""
    stage = os.path.join(work, "stage")
    rows = []
    for name, command in commands(app_dir, stage, work, key_file, plan, registry):
        seconds, cpu, peak = _run_stage(command)
        rows.append({"stage": name, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_kib": peak})
    archive = os.path.join(work, "shell.tar.gz")
    return {"stages": rows, "total_seconds": sum(r["seconds"] for r in rows),
            "peak_rss_kib": max(r["peak_rss_kib"] for r in rows),
            "archive": archive, "encrypted": archive + ".enc", "stage_dir": stage,
            "archive_bytes": os.path.getsize(archive),
            "encrypted_bytes": os.path.getsize(archive + ".enc")}


def verify(result, work, key_file):
    """Decrypt and extract the shell archive; check every file against SHA3SUMS."""
    out = os.path.join(work, "shell-verify")
    os.makedirs(out)
    cmd = ("openssl enc -d -aes-256-ctr -pbkdf2 -pass file:%s -in %s | tar xzf - -C %s && "
           "cd %s && openssl dgst -sha3-256 -r $(cut -d' ' -f2- SHA3SUMS | sed 's/^\\*//') "
           "| diff - SHA3SUMS >/dev/null && wc -l < SHA3SUMS"
           % (shlex.quote(key_file), shlex.quote(result["encrypted"]), shlex.quote(out),
              shlex.quote(out)))
    proc = subprocess.run(["bash", "-c", "set -euo pipefail; " + cmd], capture_output=True, text=True)
    ok = proc.returncode == 0
    files = int(proc.stdout.strip()) if ok else 0
    subprocess.run(["rm", "-rf", out], check=False)
    return {"ok": ok, "files_checked": files, "error": None if ok else proc.stderr[-500:]}
