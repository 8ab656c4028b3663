"""The benchmark report (bench/README.md) from the numbers of one run of bench/run.py."""

from __future__ import annotations

import re
import statistics
import time

from playbooks import BYTE_WORK

CORE_STAGE_NOTES = {
    "collect": "copy policy store, key metadata, config, docs",
    "snapshot": "`cap_sqlite.snapshot(verify=False)`: the online backup copy only",
    "manifest": "`build_manifest` + `serialize_manifest` (SHA3-256 of every file)",
    "archive+encrypt": "`cap_package.package`: tar, gzip level 6 (libdeflate, "
                       "%(block_kib)d KiB members) on %(threads)d threads, AES-256-GCM over "
                       "`AtomicFile`, SHA3-256 of the stream and of the file; "
                       "`integrity_check` of the registry on a thread; commit; `.sha3` sidecar",
}
EARLY_STAGE_NOTES = {
    "collect": "as above",
    "snapshot": "as above; then `integrity_check` starts on a thread",
    "manifest": "as above, beside the integrity check",
    "archive+encrypt": "what `package` does (`write_archive` into `HashingSink` into "
                       "`EncryptingWriter` over `AtomicFile`), wait for the check, commit, sidecar",
}
SHELL_STAGE_NOTES = {
    "collect": "`cp` of the same %(copies)d files",
    "snapshot": "`sqlite3 .backup`",
    "hash": "`openssl dgst -sha3-256` of every staged file",
    "archive": "`tar czf` (gzip -6)",
    "encrypt": "`openssl enc -aes-256-ctr -pbkdf2`",
}
TARGET_RATIO = 0.6
TARGET_PEAK_MB = 100.0


def _s(value):
    return "%.2f" % value


def _mib(kib):
    return "%.1f MiB" % (kib / 1024.0)


def _mb(size):
    return "%.1f MB" % (size / 1e6)


def _pct(value):
    return "%.0f%%" % (100 * value)


def _median_run(runs):
    ordered = sorted(runs, key=lambda r: r["wall_seconds"])
    return ordered[(len(ordered) - 1) // 2]


def _stage_table(summary, notes, subst):
    lines = ["| Stage | What it does | Median s | Min s | Max s | Cores busy | Peak RSS |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in summary["stages"]:
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            row["stage"], notes.get(row["stage"], "") % subst, _s(row["median"]), _s(row["min"]),
            _s(row["max"]), _busy(row["cpu_seconds"], row["median"]), _mib(row["peak_rss_kib"])))
    total = summary["total"]
    lines.append("| **total** | | **%s** | %s | %s | %s | **%s** |" % (
        _s(total["median"]), _s(total["min"]), _s(total["max"]),
        _busy(sum(r["cpu_seconds"] for r in summary["stages"]), total["median"]),
        _mib(summary["peak_rss_kib"])))
    return lines


def _busy(cpu, wall):
    """CPU seconds per wall second: 2.00 keeps both cores of a 2-core machine busy."""
    return "%.2f" % (cpu / wall) if wall > 0 else "-"


def _flat(one, two):
    """Flat: the 2x peak is within 10% (or 5 MiB) of the 1x peak."""
    return abs(two - one) <= max(0.10 * one, 5 * 1024)


def _yes(value):
    return "yes" if value else "**no**"


def render(info):
    m = info["machine"]
    p = info["pipelines"]
    d1, d2 = info["datasets"]["1x"], info["datasets"]["2x"]
    role, early, shell = p["role"], p["early"], p["shell"]
    ratio = role["total"]["median"] / shell["total"]["median"]
    ratio_early = early["total"]["median"] / shell["total"]["median"]
    subst = {"threads": p["threads"], "copies": p["staged_copies"],
             "block_kib": p["block_size"] // 1024}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info["started"]))
    minutes = (info["finished"] - info["started"]) / 60.0
    out = []
    add = out.append
    add("# Benchmarks: backup pipeline, backup playbook, DR drill")
    add("")
    how = "`make bench` (`bench/run.py --write-readme`)" if info["command"] == "make bench" \
        else "`%s`" % info["command"]
    add("Written by %s on %s; the run took %.1f minutes, %.1f of them waiting for a quiet "
        "machine or repeating disturbed runs (see Machine). Every number below comes from that "
        "run. `bench/run.py` without `--write-readme` prints the same report; `--quick` runs a "
        "tenth of the data once, for development; `--help` lists the other options."
        % (how, started, minutes, info.get("waiting_seconds", 0) / 60.0))
    add("")
    add("Files: `run.py` (driver, this report via `report.py`), `dataset.py` (reference data "
        "sets), `core_pipeline.py` (the core pipeline in a fresh interpreter: modes `role`, "
        "`early`, `profile`, `verify`), `shell_pipeline.py` (the shell pipeline), "
        "`playbooks.py` (sandbox, playbook runs, task-time split).")
    if info["quick"]:
        add("")
        add("**Quick run: a tenth of the data set, one repeat. Not the reference numbers.**")
    add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    add("| CPUs | %d (`nproc`), %d usable by this process |" % (m["nproc"], m["affinity"]))
    add("| CPU model | %s |" % m["cpu_model"])
    add("| RAM | %.1f GiB |" % m["ram_gib"])
    add("| Kernel | %s |" % m["kernel"])
    add("| Python | %s, zlib %s, %s, SQLite %s |" % (m["python"], m["zlib"], m["python_openssl"],
                                                     m["sqlite_python"]))
    add("| Deflate (packing) | libdeflate through the Python package deflate %s |"
        % m["deflate"])
    add("| AES-GCM | %s |" % m["cryptography"])
    add("| Shell tools | %s; sqlite3 %s; %s; %s |" % (m["openssl_cli"], m["sqlite_cli"], m["gzip"],
                                                     m["tar"]))
    add("| ansible-core | %s |" % m["ansible_core"])
    add("| Load average at start | %s |" % " ".join(m["loadavg"]))
    add("")
    add("The machine may be shared. Before each measured run the benchmark waits up to %.0f s "
        "for two seconds in which other processes use less than %s of all CPUs, and records the "
        "CPU time other processes used during the run (\"background load\" below, as a share of "
        "all CPUs). A pipeline run with more than %s background load is done again (at most "
        "%d attempts, %.0f s of retries in all) and the least disturbed attempt is kept; "
        "this run discarded %d disturbed pipeline attempts."
        % (info["quiet_wait"], _pct(info["quiet_threshold"]), _pct(info["disturbed"]),
           info["attempts"], info["retry_budget"], info["pipelines"].get("discarded", 0)))
    add("")
    add("## Data sets")
    add("")
    add("Made by the sandbox seeder (`sandbox/seed.py`, seed 42), so the registry has the real "
        "schema and the policy store holds real compiled `cap-policy-store.v1` records: the "
        "seeder's `policies` knob cycles its policy families with new minor versions and "
        "thresholds. Cached in `bench/.data/` and made again only when missing or when the "
        "entries, policies, seed or the seeder's source change.")
    add("")
    add("| Set | Registry entries | Policies | Registry (SQLite) | Policy store | Other files | "
        "Staged in total | Generated |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, ds in (("1x", d1), ("2x", d2)):
        prm = ds["parameters"]
        made = ("in this run, %.1f s" % ds["generate_seconds"]) if ds.get("made_in_this_run") \
            else "cached (made %s in %.1f s)" % (ds["generated_at"].replace("T", " ")[:16],
                                                 ds["generate_seconds"])
        add("| %s | %d | %d | %s | %s | %d (%.1f kB) | %d files, %s | %s |" % (
            label, prm["entries"], prm["policies"], _mb(ds["registry_bytes"]),
            _mb(ds["policy_store_bytes"]), ds["other_files"], ds["other_bytes"] / 1e3,
            ds["staged_files"], _mb(ds["staged_bytes"]), made))
    add("")
    add("## 1. Core pipeline against a naive shell pipeline (1x data, same run)")
    add("")
    add("Both pipelines build the same staging tree from the same data directory (the backup "
        "role's layout: `registry.sqlite`, `policy_store.json`, `keys/metadata/`, `config/`, "
        "`docs/`, `runbooks/`) and end with an encrypted archive. The core pipeline calls the "
        "`module_utils` APIs in a fresh interpreter per run (`bench/core_pipeline.py`), so its "
        "peak RSS (VmHWM, reset per stage through `/proc/self/clear_refs`) is its own. The "
        "shell stages run under GNU time for their peak RSS. After one unmeasured warm-up run "
        "of each (page cache warm, nothing dropped), %d measured runs each, interleaved in a "
        "rotating order." % info["repeats"])
    add("")
    add("Shell commands (`$STAGE` is the staging tree, `$APP` the data directory):")
    add("")
    add("```bash")
    for name, cmd in p["shell_commands"]:
        if name == "collect":
            cmd = "mkdir -p ... && cp $APP/... $STAGE/...   # %d files" % p["staged_copies"]
        add("# %s\n%s" % (name, cmd))
    add("```")
    add("")
    add("**Core pipeline** as the backup role runs it (`collect_host.yml`, `manifest.yml`, "
        "`package.yml`: `cap_sqlite_snapshot` with `verify: false`, `cap_backup_manifest`, "
        "`cap_backup_archive` with the key and `check_sqlite: [registry.sqlite]`), one API call "
        "per stage. The snapshot neither checks nor hashes its copy; the manifest hashes every "
        "staged file once; `cap_package.package` streams the deterministic archive straight "
        "into the AES-256-GCM writer over a temporary file, runs `PRAGMA integrity_check` of the "
        "staged registry on a thread while it compresses, and renames the file into place only "
        "when the check passed. The `.sha3` sidecar is written from the hash `package` returns, "
        "without reading the archive again.")
    add("")
    out.extend(_stage_table(role, CORE_STAGE_NOTES, subst))
    add("")
    add("**Shell pipeline:**")
    add("")
    out.extend(_stage_table(shell, SHELL_STAGE_NOTES, subst))
    add("")
    add("| | Core | Shell |")
    add("|---|---:|---:|")
    add("| Total, median (min-max) | %s s (%s-%s) | %s s (%s-%s) |" % (
        _s(role["total"]["median"]), _s(role["total"]["min"]), _s(role["total"]["max"]),
        _s(shell["total"]["median"]), _s(shell["total"]["min"]), _s(shell["total"]["max"])))
    add("| CPU time (median) | %s s (%.2f cores busy) | %s s (%.2f cores busy) |" % (
        _s(role["cpu_seconds"]), role["cpu_seconds"] / role["total"]["median"],
        _s(shell["cpu_seconds"]), shell["cpu_seconds"] / shell["total"]["median"]))
    add("| Peak RSS | %s | %s |" % (_mib(role["peak_rss_kib"]), _mib(shell["peak_rss_kib"])))
    add("| Background load (median, max) | %s, %s | %s, %s |" % (
        _pct(role["foreign_share"]["median"]), _pct(role["foreign_share"]["max"]),
        _pct(shell["foreign_share"]["median"]), _pct(shell["foreign_share"]["max"])))
    add("| Attempts for %d measured runs | %d | %d |" % (
        info["repeats"], role["attempts"], shell["attempts"]))
    add("")
    target_s = TARGET_RATIO * shell["total"]["median"]
    gap = role["total"]["median"] - target_s
    add("**Ratio core/shell (medians): %.2f**; target <= %.1f: **%s**%s. Ratio of the fastest "
        "runs: %.2f." % (
            ratio, TARGET_RATIO, "met" if ratio <= TARGET_RATIO else "not met",
            (" (%.1f x %s s = %s s; the role pipeline is %s s over it)"
             % (TARGET_RATIO, _s(shell["total"]["median"]), _s(target_s), _s(gap)))
            if gap > 0 else "", role["total"]["min"] / shell["total"]["min"]))
    add("")
    add("The core pipeline does more than the shell one: it runs `PRAGMA integrity_check` on "
        "the staged registry, hashes the archive stream and the encrypted file (SHA3-256; the "
        "sidecar carries the latter), authenticates every 1 MiB chunk (GCM) and fsyncs what it "
        "writes; `tar` and `openssl enc` do none of that.")
    add("")
    add("### Peak memory of the core pipeline at 1x and 2x")
    add("")
    r2, e2 = p["role_2x"], p["early_2x"]
    add("| Variant | 1x peak RSS | 2x peak RSS | Change | Below %.0f MB | Flat | "
        "1x time, median | 2x time, median (min-max) |" % TARGET_PEAK_MB)
    add("|---|---:|---:|---:|---|---|---:|---:|")
    for name, one, two in (("core (role)", role, r2), ("core (early check)", early, e2)):
        a, b = one["peak_rss_kib"], two["peak_rss_kib"]
        add("| %s | %s | %s | %+.1f MiB | %s | %s | %s s | %s s (%s-%s) |" % (
            name, _mib(a), _mib(b), (b - a) / 1024.0,
            "yes" if max(a, b) * 1024 < TARGET_PEAK_MB * 1e6 else "no",
            "yes" if _flat(a, b) else "no", _s(one["total"]["median"]),
            _s(two["total"]["median"]), _s(two["total"]["min"]), _s(two["total"]["max"])))
    add("")
    add("Per stage of the role pipeline (peak RSS during the stage, highest of the runs; the "
        "interpreter with `module_utils` and `cryptography` imported starts at %s):"
        % _mib(role["baseline_rss_kib"]))
    add("")
    add("| Stage | 1x | 2x | 2x time, median s |")
    add("|---|---:|---:|---:|")
    for a, b in zip(role["stages"], r2["stages"]):
        add("| %s | %s | %s | %s |" % (a["stage"], _mib(a["peak_rss_kib"]), _mib(b["peak_rss_kib"]),
                                       _s(b["median"])))
    add("| **total** | | | **%s** (%s-%s) |" % (_s(r2["total"]["median"]), _s(r2["total"]["min"]),
                                                 _s(r2["total"]["max"])))
    add("")
    add("Flat means the 2x peak is within 10%% (or 5 MiB) of the 1x peak. Files are read "
        "and written in blocks (1 MiB reads, %d KiB gzip members, at most %d in flight, "
        "1 MiB GCM chunks), so memory does not follow the input size." % (
            p["block_size"] // 1024, p["threads"] * 4))
    add("")
    add("### Archive sizes and correctness")
    add("")
    staged = d1["staged_bytes"]
    add("| Pipeline | .tar.gz stream | Encrypted file | .tar.gz / staged bytes |")
    add("|---|---:|---:|---:|")
    for name, summ in (("core (role)", role), ("core (early check)", early), ("shell", shell)):
        add("| %s | %d (%s) | %d | %.3f |" % (name, summ["archive_bytes"], _mb(summ["archive_bytes"]),
                                             summ["encrypted_bytes"], summ["archive_bytes"] / staged))
    add("")
    add("The core pipeline never writes the `.tar.gz` to disk; its size is that of the stream "
        "fed to the encryptor (the plaintext of the encrypted file). Both compress at deflate "
        "level 6: the core pipeline with libdeflate (deflate %s) in independent %d KiB gzip "
        "members on %d threads, tar through %s (zlib's algorithm) in one stream. The core "
        "archive is %+.2f%% the size of the shell's.%s" % (
            m["deflate"], p["block_size"] // 1024, p["threads"], m["gzip"],
            100.0 * (role["archive_bytes"] - shell["archive_bytes"]) / shell["archive_bytes"],
            _zlib_comparison(p)))
    add("")
    out.extend(_checks_table(p))
    out.extend(_profile_section(p, role, early, shell, ratio, ratio_early))
    if "playbooks" in info:
        out.extend(_playbook_section(info["playbooks"], role))
    add = out.append
    add("## Interpretation")
    add("")
    add(_interpretation(info, ratio, ratio_early))
    add("")
    return "\n".join(out)


def _checks_table(p):
    out = []
    add = out.append
    checks = p["checks"]
    cols = (("role", "core (role), 1x"), ("role_2x", "core (role), 2x"),
            ("early", "core (early check), 1x"))
    add("Each pipeline's last measured run is checked (`bench/core_pipeline.py`, mode `verify`):")
    add("")
    add("| Check | " + " | ".join(label for _name, label in cols) + " |")
    add("|---|" + "---|" * len(cols))

    def row(title, func):
        cells = []
        for name, _label in cols:
            c = checks.get(name)
            if not c:
                cells.append("not run")
            elif c.get("error"):
                cells.append("**failed**: %s" % c["error"][:200].replace("\n", " ").replace("|", "/"))
            else:
                cells.append(func(c))
        add("| %s | %s |" % (title, " | ".join(cells)))

    row("`decrypt_file`, `extract`, `verify_tree` against the archived manifest",
        lambda c: "%s, %d of %d files" % ("ok" if c.get("manifest_ok") else "**FAILED**",
                                          c.get("files_checked", 0), c.get("total_files", 0)))
    row("`integrity_check` of the extracted registry, row counts",
        lambda c: "%s; %s" % (c.get("registry_integrity"), ", ".join(
            "%s %d" % kv for kv in sorted((c.get("registry_rows") or {}).items()))))
    row("Decrypted archive byte-identical to `cap_archive.pack` of the same staging tree",
        lambda c: _yes(c.get("identical_to_pack")))
    row("SHA3-256 of the stream as returned (`plain_sha3_256`) = the decrypted archive's",
        lambda c: _yes(c.get("reported_matches")))
    row("`.sha3` sidecar (from the returned hash) = SHA3-256 of the encrypted file",
        lambda c: _yes(c.get("sidecar_ok")))
    add("")
    add("The early-check variant's decrypted archive is byte-identical to the role's: %s. "
        "The shell archive (`openssl enc -d`, `tar xzf`, every file against SHA3SUMS): %s."
        % (_yes(p.get("early_identical")),
           "ok (%d files)" % checks.get("shell", {}).get("files_checked", 0)
           if checks.get("shell", {}).get("ok") else "**failed**"))
    add("")
    return out


def _zlib_comparison(p):
    """What libdeflate saves against zlib on the same tar stream (profile rows), as a sentence."""
    prof = {row["key"]: row for row in p["profile"]["rows"]}
    lib, zl = prof.get("gzip_1"), prof.get("zlib_1")
    zl_bytes = p["profile"].get("zlib_archive_bytes")
    if not lib or not zl or not zl_bytes:
        return ""
    return (" On one thread the same tar stream costs %s s of CPU with libdeflate and %s s with "
            "zlib in one stream (Python's `gzip`, %d bytes): %.1f times less CPU for %+.2f%% in "
            "size." % (_s(lib["cpu_seconds"]), _s(zl["cpu_seconds"]), zl_bytes,
                       zl["cpu_seconds"] / lib["cpu_seconds"],
                       100.0 * (p["profile"]["archive_bytes"] - zl_bytes) / zl_bytes))


def _profile_section(p, role, early, shell, ratio, ratio_early):
    out = []
    add = out.append
    rows = p["profile"]["rows"]
    prof = {row["key"]: row for row in rows}
    threads = p["threads"]
    add("## 2. Where the core pipeline's time goes")
    add("")
    add("Each primitive alone on the 1x data (`bench/core_pipeline.py`, mode `profile`), in a "
        "fresh interpreter; CPU seconds count every thread. The last two rows are the role's "
        "packing call itself, with and without the concurrent integrity check.")
    add("")
    add("| Primitive | Wall s | CPU s | Where |")
    add("|---|---:|---:|---|")
    for row in rows:
        add("| %s | %s | %s | %s |" % (row["primitive"], _s(row["seconds"]), _s(row["cpu_seconds"]),
                                       row["note"]))
    add("")
    stages = {row["stage"]: row for row in role["stages"]}
    total = role["total"]["median"]
    pack = stages["archive+encrypt"]
    check, nocheck, withcheck = prof["integrity_check"], prof["package_nocheck"], prof["package_check"]
    added = withcheck["seconds"] - nocheck["seconds"]
    work_cpu = (prof["gzip_1"]["cpu_seconds"] + prof["sha3_archive"]["cpu_seconds"]
                + prof["gcm"]["cpu_seconds"] + check["cpu_seconds"])
    add("Reading the two tables together (medians of the role pipeline):")
    add("")
    add("- **archive+encrypt** (%s s, %s of the total, %s cores busy) is CPU work on every "
        "core: deflate (%s s of CPU on one thread, %s s wall on %d threads), the SHA3-256 of "
        "the stream (%s s), AES-256-GCM with the SHA3-256 of the ciphertext (%s s) and the "
        "integrity check (%s s on one core). That is %s s of CPU, at least %s s of wall time on "
        "%d cores. `package` alone takes %s s without `check_sqlite` and %s s with it: running "
        "the check beside the compression costs %s s of wall time instead of the %s s it takes "
        "alone, because the cores it uses are already busy deflating." % (
            _s(pack["median"]), _pct(pack["median"] / total), _busy(pack["cpu_seconds"], pack["median"]),
            _s(prof["gzip_1"]["cpu_seconds"]), _s(prof["gzip_n"]["seconds"]), threads,
            _s(prof["sha3_archive"]["seconds"]), _s(prof["gcm"]["seconds"]), _s(check["seconds"]),
            _s(work_cpu), _s(work_cpu / threads), threads, _s(nocheck["seconds"]),
            _s(withcheck["seconds"]), _s(added), _s(check["seconds"])))
    snap = stages["snapshot"]
    add("- **snapshot** (%s s, %s cores busy) is the online backup copy alone (%s s wall, %s s "
        "CPU alone): no integrity check and no hash any more." % (
            _s(snap["median"]), _busy(snap["cpu_seconds"], snap["median"]),
            _s(prof["snapshot"]["seconds"]), _s(prof["snapshot"]["cpu_seconds"])))
    man = stages["manifest"]
    add("- **manifest** (%s s, %s cores busy) is the only SHA3-256 pass over the registry "
        "(%s s) and the policy store (%s s), on one core; the other core has nothing to do "
        "while it runs." % (_s(man["median"]), _busy(man["cpu_seconds"], man["median"]),
                            _s(prof["sha3_registry"]["seconds"]), _s(prof["sha3_store"]["seconds"])))
    before = [row for name, row in stages.items() if name != "archive+encrypt"]
    add("- The stages before the packing take %s s together and keep at most %s cores busy "
        "(collect, snapshot, manifest, one after the other); only archive+encrypt uses all %d." % (
            _s(sum(row["median"] for row in before)),
            max(_busy(row["cpu_seconds"], row["median"]) for row in before), threads))
    add("")
    add("**The early-check variant** (`bench/core_pipeline.py`, mode `early`, public APIs only) "
        "is the role's sequence with one change: `cap_sqlite.integrity_check` is submitted to a "
        "thread right after the snapshot, so it starts beside the manifest (one core busy) "
        "instead of beside the compression (every core busy). Its archive+encrypt stage is what "
        "`cap_package.package` does (`write_archive` into a `HashingSink` into an "
        "`EncryptingWriter` over an `AtomicFile`), then waits for the check and commits only "
        "when it passed. Same archive bytes (checked above). It is kept because it measures the "
        "one overlap the role's order leaves out: in the role the check runs inside "
        "`cap_backup_archive`, which starts only after `cap_backup_manifest` has returned.")
    add("")
    out.extend(_stage_table(early, EARLY_STAGE_NOTES, {}))
    add("")
    waits = ""
    if early.get("check_seconds") is not None:
        waits = (" The integrity check took %s s on its thread (median) and archive+encrypt "
                 "waited %s s for it at the end." % (_s(early["check_seconds"]),
                                                    _s(early.get("check_wait_seconds", 0))))
    add("**Ratio early/shell (medians): %.2f** (role: %.2f); target <= %.1f: **%s**. Ratio of "
        "the fastest runs: %.2f. CPU time %s s (%.2f cores busy); background load median %s, "
        "max %s. Against the role: %+.2f s.%s" % (
            ratio_early, ratio, TARGET_RATIO, "met" if ratio_early <= TARGET_RATIO else "not met",
            early["total"]["min"] / shell["total"]["min"],
            _s(early["cpu_seconds"]), early["cpu_seconds"] / early["total"]["median"],
            _pct(early["foreign_share"]["median"]), _pct(early["foreign_share"]["max"]),
            early["total"]["median"] - role["total"]["median"], waits))
    add("")
    return out


def _playbook_section(pb, role):
    out = []
    add = out.append
    add("## 3. backup.yml on a sandbox of the same size")
    add("")
    seed = pb.get("seed") or {}
    timings = pb.get("seed_timings") or {}
    if pb.get("reused_sandbox"):
        add("Against an already running sandbox (`--sandbox-dir`), seeded with %s." % seed)
    else:
        add("`python -m sandbox up --state-dir <tmp> --entries %d --policies %d` took %.1f s, "
            "of which seeding %.1f s (signing %.1f s on a process pool, registry %.1f s); the "
            "sandbox is reused by every playbook run below and stopped at the end (%.1f s). "
            "Source registry %s, policy store %s." % (
                pb["entries"], pb["policies"], pb["up_seconds"], timings.get("total_seconds", 0),
                timings.get("sign_seconds", 0), timings.get("registry_seconds", 0),
                pb.get("down_seconds", 0), _mb(pb.get("registry_bytes") or 0),
                _mb(pb.get("policy_store_bytes") or 0)))
    add("")
    add("Each run: `ansible-playbook playbooks/backup.yml` with `CAP_SANDBOX_DIR` set and the "
        "`ansible.posix.json` stdout callback; a task's time is its `duration.end - "
        "duration.start` (from the task's start until its result, all loop items included). "
        "The sandbox inventory encrypts with a Vault Transit data key and uploads to both "
        "S3 buckets.")
    add("")
    add("| Run | Wall s | Tasks run (module calls, loop items counted) | Sum of task times s | "
        "Byte-work tasks s | "
        "Est. byte work s | Ansible overhead | Background load |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for index, run in enumerate(pb["backups"], 1):
        sp = run["split"]
        add("| %d | %s | %d (%d) | %s | %s | %s | %s (%s s) | %s%s |" % (
            index, _s(run["wall_seconds"]), sp["tasks_run"], sp["module_calls"], _s(sp["task_sum"]),
            _s(sp["byte_task_seconds"]), _s(sp["module_work_seconds"]), _pct(sp["overhead_share"]),
            _s(sp["overhead_seconds"]), _pct(run["foreign_share"]),
            " (attempt %d)" % run["attempts"] if run.get("attempts", 1) > 1 else ""))
    walls = [r["wall_seconds"] for r in pb["backups"]]
    add("")
    add("Median wall time %s s over %d runs." % (_s(statistics.median(walls)), len(walls)))
    add("")
    med = _median_run(pb["backups"])
    sp = med["split"]
    runs = pb["backups"]
    add("Byte-work modules, per run: calls, task time, estimated work (method below):")
    add("")
    add("| Work | Module | " + " | ".join("Run %d" % i for i in range(1, len(runs) + 1))
        + " | Same work through the API (section 1) |")
    add("|---|---|" + "---:|" * len(runs) + "---:|")
    api = {row["stage"]: row["median"] for row in role["stages"]}
    api_map = {"snapshot": "snapshot", "manifest": "manifest", "pack+encrypt": "archive+encrypt"}
    for label, action, _name in BYTE_WORK:
        cells = []
        for run in runs:
            entry = run["split"]["labels"].get(label)
            cells.append("%d, %s s, %s s" % (entry["invocations"], _s(entry["seconds"]),
                                             _s(entry["work"])) if entry else "-")
        if all(c == "-" for c in cells):
            continue
        ref = api_map.get(label)
        add("| %s | `%s` | %s | %s |" % (label, action, " | ".join(cells),
                                         ("%s s" % _s(api[ref])) if ref in api else ""))
    add("| **all byte work** | | " + " | ".join(
        "**%d, %s s, %s s**" % (sum(v["invocations"] for v in run["split"]["labels"].values()),
                                _s(run["split"]["byte_task_seconds"]),
                                _s(run["split"]["module_work_seconds"])) for run in runs) + " | |")
    add("")
    out.extend(_module_notes(runs, med, api))
    offsite = [i for i, run in enumerate(runs, 1) if "S3 copy" in run["split"]["labels"]]
    if offsite:
        add("Run %s also made this month's offsite copy (`cap_backup_s3_offsite_monthly`: the "
            "first backup of a month in each bucket is copied server-side to "
            "`offsite/YYYY-MM/`), hence its extra tasks and module calls."
            % " and ".join(str(i) for i in offsite))
        add("")
    other_count = sp["tasks_run"] - sum(
        1 for r in med["tasks"] if not r["skipped"] and any(r["action"] == a and (
            n is None or re.search(n, r["name"])) for _l, a, n in BYTE_WORK))
    add("Method: a module call costs Ansible a fixed amount whatever the module does (fork, "
        "AnsiballZ payload, interpreter start, imports, result handling). That amount is "
        "estimated per run as the median time per call of its near-empty modules (`stat`, "
        "`file`, `find`, `lineinfile`). Estimated byte work = each byte-work task's time minus "
        "its calls times that amount; Ansible overhead = wall time minus estimated byte work. "
        "In run %d (the median run) that is %d samples at **%s s per call**, and the overhead "
        "is everything else: the %d other tasks (%s s: facts, asserts, Vault reads, locks, "
        "metrics, the staging copies, bucket checks, the pointer objects), the per-call cost of "
        "the byte-work tasks, and %s s outside any task (start-up, playbook parsing, between "
        "tasks)." % (runs.index(med) + 1, sp["cheap_samples"], _s(sp["per_call_seconds"]),
                     other_count, _s(sp["other_task_seconds"]), _s(sp["outside_tasks_seconds"])))
    add("")
    others = sorted((r for r in med["tasks"] if not r["skipped"] and not any(
        r["action"] == a and (n is None or re.search(n, r["name"])) for _l, a, n in BYTE_WORK)),
        key=lambda r: -r["seconds"])[:6]
    add("Largest other tasks of that run: " + "; ".join(
        "%s (`%s`, %d call%s) %s s" % (r["name"].split(" : ", 1)[-1], r["action"], r["invocations"],
                                       "" if r["invocations"] == 1 else "s", _s(r["seconds"]))
        for r in others) + ".")
    add("")
    drill = pb.get("drill")
    if drill:
        out.extend(_drill_section(drill))
    return out


def _drill_section(drill):
    out = []
    add = out.append
    rep = drill["report"]
    obj = rep["objectives"]
    add("## 4. DR drill on the same sandbox")
    add("")
    add("`ansible-playbook playbooks/drill.yml -e cap_drill_report_dir=<tmp>` right after the "
        "last backup run; numbers from `<tmp>/%s/drill-report.json`." % rep["drill_id"])
    add("")
    add("| | Measured | Target | Met |")
    add("|---|---:|---:|---|")
    add("| RTO (restore step: fetch to smoke tests passed) | %s s | %d s | %s |" % (
        _s(obj["rto"]["measured_seconds"]), obj["rto"]["target_seconds"],
        "yes" if obj["rto"]["met"] else "no"))
    add("| RPO (age of the backup when the drill picked it) | %s s | %d s | %s |" % (
        _s(obj["rpo"]["measured_seconds"]), obj["rpo"]["target_seconds"],
        "yes" if obj["rpo"]["met"] else "no"))
    add("| Drill duration (report) | %s s | | |" % _s(rep["duration_seconds"]))
    add("| drill.yml wall time | %s s | | |" % _s(drill["wall_seconds"]))
    add("")
    counts = rep.get("counts", {})
    add("Result **%s**; %d differences; restored %s policies and %s registry entries "
        "(background load %s)." % (
            rep["result"], rep.get("differences_total", 0),
            counts.get("policies", {}).get("restored"),
            counts.get("registry_entries", {}).get("restored"), _pct(drill["foreign_share"])))
    add("")
    add("| Step | Title | Seconds | Share of the drill | Status |")
    add("|---|---|---:|---:|---|")
    for step in rep["steps"]:
        add("| %s | %s | %s | %s | %s |" % (step["name"], step["title"], _s(step["duration_seconds"]),
                                             _pct(step["duration_seconds"] / rep["duration_seconds"]),
                                             step["status"]))
    add("")
    top = sorted((r for r in drill["tasks"] if not r["skipped"]), key=lambda r: -r["seconds"])[:5]
    add("Largest tasks of the drill: " + "; ".join(
        "%s (`%s`) %s s" % (r["name"].split(" : ", 1)[-1], r["action"], _s(r["seconds"]))
        for r in top) + ".")
    add("")
    return out


def _module_notes(runs, med, api):
    """What the byte-work rows mean for the role as it is now, checked against the runs."""
    out = []
    add = out.append
    crypt = sum(run["split"]["labels"].get("encrypt", {}).get("invocations", 0) for run in runs)
    labels = med["split"]["labels"]
    pack = labels.get("pack+encrypt")
    if crypt:
        add("`cap_backup_crypt` still ran (%d calls over the %d runs)." % (crypt, len(runs)))
    else:
        add("`cap_backup_crypt` did not run: `cap_backup_archive` encrypts while it packs (with "
            "the Vault Transit data key, the wrapped key in the header) and runs the registry "
            "snapshot's integrity check beside the compression, so its row compares with the "
            "archive+encrypt stage of section 1%s. `cap_sqlite_snapshot` runs with `verify: "
            "false`, as the snapshot stage there." % (
                " (%s s of estimated work in run %d against %s s through the API)"
                % (_s(pack["work"]), runs.index(med) + 1, _s(api["archive+encrypt"]))
                if pack and "archive+encrypt" in api else ""))
    sha = labels.get("sha3sum")
    if sha:
        add(" `cap_sha3sum` ran %d times in run %d, only on the small sidecar files (`package.yml`'s "
            "list: the `.sha3` sidecar, the manifest copy and, when signing, its signature; once "
            "each, not per S3 destination); the archive's SHA3-256 comes from `cap_backup_archive`'s result "
            "without reading the archive again." % (sha["invocations"], runs.index(med) + 1))
    return ["".join(out), ""]


def _interpretation(info, ratio, ratio_early):
    p = info["pipelines"]
    role, early, shell = p["role"], p["early"], p["shell"]
    stages = {row["stage"]: row for row in role["stages"]}
    total = role["total"]["median"]
    prof = {row["key"]: row for row in p["profile"]["rows"]}
    a1, a2 = role["peak_rss_kib"], p["role_2x"]["peak_rss_kib"]
    met = ratio <= TARGET_RATIO
    target_s = TARGET_RATIO * shell["total"]["median"]
    text = ("On this %d-core machine the core pipeline as the role now runs it (snapshot without "
            "a check, manifest, then archive, encryption and the registry's integrity check in "
            "one `cap_package.package` call) took %s s against %s s for the naive shell "
            "pipeline, a ratio of %.2f: the %.1f target is %s" % (
                info["machine"]["affinity"], _s(total), _s(shell["total"]["median"]), ratio,
                TARGET_RATIO, "met" if met else "missed"))
    if met:
        text += ". "
    else:
        text += (" by %s s (%.2f of the shell time; the target is %s s). " % (
            _s(total - target_s), ratio - TARGET_RATIO, _s(target_s)))
    pack = stages["archive+encrypt"]
    added = prof["package_check"]["seconds"] - prof["package_nocheck"]["seconds"]
    busy = pack["cpu_seconds"] / pack["median"]
    threads = p["threads"]
    text += ("Most of it is archive+encrypt (%s s, %s of the total), which keeps %.2f of %d "
             "cores busy%s, and the integrity check running beside the compression adds %s s "
             "there (profile: `package` with and without `check_sqlite`). The snapshot and the "
             "manifest (%s s together) run one after the other on at most one core. " % (
                 _s(pack["median"]), _pct(pack["median"] / total), busy, threads,
                 ": it is bound by CPU, mostly deflate" if busy >= 0.85 * threads else "",
                 _s(added), _s(stages["snapshot"]["median"] + stages["manifest"]["median"])))
    text += ("Starting the check right after the snapshot, beside the manifest (the early-check "
             "variant, same public APIs, %s), takes %s s, a ratio of %.2f (%s). " % (
                 "byte-identical archive" if p["early_identical"] else "but a DIFFERENT archive",
                 _s(early["total"]["median"]), ratio_early,
                 "target met" if ratio_early <= TARGET_RATIO else "target missed"))
    text += ("Peak memory is %s at 1x and %s at 2x: %s and %s. " % (
        _mib(a1), _mib(a2), "below 100 MB" if max(a1, a2) * 1024 < TARGET_PEAK_MB * 1e6
        else "above 100 MB", "flat" if _flat(a1, a2) else "not flat"))
    pb = info.get("playbooks")
    if pb and pb.get("backups"):
        med = _median_run(pb["backups"])
        sp = med["split"]
        text += ("In the whole backup playbook (%s s) only about %s s is byte work; %d module "
                 "calls at about %s s each cost %s s, so at this size the playbook's time "
                 "follows its number of module calls more than the pipeline's speed. " % (
                     _s(med["wall_seconds"]), _s(sp["module_work_seconds"]), sp["module_calls"],
                     _s(sp["per_call_seconds"]), _s(sp["module_calls"] * sp["per_call_seconds"])))
        drill = pb.get("drill")
        if drill:
            rep = drill["report"]
            steps = sorted(rep["steps"], key=lambda s: -s["duration_seconds"])
            text += ("The drill %s with an RTO of %s s (target %d s); its longest steps are %s "
                     "(%s s) and %s (%s s)." % (
                         rep["result"], _s(rep["objectives"]["rto"]["measured_seconds"]),
                         rep["objectives"]["rto"]["target_seconds"], steps[0]["name"],
                         _s(steps[0]["duration_seconds"]), steps[1]["name"],
                         _s(steps[1]["duration_seconds"])))
    return text
