"""One run of the core backup pipeline, in a process of its own (bench/run.py starts it).

    python bench/core_pipeline.py SPEC_JSON

SPEC_JSON is a JSON object: {"mode": "role" | "early" | "profile" | "verify", ...}.
The result is one JSON object on stdout. Run in a fresh interpreter, so that the peak
memory read here (VmHWM of /proc/self/status, reset per stage through
/proc/self/clear_refs) is this pipeline's alone and nothing inherited from the parent.

mode "role": the stages as the backup role runs them (roles/cap_backup, tasks
collect_host.yml, manifest.yml and package.yml), one public API call each:
  collect   copy the policy store, key metadata, configuration and documentation
  snapshot  cap_sqlite.snapshot(..., verify=False): the online backup copy only
            (no integrity check, no hash; both are left to the steps below)
  manifest  cap_manifest.build_manifest + serialize_manifest, written atomically
            (SHA3-256 of every staged file, the registry included, once)
  archive+encrypt  cap_package.package(stage, dest, key=..., key_id="bench",
            check_sqlite=["registry.sqlite"]): the deterministic archive streamed
            into cap_crypt.EncryptingWriter over a cap_fsutil.AtomicFile, with
            PRAGMA integrity_check of the staged registry on a thread while it
            compresses; committed only when the check passed. Then the .sha3 sidecar,
            written from the returned hash (the archive is not read again).

mode "early": the role's sequence with one difference, to measure what starting the
integrity check earlier would buy: cap_sqlite.integrity_check is submitted to a thread
right after the snapshot, so it runs beside the manifest as well as the archive. The
archive+encrypt stage uses the same building blocks as cap_package.package
(cap_archive.write_archive into a HashingSink into EncryptingWriter over AtomicFile),
waits for the check and commits only when it passed.

mode "profile": each primitive of the pipeline alone on the same data, for the
"where does the time go" table. mode "verify": decrypt, extract and check an archive
against its manifest, run the integrity check on the extracted registry, compare the
decrypted archive with cap_archive.pack of the same staging tree, and check the sidecar.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import resource
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sandbox  # noqa: E402,F401  (makes ansible.module_utils.cap_* importable)
from ansible.module_utils import (  # noqa: E402
    cap_archive,
    cap_crypt,
    cap_manifest,
    cap_package,
    cap_sqlite,
)
from ansible.module_utils.cap_fsutil import AtomicFile, atomic_write_bytes  # noqa: E402
from ansible.module_utils.cap_hashing import sha3_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataset import REGISTRY, staging_plan  # noqa: E402

CHECKED = "registry.sqlite"


def _status_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class Stages:
    """Times each stage and records the peak RSS reached during it."""

    def __init__(self):
        self.rows = []
        self.peak_kib = _status_kib("VmHWM")
        self.baseline_kib = self.peak_kib
        self.can_reset = _reset_peak()

    def run(self, name, func, *args, **kwargs):
        if self.can_reset:
            _reset_peak()
        started = time.perf_counter()
        cpu = time.process_time()
        result = func(*args, **kwargs)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        peak = _status_kib("VmHWM")
        self.peak_kib = max(self.peak_kib, peak)
        self.rows.append({"stage": name, "seconds": seconds, "cpu_seconds": cpu,
                          "peak_rss_kib": peak})
        return result

    def summary(self):
        return {"stages": self.rows, "total_seconds": sum(r["seconds"] for r in self.rows),
                "peak_rss_kib": self.peak_kib, "baseline_rss_kib": self.baseline_kib,
                "per_stage_peaks": self.can_reset,
                "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def collect(app_dir, stage):
    """Copy everything but the registry into the staging tree (the role's copy tasks)."""
    plan = staging_plan(app_dir)
    for src, rel in plan:
        dest = os.path.join(stage, rel)
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o600)
    return len(plan)


def write_manifest(stage, spec):
    manifest = cap_manifest.build_manifest(
        stage, spec["backup_id"], spec["created_at"], "bench", compression="gzip",
        encryption="aes-256-gcm")
    atomic_write_bytes(os.path.join(stage, cap_manifest.MANIFEST_NAME),
                       cap_manifest.serialize_manifest(manifest), mode=0o600)
    return manifest


def write_sidecar(dest, sha3_256):
    """The role's sidecar task: sha3sum format, from the hash the packing step returned."""
    atomic_write_bytes(dest + ".sha3", ("%s  %s\n" % (sha3_256[2:], os.path.basename(dest))).encode(),
                       mode=0o644)


def _key(spec):
    key, _warning = cap_crypt.load_key_file(spec["key_file"])
    return key


def _snapshot(app_dir, stage):
    return cap_sqlite.snapshot(os.path.join(app_dir, REGISTRY), os.path.join(stage, CHECKED),
                               verify=False)


def _pipeline_setup(spec):
    """The staging directory, archive path, key and level both pipeline modes use."""
    stage = os.path.join(spec["work_dir"], "stage")
    os.makedirs(stage, mode=0o700)
    dest = os.path.join(spec["work_dir"], "archive.tar.gz.enc")
    return stage, dest, _key(spec), spec.get("level", cap_archive.DEFAULT_LEVEL)


def run_role(spec):
    """The stages as the backup role runs them (one module, one API call, each)."""
    stage, dest, key, level = _pipeline_setup(spec)

    def archive_encrypt():
        result = cap_package.package(stage, dest, key=key, key_id="bench",
                                     check_sqlite=[CHECKED], level=level)
        write_sidecar(dest, result["sha3_256"])
        return result

    stages = Stages()
    stages.run("collect", collect, spec["app_dir"], stage)
    snap = stages.run("snapshot", _snapshot, spec["app_dir"], stage)
    manifest = stages.run("manifest", write_manifest, stage, spec)
    packed = stages.run("archive+encrypt", archive_encrypt)
    out = stages.summary()
    out.update(variant="role", encrypted=dest, sidecar=dest + ".sha3", stage_dir=stage,
               archive_bytes=packed["plain_size_bytes"], archive_sha3_256=packed["plain_sha3_256"],
               tar_bytes=packed["tar_bytes"], encrypted_bytes=packed["size_bytes"],
               encrypted_sha3_256=packed["sha3_256"],
               threads=packed.get("threads", cap_archive.default_threads()),
               chunks=packed["chunks"], snapshot_integrity=snap["integrity"],
               snapshot_sha3_256=snap["sha3_256"], total_files=manifest["total_files"],
               registry_rows=packed["sqlite_row_counts"][CHECKED])
    return out


def run_early(spec):
    """The role's sequence with the integrity check started before the manifest."""
    stage, dest, key, level = _pipeline_setup(spec)
    timing = {}

    def timed_check(path):
        started = time.perf_counter()
        try:
            return cap_sqlite.integrity_check(path)
        finally:
            timing["check_seconds"] = time.perf_counter() - started

    stages = Stages()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        stages.run("collect", collect, spec["app_dir"], stage)
        snap = stages.run("snapshot", _snapshot, spec["app_dir"], stage)
        # sqlite3 releases the GIL while the PRAGMA runs, so this uses the other core.
        check = pool.submit(timed_check, os.path.join(stage, CHECKED))
        manifest = stages.run("manifest", write_manifest, stage, spec)

        def archive_encrypt():
            out_file = AtomicFile(dest, 0o600)
            try:
                writer = cap_crypt.EncryptingWriter(out_file, key, key_id="bench")
                plain = cap_archive.HashingSink(writer)
                info = cap_archive.write_archive(stage, plain, level=level)
                writer.close()
                waited = time.perf_counter()
                problems, counts = check.result()
                timing["check_wait_seconds"] = time.perf_counter() - waited
                if problems:
                    raise RuntimeError("integrity check failed: %s" % "; ".join(problems[:5]))
                out_file.commit()
            finally:
                out_file.abort()
            sealed = writer.result()
            write_sidecar(dest, sealed["sha3_256"])
            return info, plain, sealed, counts

        info, plain, sealed, counts = stages.run("archive+encrypt", archive_encrypt)
    finally:
        pool.shutdown(wait=True)
    out = stages.summary()
    out.update(variant="early", encrypted=dest, sidecar=dest + ".sha3", stage_dir=stage,
               tar_bytes=info["tar_bytes"], archive_bytes=plain.size,
               archive_sha3_256=plain.sha3_256, encrypted_bytes=sealed["size_bytes"],
               encrypted_sha3_256=sealed["sha3_256"], threads=cap_archive.default_threads(),
               chunks=sealed["chunks"], snapshot_integrity=snap["integrity"],
               total_files=manifest["total_files"], registry_rows=counts, **timing)
    return out


class _Null:
    def write(self, data):
        return len(data)


PACKAGE_REPEATS = 3


def run_profile(spec):
    """Each primitive alone, on the data the pipeline reads and writes."""
    app_dir = spec["app_dir"]
    store = os.path.join(app_dir, "build", "policy_store.json")
    work = spec["work_dir"]
    stage = os.path.join(work, "stage")
    os.makedirs(stage, mode=0o700)
    collect(app_dir, stage)
    key = _key(spec)
    threads = cap_archive.default_threads()
    rows = []

    def sample(func):
        started = time.perf_counter()
        cpu = time.process_time()
        result = func()
        return result, time.perf_counter() - started, time.process_time() - cpu

    def add(label, name, samples, note):
        rows.append({"primitive": name, "key": label, "note": note, "repeats": len(samples),
                     "seconds": statistics.median(s[0] for s in samples),
                     "cpu_seconds": statistics.median(s[1] for s in samples)})

    def measure(label, name, func, note=""):
        result, wall, cpu = sample(func)
        add(label, name, [(wall, cpu)], note)
        return result

    copy = os.path.join(stage, CHECKED)
    measure("snapshot", "`cap_sqlite.snapshot(verify=False)`: online backup (pages=-1)",
            lambda: _snapshot(app_dir, stage), "the snapshot stage")
    measure("integrity_check", "PRAGMA integrity_check + row counts, alone",
            lambda: cap_sqlite.integrity_check(copy), "on a thread inside `package`, beside deflate")
    measure("sha3_registry", "SHA3-256 of the registry", lambda: sha3_file(copy),
            "in the manifest; the only pass over the registry besides the check and the archive")
    measure("sha3_store", "SHA3-256 of the policy store", lambda: sha3_file(store), "in the manifest")
    write_manifest(stage, spec)
    entries = cap_archive.scan_tree(stage)
    measure("tar", "tar stream only (no compression)",
            lambda: cap_archive.write_archive(stage, _Null(), compression="none", entries=entries),
            "tar headers and file reads")
    sink = cap_archive.HashingSink()
    gzip_name = "tar + gzip level 6 (libdeflate, %d KiB members) on %%d thread%%s" % (
        cap_archive.DEFAULT_BLOCK_SIZE // 1024)
    info = measure("gzip_1", gzip_name % (1, ""),
                   lambda: cap_archive.write_archive(stage, sink, threads=1, entries=entries),
                   "deflate cost of the archive")
    archive_bytes = sink.size
    measure("gzip_n", gzip_name % (threads, "s"),
            lambda: cap_archive.write_archive(stage, _Null(), entries=entries),
            "the compression inside `package`")
    zlib_sink = cap_archive.HashingSink()

    def zlib_one_stream():
        with gzip.GzipFile(fileobj=zlib_sink, mode="wb", compresslevel=6, mtime=0) as gz:
            cap_archive.write_archive(stage, gz, compression="none", entries=entries)

    measure("zlib_1", "tar + zlib level 6 in one stream on 1 thread (Python's `gzip`)",
            zlib_one_stream, "for comparison only: what the same tar stream costs with zlib")
    plain = os.path.join(work, "archive.tar.gz")
    with open(plain, "wb") as handle:
        cap_archive.write_archive(stage, handle, entries=entries)
    measure("sha3_archive", "SHA3-256 of the archive stream", lambda: sha3_file(plain),
            "`package` hashes the unencrypted stream (`plain_sha3_256`)")

    def gcm_only():
        writer = cap_crypt.EncryptingWriter(_Null(), key, key_id="bench")
        with open(plain, "rb") as handle:
            while True:
                block = handle.read(cap_crypt.DEFAULT_CHUNK_SIZE)
                if not block:
                    break
                writer.write(block)
        writer.close()
    measure("gcm", "AES-256-GCM + SHA3-256 of the ciphertext (`EncryptingWriter`)", gcm_only,
            "inside `package`; its hash is the sidecar's")
    os.unlink(plain)
    dest = os.path.join(work, "profile.tar.gz.enc")
    # The role's packaging step with and without the concurrent integrity check,
    # alternated, PACKAGE_REPEATS times each: the difference is what the check costs there.
    variants = (
        ("package_nocheck", "`cap_package.package` with the key, no `check_sqlite`",
         {}, "archive+encrypt without the integrity check"),
        ("package_check", "`cap_package.package` with the key and `check_sqlite`",
         {"check_sqlite": [CHECKED]}, "archive+encrypt as the role runs it"),
    )
    samples = {label: [] for label, _name, _kw, _note in variants}
    for _ in range(PACKAGE_REPEATS):
        for label, _name, kwargs, _note in variants:
            _result, wall, cpu = sample(lambda: cap_package.package(
                stage, dest, key=key, key_id="bench", **kwargs))
            samples[label].append((wall, cpu))
    for label, name, _kwargs, note in variants:
        add(label, name, samples[label], "%s (median of %d, alternated)" % (note, PACKAGE_REPEATS))
    return {"rows": rows, "archive_bytes": archive_bytes, "tar_bytes": info["tar_bytes"],
            "zlib_archive_bytes": zlib_sink.size, "threads": threads,
            "block_size": cap_archive.DEFAULT_BLOCK_SIZE}


def run_verify(spec):
    """Decrypt, extract and verify an archive; compare it with cap_archive.pack of the stage."""
    key = _key(spec)
    work = spec["work_dir"]
    plain = os.path.join(work, "verify.tar.gz")
    reference = os.path.join(work, "reference.tar.gz")
    out_dir = os.path.join(work, "verify-extract")
    dec = cap_crypt.decrypt_file(spec["encrypted"], plain, key)
    packed = cap_archive.pack(spec["stage_dir"], reference)
    extracted = cap_archive.extract(plain, out_dir)
    manifest = cap_manifest.load_manifest(os.path.join(out_dir, cap_manifest.MANIFEST_NAME))
    report = cap_manifest.verify_tree(manifest, out_dir)
    problems, counts = cap_sqlite.integrity_check(os.path.join(out_dir, CHECKED))
    encrypted_sha3 = sha3_file(spec["encrypted"])[0]
    with open(spec["sidecar"]) as handle:
        sidecar = handle.read()
    expected_sidecar = "%s  %s\n" % (encrypted_sha3[2:], os.path.basename(spec["encrypted"]))
    result = {"decrypted_sha3_256": dec["sha3_256"], "decrypted_bytes": dec["size_bytes"],
              "pack_sha3_256": packed["sha3_256"], "pack_bytes": packed["size_bytes"],
              "identical_to_pack": dec["sha3_256"] == packed["sha3_256"],
              "reported_plain_sha3_256": spec.get("archive_sha3_256"),
              "reported_matches": spec.get("archive_sha3_256") == dec["sha3_256"],
              "sidecar_ok": sidecar == expected_sidecar,
              "encrypted_sha3_256": encrypted_sha3,
              "members": extracted["members"],
              "files": extracted["file_count"], "manifest_ok": report["ok"],
              "files_checked": report["files_checked"], "total_files": manifest["total_files"],
              "registry_integrity": "ok" if not problems else problems[:3],
              "registry_rows": counts}
    shutil.rmtree(out_dir, ignore_errors=True)
    os.unlink(plain)
    os.unlink(reference)
    return result


def main():
    spec = json.loads(sys.argv[1])
    modes = {"role": run_role, "early": run_early, "profile": run_profile, "verify": run_verify}
    result = modes[spec["mode"]](spec)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
