"""Shared by the restore, verify, DR scenario and drill tests (test_restore_*.py,
test_dr_scenarios.py, test_drill_role.py).

They run the project's playbooks against the session sandbox, open a backup the way
the runbook's step 1 does by hand (decrypt with the Transit data key, extract safely),
forge archives that exactly one of the restore's checks can catch, and look at what a
restore left behind without going through the roles under test: over HTTP, in the
SQLite files, in endpoints.json and on disk.
"""

from __future__ import annotations

import base64
import datetime
import glob
import json
import os
import shutil
import socket
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

import sandbox  # noqa: F401  (makes ansible.module_utils.cap_* importable)
from ansible.module_utils import cap_archive, cap_crypt, cap_manifest, cap_sign
from ansible.module_utils.cap_hashing import sha3_file
from tests.integration.playbook_runner import output_of, run_playbook

BACKUP_PREFIX = "backups/"
# A restore or drill on the sandbox takes about a minute; a slow CI machine gets ten.
PLAY_TIMEOUT = 900
HTTP_TIMEOUT = 30


# -- playbooks -------------------------------------------------------------------------

def play(sbx, playbook, extra_vars=None, timeout=PLAY_TIMEOUT):
    """Run a playbook against the sandbox; returns the CompletedProcess (never raises)."""
    return run_playbook(sbx.state_dir, playbook, extra_vars=extra_vars, timeout=timeout)


def play_ok(sbx, playbook, extra_vars=None):
    proc = play(sbx, playbook, extra_vars)
    assert proc.returncode == 0, output_of(proc)
    return proc


def text_of(proc):
    """Everything the play printed, with YAML line folding undone, for message searches."""
    return " ".join((proc.stdout + "\n" + proc.stderr).split())


# -- backups ---------------------------------------------------------------------------

@dataclass
class Backup:
    backup_id: str
    created_at: str
    archive: Path       # the encrypted archive on the sandbox's backup volume
    sidecar: Path
    latest: dict        # latest.json of the primary bucket right after the backup


def s3_get(sbx, key, bucket=None):
    obj = sbx.s3_client().get_object(Bucket=bucket or sbx["s3_bucket"], Key=key)
    return obj["Body"].read()


def s3_put(sbx, key, body, bucket=None):
    sbx.s3_client().put_object(Bucket=bucket or sbx["s3_bucket"], Key=key, Body=body)


def s3_keys(sbx, prefix, bucket=None):
    client = sbx.s3_client()
    listing = client.list_objects_v2(Bucket=bucket or sbx["s3_bucket"], Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def s3_delete_prefix(sbx, prefix, bucket=None):
    client = sbx.s3_client()
    for key in s3_keys(sbx, prefix, bucket):
        client.delete_object(Bucket=bucket or sbx["s3_bucket"], Key=key)


def latest_pointer(sbx):
    return json.loads(s3_get(sbx, BACKUP_PREFIX + "latest.json"))


def make_backup(sbx):
    """Run playbooks/backup.yml and describe the backup it made (latest.json names it)."""
    before = set(glob.glob(os.path.join(sbx["backup_dir"], "*.tar.gz.enc")))
    play_ok(sbx, "playbooks/backup.yml")
    latest = latest_pointer(sbx)
    archive = Path(sbx["backup_dir"]) / latest["archive"]
    assert archive.is_file() and str(archive) not in before, \
        "the backup playbook passed, but latest.json names %s, not a new archive" % archive
    return Backup(latest["backup_id"], latest["created_at"], archive,
                  Path(str(archive) + ".sha3"), latest)


def vault_secret(sbx, path):
    """The data of a KV v2 secret under the sandbox's mount."""
    answer = sbx.vault_client().secrets.kv.v2.read_secret_version(
        path=path, mount_point=sbx["vault_kv_mount"], raise_on_deleted_version=True)
    return answer["data"]["data"]


def transit_unwrap(sbx, wrapped_key):
    answer = sbx.vault_client().secrets.transit.decrypt_data(
        name=sbx["vault_transit_key"], ciphertext=wrapped_key, mount_point=sbx["vault_transit_mount"])
    return base64.b64decode(answer["data"]["plaintext"])


def transit_data_key(sbx):
    """A fresh data key from Vault Transit: (plaintext bytes, wrapped ciphertext)."""
    answer = sbx.vault_client().secrets.transit.generate_data_key(
        name=sbx["vault_transit_key"], key_type="plaintext", mount_point=sbx["vault_transit_mount"])
    return base64.b64decode(answer["data"]["plaintext"]), answer["data"]["ciphertext"]


def open_backup(sbx, archive, dest):
    """The runbook's step 1 by hand: decrypt with the data key Transit unwraps from the
    archive header, extract safely; returns the extracted directory. The decrypted
    archive is removed again."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    plain = dest / "archive.tar.gz"
    header = cap_crypt.read_header(str(archive))
    cap_crypt.decrypt_file(str(archive), str(plain), transit_unwrap(sbx, header.wrapped_key))
    try:
        cap_archive.extract(str(plain), str(dest / "backup"))
    finally:
        plain.unlink()
    return dest / "backup"


def signing_key(sbx):
    """The backup service's signing key from Vault: (Ed25519 seed, kid)."""
    secret = vault_secret(sbx, sbx["vault_backup_signing_path"])
    seed, _warning = cap_sign.load_private_key(value=secret["private_key"])
    return seed, secret["kid"]


def reseal(sbx, backup_dir, backup_id=None, created_at=None):
    """Rebuild the manifest of an extracted backup from its files (ids and dates may be
    changed) and sign it with the backup service's own key, as a genuine backup would be."""
    backup_dir = Path(backup_dir)
    manifest_path = backup_dir / cap_manifest.MANIFEST_NAME
    old = json.loads(manifest_path.read_text())
    manifest = cap_manifest.build_manifest(
        str(backup_dir), backup_id or old["backup_id"], created_at or old["created_at"],
        old["system_version"], created_by=old["created_by"], compression=old["compression"],
        encryption=old["encryption"])
    manifest_path.write_bytes(cap_manifest.serialize_manifest(manifest))
    seed, kid = signing_key(sbx)
    _doc, raw = cap_sign.sign_file(str(manifest_path), seed, kid)
    (backup_dir / cap_manifest.SIGNATURE_NAME).write_bytes(raw)
    return manifest


def write_sidecar(path):
    """<archive>.sha3 as the backup writes it (sha3sum -a 256 output)."""
    digest, _size = sha3_file(str(path))
    sidecar = Path(str(path) + ".sha3")
    sidecar.write_text("%s  %s\n" % (digest[2:], Path(path).name))
    return sidecar


def pack(backup_dir, dest, key=None, key_id=None, wrapped_key=None):
    """Pack an extracted backup into dest (.tar.gz) or, with a key, encrypt it into
    dest (.tar.gz.enc) as CAPCRYPT; writes the sidecar; returns the archive path."""
    dest = Path(dest)
    if key is None:
        cap_archive.pack(str(backup_dir), str(dest))
    else:
        plain = dest.with_name(dest.name + ".plain.tar.gz")
        cap_archive.pack(str(backup_dir), str(plain))
        try:
            cap_crypt.encrypt_file(str(plain), str(dest), key, key_id=key_id, wrapped_key=wrapped_key)
        finally:
            plain.unlink()
    write_sidecar(dest)
    return dest


def encrypt_like_backup(sbx, backup_dir, dest):
    """Pack and encrypt as the backup role does with Vault Transit (envelope encryption)."""
    key, wrapped = transit_data_key(sbx)
    return pack(backup_dir, dest, key=key, key_id="transit:%s/%s" % (sbx["vault_transit_mount"],
                                                                   sbx["vault_transit_key"]),
                wrapped_key=wrapped)


def upload_backup(sbx, archive, backup_id, created_at):
    """Put an archive and its sidecar where a backup puts them; returns the pointer a
    latest.json naming it would hold (it is not written here)."""
    prefix = "%s%s/" % (BACKUP_PREFIX, backup_id)
    # Never mix with (and later delete) a real backup of the same second.
    assert s3_keys(sbx, prefix) == [], "s3://%s/%s already holds a backup" % (sbx["s3_bucket"], prefix)
    archive = Path(archive)
    s3_put(sbx, prefix + archive.name, archive.read_bytes())
    s3_put(sbx, prefix + archive.name + ".sha3", Path(str(archive) + ".sha3").read_bytes())
    digest, size = sha3_file(str(archive))
    return {"version": "cap-backup-latest.v1", "backup_id": backup_id, "created_at": created_at,
            "prefix": prefix, "archive": archive.name, "archive_sha3_256": digest,
            "archive_size_bytes": size, "manifest": "", "signature": "",
            "encryption": "aes-256-gcm" if archive.name.endswith(".enc") else "none",
            "total_files": 0}


def backup_stamp(moment):
    """(backup_id, created_at) of a backup taken at the datetime moment (UTC)."""
    return (moment.strftime("backup-%Y%m%d-%H%M%S"), moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


# -- what a restore left behind --------------------------------------------------------

def targets(sbx):
    return dict(sbx.reload()["targets"])


def target_dir(sbx, name):
    return Path(sbx.state_dir) / "targets" / name


def source_build(sbx):
    return Path(sbx["cap_source_data_dir"]) / "build"


def fingerprint(directory):
    """SHA3-256 of every file below a directory, by relative path."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): sha3_file(str(p))[0]
            for p in sorted(directory.rglob("*")) if p.is_file()}


def one_report(report_dir, pattern):
    """(document, directory) of the single report matching pattern below report_dir."""
    found = sorted(Path(report_dir).glob(pattern))
    assert len(found) == 1, "expected one %s below %s, found %s" % (pattern, report_dir, found)
    return json.loads(found[0].read_text()), found[0].parent


def key_temp_files(restore_id):
    """Temporary private key copies of one restore left in the temporary directory."""
    return sorted(glob.glob(os.path.join(tempfile.gettempdir(), "cap-restore-key.%s.*" % restore_id)))


def key_material_below(*dirs):
    """Private keys and decrypted archives below the given directories."""
    found = []
    for directory in dirs:
        if os.path.isdir(directory):
            for pattern in ("*.ed25519", "archive.tar.gz", "*.tar.gz"):
                found += [str(p) for p in Path(directory).rglob(pattern) if p.is_file()]
    return sorted(found)


def registry_rows(path, table="registry_entries"):
    """Every row of a registry table, all columns, in a stable order."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        order = "id" if table == "registry_entries" else "policy_hash"
        return conn.execute("SELECT * FROM %s ORDER BY %s" % (table, order)).fetchall()
    finally:
        conn.close()


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the API, independently of cap_api_verify ------------------------------------------

class Api:
    """GET and POST against one instance with the sandbox's token; no proxies."""

    def __init__(self, base_url, token):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = "Bearer %s" % token

    def get(self, path):
        return self.session.get(self.base + path, timeout=HTTP_TIMEOUT)

    def post(self, path, doc):
        return self.session.post(self.base + path, json=doc, timeout=HTTP_TIMEOUT)

    def policy_hashes(self):
        answer = self.get("/api/v1/policies")
        assert answer.status_code == 200, answer.text
        return answer.json()["policy_hashes"]

    def policy(self, policy_hash):
        """(HTTP status, ETag header, JSON body or None)."""
        answer = self.get("/api/v1/policy/%s" % policy_hash)
        body = answer.json() if answer.status_code == 200 else None
        return answer.status_code, answer.headers.get("etag"), body

    def verify(self, manifest_hash):
        answer = self.post("/api/v1/verify", {"manifest_hash": manifest_hash})
        assert answer.status_code == 200, answer.text
        return answer.json()


def source_api(sbx):
    return Api(sbx["cap_source_url"], sbx.cap_token)


def store_records(path):
    """policy_hash -> record of a policy_store.json."""
    return {r["policy_hash"]: r for r in json.loads(Path(path).read_text())["policies"]}


def copy_file(src, dest):
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(str(src), str(dest))
    return Path(dest)

