"""Independent checks of what a backup run wrote, for the backup integration tests.

Everything here recomputes from the files themselves (hashlib SHA3-256, the sandbox's
Vault and keys) instead of trusting what the role reports, so a check fails when the
role writes something wrong.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

from ansible.module_utils import cap_archive, cap_crypt, cap_manifest

ARCHIVE_RE = re.compile(r"^cap-backup-(\d{8}-\d{6})\.tar\.gz\.enc$")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
CONTROL_FILES = ("backup.manifest.json", "backup.manifest.json.sig")

_last_stamp = [0]


def new_timestamp():
    """A backup timestamp (UTC, YYYYMMDD-HHMMSS) no earlier than now and never repeated in
    this process, so every run gets its own backup id and S3 prefix."""
    stamp = max(int(time.time()), _last_stamp[0] + 1)
    _last_stamp[0] = stamp
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(stamp))


def utc_stamp(epoch):
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(int(epoch)))


def sha3_hex(data):
    return hashlib.sha3_256(data).hexdigest()


def sha3_of_file(path):
    digest = hashlib.sha3_256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup_files(directory):
    """Names in directory that belong to a backup (archives and sidecars)."""
    return sorted(n for n in os.listdir(directory)
                  if n.startswith(("cap-backup", "manual-backup")))


# ---------------------------------------------------------------------------
# Decrypting and unpacking

def transit_unwrap(sandbox, wrapped_key):
    """The 32-byte data key behind a Transit-wrapped key, asked from the sandbox's Vault."""
    client = sandbox.vault_client()
    answer = client.secrets.transit.decrypt_data(
        name=sandbox["vault_transit_key"], ciphertext=wrapped_key,
        mount_point=sandbox["vault_transit_mount"])
    return base64.b64decode(answer["data"]["plaintext"])


def decrypt_archive(path, key, dest):
    """Decrypt a CAPCRYPT file with key into dest; returns the stream's description."""
    with open(path, "rb") as src, open(dest, "wb") as dst:
        return cap_crypt.decrypt_stream(src, dst, key, source=str(path))


def unpack(tar_gz, dest):
    """Extract with the project's safe extractor; returns its result (files, ...)."""
    return cap_archive.extract(str(tar_gz), str(dest))


def tree_hash_hex(root):
    """docs/hashing.md's tree hash of a directory, written out independently."""
    rels = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rels.append(os.path.relpath(full, root).replace(os.sep, "/"))
    rels.sort(key=lambda r: r.encode("utf-8"))
    lines = "".join("%s  %s\n" % (sha3_of_file(os.path.join(root, r)), r) for r in rels)
    size = sum(os.path.getsize(os.path.join(root, r)) for r in rels)
    return sha3_hex(lines.encode("utf-8")), size, len(rels)


def check_tree_against_manifest(manifest, root):
    """Every manifest entry's SHA3-256 and size recomputed under root, every file covered.

    Returns a list of problems (empty when everything matches).
    """
    problems = []
    covered_files, covered_dirs, counted = set(), [], 0
    for entry in manifest["files"]:
        path = entry["path"]
        full = os.path.join(root, path)
        if path.endswith("/"):
            covered_dirs.append(path)
            if not os.path.isdir(full):
                problems.append("%s: missing directory" % path)
                continue
            digest, size, count = tree_hash_hex(full)
            counted += count
        else:
            covered_files.add(path)
            if not os.path.isfile(full):
                problems.append("%s: missing file" % path)
                continue
            digest, size = sha3_of_file(full), os.path.getsize(full)
            counted += 1
        if entry["sha3_256"] != "0x" + digest:
            problems.append("%s: SHA3-256 0x%s, manifest says %s" % (path, digest, entry["sha3_256"]))
        if entry["size_bytes"] != size:
            problems.append("%s: %d bytes, manifest says %d" % (path, size, entry["size_bytes"]))
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel in CONTROL_FILES or rel in covered_files:
                continue
            if not any(rel.startswith(d) for d in covered_dirs):
                problems.append("%s: in the archive but not in the manifest" % rel)
    if counted != manifest["total_files"]:
        problems.append("total_files is %s, the entries cover %d files"
                        % (manifest["total_files"], counted))
    return problems


class OpenedBackup:
    """An encrypted backup decrypted (key unwrapped through Vault Transit) and extracted."""

    def __init__(self, sandbox, archive, workdir):
        self.archive = Path(archive)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.header = cap_crypt.read_header(str(archive))
        self.key = transit_unwrap(sandbox, self.header.wrapped_key)
        self.tar_gz = workdir / "archive.tar.gz"
        self.decrypted = decrypt_archive(archive, self.key, self.tar_gz)
        self.root = workdir / "extracted"
        self.extracted = unpack(self.tar_gz, self.root)
        self.tar_bytes = gzip.decompress(self.tar_gz.read_bytes())
        self.manifest = cap_manifest.load_manifest(str(self.root / "backup.manifest.json"))


# ---------------------------------------------------------------------------
# Secrets of the sandbox, to grep for

def _variants(value):
    """A secret as raw bytes and in the encodings it could be written in."""
    if isinstance(value, str):
        value = value.strip().encode("utf-8")
    out = {value}
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = None
    if raw and len(raw) >= 16:
        out.add(raw)
    for data in list(out):
        if len(data) <= 64 and not data.isascii():
            out.add(base64.b64encode(data))
            out.add(data.hex().encode("ascii"))
    return {v for v in out if len(v) >= 8}


def sandbox_secrets(sandbox):
    """name -> set of byte strings that must never appear in a backup, a log or a report."""
    secrets = {}
    for key in ("vault_token_file", "vault_root_token_file", "jwt_secret_file", "cap_token_file"):
        secrets[key] = _variants(sandbox.read_file(key))
    for key in ("s3_credentials_file", "s3_admin_credentials_file"):
        secrets[key + ":secret_key"] = _variants(json.loads(sandbox.read_file(key))["secret_key"])
    company = Path(sandbox["cap_source_data_dir"]) / "keys" / "company.ed25519"
    secrets["keys/company.ed25519"] = _variants(company.read_bytes())
    client = sandbox.vault_client()
    mount = sandbox["vault_kv_mount"]
    for path, field in ((sandbox["vault_company_key_path"], "private_key"),
                        (sandbox["vault_backup_signing_path"], "private_key"),
                        (sandbox["vault_backup_encryption_path"], "key")):
        data = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount,
                                                         raise_on_deleted_version=True)
        secrets["vault:%s:%s" % (path, field)] = _variants(data["data"]["data"][field])
    return secrets


def find_secrets(data, secrets):
    """Names of the secrets found in data (bytes or str)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return sorted(name for name, variants in secrets.items() if any(v in data for v in variants))


# ---------------------------------------------------------------------------
# Metrics and audit

def read_metrics(path):
    """{(name, labels-text): float} of a Prometheus text file; {} when it does not exist."""
    samples = {}
    if not os.path.exists(path):
        return samples
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = SAMPLE_RE.match(line)
            assert match, "not a sample line in %s: %r" % (path, line)
            samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return samples


def attempts(samples, status):
    return samples.get(("cap_backup_attempts_total", '{status="%s"}' % status), 0.0)


def promtool_check(path):
    """promtool check metrics on the file; returns the CompletedProcess."""
    with open(path, "rb") as handle:
        return subprocess.run(["promtool", "check", "metrics"], stdin=handle,
                              capture_output=True, text=True, timeout=60)


def read_audit(path):
    """The audit log's lines, each parsed as JSON; [] when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def metrics_path(sandbox):
    return os.path.join(str(sandbox.state_dir), "metrics", "cap_backup.prom")


def audit_path(sandbox):
    return os.path.join(str(sandbox.state_dir), "audit", "cap-backup-audit.jsonl")


# ---------------------------------------------------------------------------
# S3

def s3_object(sandbox, bucket, key):
    """(body bytes, metadata dict) of an object, or (None, None) when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        answer = sandbox.s3_client().get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None, None
        raise
    return answer["Body"].read(), answer.get("Metadata", {})


def latest_pointers(sandbox):
    """{bucket: latest.json bytes or None} for both sandbox buckets."""
    return {bucket: s3_object(sandbox, bucket, "backups/latest.json")[0]
            for bucket in (sandbox["s3_bucket"], sandbox["s3_replica_bucket"])}
