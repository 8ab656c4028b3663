"""Reference data sets of the benchmark, cached under bench/.data/.

A data set is a CAP data directory (the pod's /app) made by the sandbox seeder, so the
registry has the real schema and the policy store holds real compiled policies
(cap-policy-store.v1). Its parameters (seed, entries, policies and a hash of the
seeder's source) are stored beside it in dataset.json; a data set is made again only
when it is missing or when any of them changed.

Sizes, measured with seed 42: 200,000 entries and 5,600 policies give a registry of
about 121 MB (109 MB of entries, 12 MB of policy rows) and a policy store of about
9.9 MB; 400,000 entries and 11,200 policies twice that.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "bench", ".data")
# Bump when the layout written here changes.
LAYOUT_VERSION = 1

SETS = {
    # ~100 MB registry (200,000 entries with hash columns) and a ~10 MB policy store.
    "1x": {"seed": 42, "entries": 200000, "policies": 5600},
    # Twice the input, for the memory-flatness measurement.
    "2x": {"seed": 42, "entries": 400000, "policies": 11200},
    # --quick: a tenth, for developing the benchmark itself.
    "quick-1x": {"seed": 42, "entries": 20000, "policies": 560},
    "quick-2x": {"seed": 42, "entries": 40000, "policies": 1120},
}

# What the backup role stages from the data directory (roles/cap_backup, host platform,
# default cap_backup_config_files and cap_backup_doc_files): (glob relative to the
# data directory, directory inside the staging tree). The registry is not listed: it
# is snapshotted through SQLite, never copied.
STAGING_GLOBS = (
    ("build/policy_store.json", ""),
    ("keys/*.v1.json", "keys/metadata"),
    ("keys/trusted/*.pub", "keys/metadata/trusted"),
    ("helm/values-prod.yaml", "config/helm"),
    ("openapi/openapi.yaml", "config/openapi"),
    ("grafana/dashboards/*.json", "config/grafana/dashboards"),
    ("prometheus/alerts.yml", "config/prometheus"),
    ("docs/*.md", "docs"),
    ("runbooks/*.md", "runbooks"),
)
REGISTRY = "build/registry.sqlite"


def _seeder_hash():
    """SHA-256 over the seeder's sources: a changed seeder makes the data sets again."""
    digest = hashlib.sha256()
    sources = sorted(glob.glob(os.path.join(ROOT, "sandbox", "*.py")))
    for root, _dirs, files in sorted(os.walk(os.path.join(ROOT, "sandbox", "content"))):
        sources += [os.path.join(root, name) for name in sorted(files)]
    for path in sources:
        digest.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def parameters(name):
    params = dict(SETS[name])
    params["layout"] = LAYOUT_VERSION
    params["seeder_sha256"] = _seeder_hash()
    return params


def staging_plan(app_dir):
    """[(source path, relative path in the staging tree)] for everything but the registry."""
    plan = []
    for pattern, into in STAGING_GLOBS:
        matches = sorted(glob.glob(os.path.join(app_dir, pattern)))
        if not matches:
            raise RuntimeError("data set %s has no file matching %s" % (app_dir, pattern))
        for path in matches:
            name = os.path.basename(path)
            plan.append((path, "%s/%s" % (into, name) if into else name))
    return plan


def _describe(app_dir, params, seconds):
    plan = staging_plan(app_dir)
    registry = os.path.join(app_dir, REGISTRY)
    store = os.path.join(app_dir, "build", "policy_store.json")
    others = [src for src, _rel in plan if src != store]
    return {
        "parameters": params,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generate_seconds": round(seconds, 1),
        "registry_bytes": os.path.getsize(registry),
        "policy_store_bytes": os.path.getsize(store),
        "other_files": len(others),
        "other_bytes": sum(os.path.getsize(p) for p in others),
        "staged_files": len(plan) + 1,
        "staged_bytes": os.path.getsize(registry) + sum(os.path.getsize(p) for p, _ in plan),
    }


def ensure(name, say=print):
    """The data set `name`: (app_dir, description). Made when missing or outdated."""
    params = parameters(name)
    base = os.path.join(DATA_DIR, name)
    info_path = os.path.join(base, "dataset.json")
    app_dir = os.path.join(base, "app")
    try:
        with open(info_path) as handle:
            info = json.load(handle)
        if info.get("parameters") == params and os.path.isfile(os.path.join(app_dir, REGISTRY)):
            info["made_in_this_run"] = False
            return app_dir, info
        say("data set %s: parameters changed, making it again" % name)
    except (OSError, ValueError):
        say("data set %s: not cached yet, making it (%d entries, %d policies)"
            % (name, params["entries"], params["policies"]))
    os.makedirs(DATA_DIR, exist_ok=True)
    tmp = base + ".making"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    # The seeder's own command line, in a process of its own (it signs on a process pool).
    subprocess.run([sys.executable, "-m", "sandbox.seed", "--data-dir", os.path.join(tmp, "app"),
                    "--seed", str(params["seed"]), "--policies", str(params["policies"]),
                    "--entries", str(params["entries"]), "--format", "sqlite"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    info = _describe(os.path.join(tmp, "app"), params, time.monotonic() - started)
    with open(os.path.join(tmp, "dataset.json"), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
        handle.write("\n")
    shutil.rmtree(base, ignore_errors=True)
    os.rename(tmp, base)
    say("data set %s: made in %.1f s (registry %.1f MB, policy store %.1f MB)"
        % (name, info["generate_seconds"], info["registry_bytes"] / 1e6,
           info["policy_store_bytes"] / 1e6))
    info["made_in_this_run"] = True
    return app_dir, info
