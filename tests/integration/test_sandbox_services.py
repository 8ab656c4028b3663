"""The sandbox itself: what `python -m sandbox up` promises the backup and restore automation."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat

import hvac.exceptions
import pytest
import requests
from botocore.exceptions import ClientError

from ansible.module_utils import cap_keys
from sandbox import ports as sandbox_ports
from sandbox.services import proc_cmdline

from .conftest import assert_stopped, run_cli, start_sandbox

pytestmark = pytest.mark.sandbox

SECRET_FILE_KEYS = ("vault_token_file", "vault_root_token_file", "s3_credentials_file",
                    "s3_admin_credentials_file", "jwt_secret_file", "cap_token_file")


def http_get(url, token=None):
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": "Bearer %s" % token} if token else {}
    return session.get(url, headers=headers, timeout=10)


def kv_read(client, sandbox, path):
    answer = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point=sandbox["vault_kv_mount"], raise_on_deleted_version=True)
    return answer["data"]["data"]


# --- OpenBao -----------------------------------------------------------------

def test_vault_holds_the_seeded_company_key(sandbox):
    data = kv_read(sandbox.vault_client(), sandbox, "cap/keys/company")
    keys_dir = os.path.join(sandbox["cap_source_data_dir"], "keys")
    with open(os.path.join(keys_dir, "company.ed25519"), "rb") as handle:
        seed = handle.read()
    assert len(seed) == 32
    assert base64.b64decode(data["private_key"]) == seed
    assert data["kid"] == sandbox["company_kid"]
    published = cap_keys.load_key_tree(keys_dir)
    assert published[data["kid"]] == cap_keys.public_from_seed(seed)


def test_vault_holds_the_backup_keys(sandbox):
    client = sandbox.vault_client()
    encryption = kv_read(client, sandbox, "cap/backup/encryption")
    assert len(base64.b64decode(encryption["key"])) == 32
    assert encryption["key_id"] == sandbox["backup_encryption_key_id"]

    signing = kv_read(client, sandbox, "cap/backup/signing")
    assert signing["kid"] == sandbox["backup_signing_kid"]
    public = cap_keys.public_from_seed(base64.b64decode(signing["private_key"]))
    assert base64.b64decode(signing["public_key"]) == public
    trusted = cap_keys.load_public_keys(sandbox["backup_trusted_keys_dir"])
    assert trusted == {sandbox["backup_signing_kid"]: public}


def test_vault_token_uses_transit_for_envelope_encryption(sandbox):
    transit = sandbox.vault_client().secrets.transit
    mount, key = sandbox["vault_transit_mount"], sandbox["vault_transit_key"]
    datakey = transit.generate_data_key(name=key, key_type="plaintext", mount_point=mount)["data"]
    assert len(base64.b64decode(datakey["plaintext"])) == 32
    assert datakey["ciphertext"].startswith("vault:v1:")
    decrypted = transit.decrypt_data(name=key, ciphertext=datakey["ciphertext"], mount_point=mount)
    assert decrypted["data"]["plaintext"] == datakey["plaintext"]
    wrapped = transit.encrypt_data(name=key, plaintext=datakey["plaintext"], mount_point=mount)
    assert wrapped["data"]["ciphertext"].startswith("vault:v1:")


def test_vault_token_is_confined_to_its_policy(sandbox):
    client = sandbox.vault_client()
    me = client.auth.token.lookup_self()["data"]
    assert sandbox["vault_policy"] in me["policies"]
    assert "root" not in me["policies"]
    assert me["renewable"] is True
    assert me["ttl"] > 29 * 24 * 3600

    refused = [
        lambda: client.sys.list_mounted_secrets_engines(),
        lambda: client.sys.read_policy(sandbox["vault_policy"]),
        lambda: client.sys.enable_secrets_engine("kv", path="mine"),
        lambda: client.secrets.kv.v2.create_or_update_secret(
            path="cap/keys/company", secret={"private_key": "x"}, mount_point="secret"),
        lambda: client.secrets.kv.v2.read_secret_version(path="other/thing", mount_point="secret",
                                                          raise_on_deleted_version=True),
        lambda: client.secrets.kv.v2.list_secrets(path="cap", mount_point="secret"),
        lambda: client.secrets.transit.read_key(name="cap-backup", mount_point="transit"),
        lambda: client.secrets.transit.create_key(name="rogue", mount_point="transit"),
        lambda: client.auth.token.create(policies=["default"]),
    ]
    for attempt in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()


# --- SeaweedFS ---------------------------------------------------------------

def test_s3_buckets_accept_objects_with_the_generated_credentials(sandbox):
    s3 = sandbox.s3_client()
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {sandbox["s3_bucket"], sandbox["s3_replica_bucket"]} <= names
    for bucket in (sandbox["s3_bucket"], sandbox["s3_replica_bucket"]):
        key = "tests/sandbox-%s.bin" % os.getpid()
        body = os.urandom(4096)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        s3.delete_object(Bucket=bucket, Key=key)


def test_s3_refuses_wrong_credentials(sandbox):
    creds = sandbox.s3_credentials
    for access_key, secret_key in ((creds["access_key"], creds["secret_key"] + "x"),
                                   ("CAPUNKNOWN0000000000", creds["secret_key"])):
        client = sandbox.s3_client(access_key, secret_key)
        with pytest.raises(ClientError):
            client.put_object(Bucket=sandbox["s3_bucket"], Key="tests/refused", Body=b"x")
        with pytest.raises(ClientError):
            client.list_objects_v2(Bucket=sandbox["s3_bucket"])


def test_s3_backup_credentials_cannot_create_buckets(sandbox):
    with pytest.raises(ClientError) as refused:
        sandbox.s3_client().create_bucket(Bucket="not-for-backups")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


# --- CAP instances -----------------------------------------------------------

def test_source_instance_answers_with_the_token(sandbox):
    url = sandbox["cap_source_url"]
    assert http_get(url + "/healthz").status_code == 200
    assert http_get(url + "/readyz").status_code == 401
    ready = http_get(url + "/readyz", sandbox.cap_token)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "OK"
    fresh = sandbox.cli("token", "--ttl", "60").stdout.strip()
    assert http_get(url + "/readyz", fresh).status_code == 200


def test_target_up_starts_an_empty_instance_and_target_down_removes_it(sandbox):
    name = "cap-restore-test"
    record = json.loads(sandbox.cli("target-up", name, "--json").stdout)
    assert record["url"] == "http://127.0.0.1:%d" % record["port"]
    assert sandbox.reload()["targets"][name]["pid"] == record["pid"]
    assert http_get(record["url"] + "/healthz").status_code == 200
    assert http_get(record["url"] + "/readyz", sandbox.cap_token).status_code == 503
    tree = sorted(os.path.relpath(os.path.join(d, n), record["data_dir"])
                  for d, dirs, files in os.walk(record["data_dir"]) for n in dirs + files)
    assert tree == ["build", "keys", "keys/trusted", "logs"]

    again = sandbox.cli("target-up", name, check=False)
    assert again.returncode == 3
    assert "already runs" in again.stderr

    sandbox.cli("target-down", name)
    assert_stopped({name: record["pid"]}, [record["port"]])
    assert not os.path.exists(record["data_dir"])
    assert name not in sandbox.reload()["targets"]
    assert sandbox.cli("target-down", name).returncode == 0


# --- the sandbox as a whole --------------------------------------------------

def test_up_is_idempotent(sandbox):
    before = dict(sandbox.reload()["pids"])
    second = sandbox.cli("up")
    assert "already up" in second.stdout
    assert sandbox.reload()["pids"] == before
    assert all(proc_cmdline(pid) for pid in before.values())
    report = json.loads(sandbox.cli("status", "--json").stdout)
    assert report["status"] == "up"
    assert all(s["healthy"] for s in report["services"].values())


def test_every_listener_is_recorded_and_on_loopback_only(sandbox, sandbox_target):
    sandbox_target("cap-listen-test")
    recorded = set(sandbox.all_ports())
    seen = set()
    for service, pid in sandbox.all_pids().items():
        listeners = sandbox_ports.pid_listeners(pid)
        assert listeners, "%s (pid %d) listens nowhere" % (service, pid)
        for host, port in listeners:
            assert host == "127.0.0.1", "%s listens on %s:%d" % (service, host, port)
            assert port in recorded, "%s listens on unrecorded port %d" % (service, port)
            seen.add(port)
    assert seen == recorded


def test_secret_files_are_private_and_endpoints_holds_no_secret(sandbox):
    files = [sandbox[key] for key in SECRET_FILE_KEYS]
    files.append(os.path.join(sandbox["state_dir"], "seaweedfs", "s3-identities.json"))
    for path in files:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, "%s has mode %o" % (path, mode)
    with open(os.path.join(sandbox["state_dir"], "endpoints.json")) as handle:
        endpoints = handle.read()
    for key in ("vault_token_file", "vault_root_token_file", "jwt_secret_file", "cap_token_file"):
        assert sandbox.read_file(key) not in endpoints
    assert sandbox.s3_credentials["secret_key"] not in endpoints


def test_up_refuses_a_directory_that_is_not_a_sandbox(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run_cli(tmp_path, "up", check=False)
    assert proc.returncode == 1
    assert "not a sandbox state directory" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["precious.txt"]


@pytest.mark.slow
def test_second_sandbox_recovers_from_stale_state_and_down_leaves_nothing(sandbox, tmp_path):
    other = start_sandbox(tmp_path / "state", policies=5, entries=20)
    try:
        assert not set(other.all_ports()) & set(sandbox.all_ports())

        # A dead service makes the sandbox stale: status says so, up starts afresh.
        killed = other["pids"]["cap_source"]
        os.kill(killed, signal.SIGKILL)
        assert other.cli("status", check=False).returncode == 1
        restarted = other.cli("up")
        assert "stale" in restarted.stderr
        assert other.reload()["pids"]["cap_source"] != killed
        assert http_get(other["cap_source_url"] + "/readyz", other.cap_token).status_code == 200
        other.cli("target-up", "cap-drill-test")
        other.reload()
    finally:
        pids, ports = other.all_pids(), other.all_ports()
        other.cli("down")
    assert_stopped(pids, ports)
    assert not (other.state_dir / "endpoints.json").exists()
    assert sorted(os.listdir(other.state_dir)) == [".cap-sandbox", ".lock", "logs"]
    leftovers = [name for name in os.listdir("/tmp") if name.startswith("seaweedfs-")
                 and any(name.endswith("-%d.sock" % port) for port in ports)]
    assert not leftovers
    assert "not running" in other.cli("down").stdout
