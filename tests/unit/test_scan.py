"""cap_scan: private keys, secrets and PII found by file, line and kind, never by value."""

import base64
import datetime
import hashlib
import json
import os
import random
import re
import secrets
import sqlite3
import string
import textwrap
import tracemalloc

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ansible.module_utils.cap_keys import key_metadata, public_from_seed, public_pem
from ansible.module_utils.cap_scan import (
    KINDS,
    RULES,
    ScanError,
    Scanner,
    classify_key,
    finding_location,
    iban_is_valid,
    is_literal_secret,
    scan_paths,
    summary,
)
from ansible.module_utils.cap_sqlite import export_json

ALNUM = string.ascii_letters + string.digits
COMPANY_KEY = ("keys/company.ed25519", None, "private_key.ed25519_file", "ed25519_file_name")


def rand(n, alphabet=ALNUM):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def write(root, rel, content):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def scan(root, allow=None, **kwargs):
    return Scanner(allow=allow, **kwargs).scan([str(root)])


def where(report):
    """(file, line, kind, rule) of every finding."""
    return [(f["file"], f["line"], f["kind"], f["rule"]) for f in report["findings"]]


def text_at(path, finding):
    """The text at a finding's reported line and column (checks the position, not the value)."""
    line = path.read_text().splitlines()[finding["line"] - 1]
    return line[finding["column"] - 1:]


def legacy_vault_token():
    while True:
        body = rand(24)
        if body != body.lower() and body != body.upper():
            return "s." + body


def jwt():
    header = base64.urlsafe_b64encode(b'{"alg":"EdDSA","typ":"JWT"}').rstrip(b"=").decode()
    claims = json.dumps({"sub": rand(12), "iss": "cap-verifier", "exp": 1762776000}).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(os.urandom(64)).rstrip(b"=").decode()
    return "%s.%s.%s" % (header, payload, signature)


# --- private keys ------------------------------------------------------------

@pytest.fixture(scope="module")
def keys():
    return {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ec384": ec.generate_private_key(ec.SECP384R1()),
        "dsa": dsa.generate_private_key(key_size=1024),
    }


def pem(key, fmt, encryption=None):
    return key.private_bytes(serialization.Encoding.PEM, fmt,
                             encryption or serialization.NoEncryption()).decode()


PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
OPENSSH = serialization.PrivateFormat.OpenSSH


@pytest.mark.parametrize("name, fmt, encrypted, rule", [
    ("ed25519", PKCS8, False, "pem_pkcs8"),
    ("ed25519", OPENSSH, False, "pem_openssh"),
    ("ed25519", PKCS8, True, "pem_encrypted"),
    ("rsa", TRADITIONAL, False, "pem_rsa"),
    ("rsa", PKCS8, False, "pem_pkcs8"),
    ("ec", TRADITIONAL, False, "pem_ec"),
    ("dsa", TRADITIONAL, False, "pem_dsa"),
])
def test_pem_private_keys_of_every_flavour(tmp_path, keys, name, fmt, encrypted, rule):
    encryption = serialization.BestAvailableEncryption(b"pass-phrase") if encrypted else None
    write(tmp_path, "config/tls/server.key", "# issued 2025-11-10\n" + pem(keys[name], fmt, encryption))
    report = scan(tmp_path)
    # One finding per key: the header, not also the base64 body under it.
    assert where(report) == [("config/tls/server.key", 2, "private_key.pem", rule)]
    assert report["findings"][0]["column"] == 1


def test_pem_inside_a_json_string(tmp_path, keys):
    doc = {"kid": "company-2025", "key": pem(keys["ed25519"], PKCS8)}
    write(tmp_path, "export/key.json", json.dumps(doc))
    assert where(scan(tmp_path)) == [("export/key.json", 1, "private_key.pem", "pem_pkcs8")]


def test_pem_base64_wrapped_in_a_kubernetes_secret(tmp_path, keys):
    b64 = base64.b64encode(pem(keys["ec"], PKCS8).encode()).decode()
    write(tmp_path, "k8s/secret-tls.yaml", textwrap.dedent("""\
        apiVersion: v1
        kind: Secret
        metadata:
          name: cap-tls
        type: kubernetes.io/tls
        data:
          tls.key: %s
        """) % b64)
    assert where(scan(tmp_path)) == [("k8s/secret-tls.yaml", 7, "private_key.pem", "pem_base64")]


def test_certificates_and_public_keys_are_not_private_keys(tmp_path, keys):
    key = keys["ec"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cap-restore.example.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime(2025, 11, 10))
            .not_valid_after(datetime.datetime(2026, 11, 10))
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write(tmp_path, "config/tls/server.crt", cert_pem)
    write(tmp_path, "k8s/secret-tls.yaml",
          "data:\n  tls.crt: %s\n" % base64.b64encode(cert_pem).decode())
    spki = keys["rsa"].public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    write(tmp_path, "keys/rsa.pub.b64", base64.b64encode(spki).decode() + "\n")
    seed = os.urandom(32)
    write(tmp_path, "keys/trusted/company.pub", public_pem(public_from_seed(seed)))
    assert where(scan(tmp_path)) == []


@pytest.mark.parametrize("name, fmt, rule", [
    ("ed25519", PKCS8, "pkcs8_base64"),
    ("rsa", PKCS8, "pkcs8_base64"),
    ("ec", PKCS8, "pkcs8_base64"),
    ("rsa", TRADITIONAL, "pkcs1_rsa_base64"),
    ("ec", TRADITIONAL, "sec1_ec_base64"),
    ("ec384", TRADITIONAL, "sec1_ec_base64"),
])
def test_base64_der_private_keys(tmp_path, keys, name, fmt, rule):
    der = keys[name].private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
    write(tmp_path, "config/signer.yaml", "signer:\n  material: %s\n" % base64.b64encode(der).decode())
    assert where(scan(tmp_path)) == [("config/signer.yaml", 2, "private_key.der_base64", rule)]


def test_ed25519_files_by_name_whatever_their_content(tmp_path):
    write(tmp_path, "keys/company.ed25519", os.urandom(32))
    write(tmp_path, "keys/old/archive.ED25519", "not a key at all\n")
    report = scan(tmp_path)
    assert where(report) == [COMPANY_KEY,
                             ("keys/old/archive.ED25519", None, "private_key.ed25519_file",
                              "ed25519_file_name")]
    assert report["findings"][0]["offset"] is None
    assert finding_location(report["findings"][0]) == "keys/company.ed25519"


def test_raw_and_encoded_seed_files_with_key_like_names(tmp_path):
    write(tmp_path, "keys/signing.key", os.urandom(32))
    write(tmp_path, "keys/backup.seed", os.urandom(64))
    write(tmp_path, "keys/private-company", os.urandom(32))
    write(tmp_path, "keys/hex.key", os.urandom(32).hex() + "\n")
    write(tmp_path, "keys/b64.priv", base64.b64encode(os.urandom(32)).decode() + "\n")
    found = {(f, rule) for f, _, kind, rule in where(scan(tmp_path)) if kind == "private_key.raw_seed"}
    assert found == {("keys/signing.key", "raw_seed_bytes"), ("keys/backup.seed", "raw_seed_bytes"),
                     ("keys/private-company", "raw_seed_bytes"), ("keys/hex.key", "encoded_seed_file"),
                     ("keys/b64.priv", "encoded_seed_file")}


def test_seed_rules_leave_public_low_entropy_and_plain_files_alone(tmp_path):
    write(tmp_path, "keys/trusted/company.pub", os.urandom(32))
    write(tmp_path, "keys/company.public.key", os.urandom(32))
    write(tmp_path, "build/data.bin", os.urandom(32))
    write(tmp_path, "keys/zeros.key", bytes(32))
    write(tmp_path, "keys/readme.key", "Keys live in Vault, see docs/keys.md\n")
    write(tmp_path, "keys/big.key", os.urandom(33))
    assert [f for f in where(scan(tmp_path)) if f[2] == "private_key.raw_seed"] == []


@pytest.mark.parametrize("field", ["private_key", "secret_key", "seed", "privateKey",
                                   "private_key_b64"])
def test_json_key_document_with_private_field(tmp_path, field):
    doc = {"request_id": "5f0c", "data": {"data": {
        "kid": "company-2025", field: base64.b64encode(os.urandom(32)).decode()}}}
    path = write(tmp_path, "export/vault-company.json", json.dumps(doc, indent=2))
    report = scan(tmp_path)
    assert where(report) == [("export/vault-company.json", 6, "private_key.field", "private_field")]
    assert text_at(path, report["findings"][0]) == doc["data"]["data"][field] + '"'


def test_jwk_private_d(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    b64u = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    private = {"kty": "OKP", "crv": "Ed25519", "kid": "company-2025", "x": b64u(pub), "d": b64u(raw)}
    public = {"kty": "OKP", "crv": "Ed25519", "kid": "company-2025", "x": b64u(pub)}
    write(tmp_path, "keys/jwks-private.json", json.dumps({"keys": [private]}, indent=2))
    write(tmp_path, "keys/jwks.json", json.dumps({"keys": [public]}, indent=2))
    assert where(scan(tmp_path)) == [("keys/jwks-private.json", 8, "private_key.field",
                                      "jwk_private_d")]


def test_cap_key_metadata_is_public(tmp_path):
    seed = os.urandom(32)
    doc = key_metadata("company-2025", public_from_seed(seed), owner="CAP Engineering",
                       usage=["sign"], created_at="2025-11-10T12:00:00Z")
    write(tmp_path, "keys/company-2025.v1.json", json.dumps(doc, indent=2))
    write(tmp_path, "keys/trusted/company-2025.pub", public_pem(public_from_seed(seed)))
    assert where(scan(tmp_path)) == []


# --- tokens and secrets ---------------------------------------------------------------

def test_yaml_values_file_password(tmp_path):
    password = "hunter2-" + rand(12)
    path = write(tmp_path, "config/helm/values-prod.yaml", textwrap.dedent("""\
        replicaCount: 3
        image:
          repository: cap-agent
          tag: "0.11.0"
        database:
          host: db.cap.svc
          user: cap
          password: %s
        """) % password)
    report = scan(tmp_path)
    assert where(report) == [("config/helm/values-prod.yaml", 8, "secret.password_in_yaml",
                              "password_field")]
    assert text_at(path, report["findings"][0]) == password


def test_helm_values_references_and_placeholders_are_not_secrets(tmp_path):
    write(tmp_path, "config/helm/values-prod.yaml", textwrap.dedent("""\
        auth:
          existingSecret: cap-keys-public
          existingSecretPasswordKey: admin-password
          secretName: cap-keys-public
          password: ""
          adminPassword:
          dbPassword: null
          replicaPassword: ~
          apiToken: "{{ vault_api_token }}"
          clientSecret: ${CLIENT_SECRET}
          rootPassword: $ROOT_PASSWORD
          smtpPassword: <set-in-vault>
          ldapPassword: CHANGEME
          backupPassword: REDACTED
          webhookSecret: "***"
          token_ttl: 3600
          passwordFile: /run/secrets/db-password
          vaultPassword: !vault |
            $ANSIBLE_VAULT;1.1;AES256
            6238643932346131
          aliasPassword: *default_password
          secretKeys:
            adminPasswordKey: admin-password
          automountServiceAccountToken: false
        env:
          - name: DB_PASSWORD
            valueFrom:
              secretKeyRef:
                name: cap-db
                key: password
        volumes:
          - name: keys-volume
            secret:
              secretName: cap-keys-public
        # Password: ask the on-call SRE, it lives in Vault
        """))
    assert where(scan(tmp_path)) == []


def test_yaml_forms_kubernetes_env_block_scalar_anchor_and_comment(tmp_path):
    values = [rand(16) for _ in range(4)]
    path = write(tmp_path, "config/helm/values-staging.yaml", textwrap.dedent("""\
        env:
          - name: CAP_DB_PASSWORD
            value: "%s"
        signing:
          password: |
            %s
        smtp:
          password: &smtp_pw %s
        # token: %s
        """) % tuple(values))
    report = scan(tmp_path)
    assert [(line, kind) for _, line, kind, _ in where(report)] == [
        (3, "secret.password_in_yaml"), (6, "secret.password_in_yaml"),
        (8, "secret.password_in_yaml"), (9, "secret.password_in_yaml")]
    assert [text_at(path, f)[:16] for f in report["findings"]] == values


def test_env_file(tmp_path):
    path = write(tmp_path, "config/.env", textwrap.dedent("""\
        CAP_ENV=production
        DB_PASSWORD=%s
        export API_TOKEN="%s"
        EMPTY_PASSWORD=
        FROM_ENV_PASSWORD=${DB_PASSWORD}
        SUBST_TOKEN=$(vault kv get -field=token secret/cap/api)
        """) % (rand(20), rand(32)))
    report = scan(tmp_path)
    assert where(report) == [("config/.env", 2, "secret.password_in_env", "password_field"),
                             ("config/.env", 3, "secret.password_in_env", "token_field")]
    assert text_at(path, report["findings"][1]).startswith(path.read_text().split('"')[1])


def test_ini_file(tmp_path):
    write(tmp_path, "config/app.ini", textwrap.dedent("""\
        [database]
        host = db.cap.svc
        password = %s
        password_file = /run/secrets/db
        [smtp]
        ; password is set by the operator
        api_key=%s
        """) % (rand(14), rand(24)))
    assert where(scan(tmp_path)) == [("config/app.ini", 3, "secret.password_in_ini", "password_field"),
                                     ("config/app.ini", 7, "secret.password_in_ini", "api_key_field")]


def test_json_secret_fields(tmp_path):
    doc = {"oauth": {"client_id": "cap-verifier", "client_secret": rand(32), "token_url": "https://x"}}
    write(tmp_path, "config/oauth.json", json.dumps(doc, indent=2))
    assert where(scan(tmp_path)) == [("config/oauth.json", 4, "secret.password_in_json",
                                      "secret_field")]


def test_vault_tokens_in_a_docs_markdown_file(tmp_path):
    tokens = ["hvs.CAES" + rand(86), "hvb." + rand(120, ALNUM + "_-"), "hvr." + rand(24),
              legacy_vault_token()]
    write(tmp_path, "docs/vault-login.md", textwrap.dedent("""\
        # Logging in to Vault

        Export the token you got from `vault login`:

            export VAULT_TOKEN=<your token>
            vault kv get secret/cap/keys/company

        Last drill used %s (service), %s (batch),
        recovery %s and the legacy %s.
        Files: values.yaml, s.yaml, values.AbCdEfGhIjKlMnOpQrStUvWx1 and hvs.<token>.
        """) % tuple(tokens))
    assert where(scan(tmp_path)) == [
        ("docs/vault-login.md", 8, "secret.vault_token", "vault_service_token"),
        ("docs/vault-login.md", 8, "secret.vault_token", "vault_batch_token"),
        ("docs/vault-login.md", 9, "secret.vault_token", "vault_recovery_token"),
        ("docs/vault-login.md", 9, "secret.vault_token", "vault_legacy_token")]


def test_aws_key_pair(tmp_path):
    key_id = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
    secret = rand(40, ALNUM + "/+")
    write(tmp_path, "config/aws/credentials", textwrap.dedent("""\
        [default]
        aws_access_key_id = %s
        aws_secret_access_key = %s
        region = eu-central-1
        """) % (key_id, secret))
    sts = {"Credentials": {"AccessKeyId": "ASIA" + rand(16, string.ascii_uppercase + string.digits),
                           "SecretAccessKey": rand(40, ALNUM + "/+"), "SessionToken": rand(200)}}
    write(tmp_path, "logs/sts.json", json.dumps(sts, indent=1))
    assert where(scan(tmp_path)) == [
        ("config/aws/credentials", 2, "secret.aws_access_key_id", "aws_access_key_id"),
        ("config/aws/credentials", 3, "secret.aws_secret_access_key", "aws_secret_access_key"),
        ("logs/sts.json", 3, "secret.aws_access_key_id", "aws_access_key_id"),
        ("logs/sts.json", 4, "secret.aws_secret_access_key", "aws_secret_access_key"),
        ("logs/sts.json", 5, "secret.password_in_json", "token_field")]


def test_jwt_and_bearer_tokens_in_a_log(tmp_path):
    write(tmp_path, "logs/api.log", textwrap.dedent("""\
        2025-11-10T12:00:00Z INFO GET /healthz 200 from 10.0.0.12
        2025-11-10T12:00:01Z DEBUG GET /readyz headers={"Authorization": "Bearer %s"}
        2025-11-10T12:00:02Z DEBUG forwarded %s
        2025-11-10T12:00:03Z DEBUG curl -H "Authorization: Bearer %s" /api/v1/policy
        2025-11-10T12:00:04Z DEBUG refreshed bearer %s
        2025-11-10T12:00:05Z INFO bearer tokens are rotated hourly
        2025-11-10T12:00:06Z INFO curl -H "Authorization: Bearer $RESTORE_TOKEN" /readyz
        """) % (jwt(), jwt(), rand(24), rand(30) + "9"))
    assert where(scan(tmp_path)) == [
        ("logs/api.log", 2, "secret.jwt", "jwt"),
        ("logs/api.log", 3, "secret.jwt", "jwt"),
        ("logs/api.log", 4, "secret.bearer_token", "authorization_bearer"),
        ("logs/api.log", 5, "secret.bearer_token", "bearer_token")]


def test_password_in_url_is_not_also_an_email(tmp_path):
    write(tmp_path, "config/cap.env", "DATABASE_URL=postgres://cap:%s@db.cap.svc:5432/cap\n"
                                      "REPLICA_URL=postgres://cap:${DB_PASSWORD}@replica.cap.svc/cap\n"
                                      % rand(18))
    assert where(scan(tmp_path)) == [("config/cap.env", 1, "secret.password_in_url", "url_password")]


# --- PII ---------------------------------------------------------------------------

def test_email_in_an_sqlite_row_reported_by_offset(tmp_path):
    email = "%s.%s@corp-mail.de" % (rand(6).lower(), rand(8).lower())
    db = tmp_path / "registry.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE registry_entries (id INTEGER PRIMARY KEY, manifest_hash TEXT, kid TEXT)")
    conn.execute("CREATE TABLE submitters (id INTEGER PRIMARY KEY, contact TEXT, note TEXT)")
    for i in range(500):
        conn.execute("INSERT INTO registry_entries (manifest_hash, kid) VALUES (?, ?)",
                     ("0x" + hashlib.sha3_256(str(i).encode()).hexdigest(), "company-2025"))
    conn.execute("INSERT INTO submitters (contact, note) VALUES (?, ?)", (email, "first run"))
    conn.commit()
    conn.close()
    report = scan(tmp_path)
    assert where(report) == [("registry.sqlite", None, "pii.email", "email")]
    offset = report["findings"][0]["offset"]
    assert db.read_bytes()[offset:offset + len(email)] == email.encode()
    assert finding_location(report["findings"][0]) == "registry.sqlite@%d" % offset


def test_vault_token_inside_sqlite_found(tmp_path):
    token = "hvs.CAES" + rand(60)
    db = tmp_path / "policy.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE settings (name TEXT, value TEXT)")
    conn.executemany("INSERT INTO settings VALUES (?, ?)", [("ttl", "3600"), ("upstream", token)])
    conn.commit()
    conn.close()
    report = scan(tmp_path)
    assert where(report) == [("policy.sqlite", None, "secret.vault_token", "vault_service_token")]
    offset = report["findings"][0]["offset"]
    assert db.read_bytes()[offset:offset + len(token)] == token.encode()


def test_values_glued_to_the_previous_sqlite_column(tmp_path):
    db = tmp_path / "billing.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE payouts (id INTEGER PRIMARY KEY, note TEXT, iban TEXT, name TEXT, "
                 "phone TEXT)")
    conn.execute("INSERT INTO payouts (note, iban, name, phone) VALUES (?, ?, ?, ?)",
                 ("refund", "DE89370400440532013000", "Bob", "+49 30 1234567"))
    conn.execute("INSERT INTO payouts (note, iban, name, phone) VALUES (?, ?, ?, ?)",
                 ("wrong", "DE89370400440532013001", "Eve", "n/a"))
    conn.commit()
    conn.close()
    report = scan(tmp_path)
    assert [kind for _, _, kind, _ in where(report)] == ["pii.iban", "pii.phone"]
    data = db.read_bytes()
    assert data[report["findings"][0]["offset"]:].startswith(b"DE89370400440532013000")
    assert data[report["findings"][1]["offset"]:].startswith(b"+49 30 1234567")


def test_emails_in_markdown(tmp_path):
    write(tmp_path, "docs/contacts.md", textwrap.dedent("""\
        Escalation: cap-engineering@example.com, or Alice.Smith+cap@Corp-Mail.DE (mailto:bob@corp.io).
        Not addresses: git@github.com:cap/verifier.git, icon@2x.png, left-pad@1.3.0,
        ssh://git@github.com/cap/verifier, user@localhost, cap-agent@sha256:0afcb402e74ff6a1.
        """))
    assert where(scan(tmp_path)) == [("docs/contacts.md", 1, "pii.email", "email")] * 3


@pytest.mark.parametrize("number", [
    "+49 30 1234567", "+1 (555) 123-4567", "+4915123456789", "+44 20 7946 0958",
    "+49 (0)30 1234567", "030 1234567", "(030) 1234567", "030/1234567", "0151-23456789",
    "(555) 123-4567", "555-123-4567", "555.123.4567", "01 23 45 67 89", "0049 30 12345678",
])
def test_phone_numbers(tmp_path, number):
    path = write(tmp_path, "docs/oncall.md", "On-call phone: %s (weekdays)\n" % number)
    report = scan(tmp_path)
    assert [kind for _, _, kind, _ in where(report)] == ["pii.phone"]
    assert text_at(path, report["findings"][0]).startswith(number)


@pytest.mark.parametrize("text", [
    "version 0.11.0", "v1.2.3-rc.1", "1.0.0+20130313144700", "created 2025-11-10T12:00:00Z",
    "at 2025-11-10 12:00:00.123456", "offset +01:00", "tz 2025-11-10T12:00:00+0100",
    "host 192.168.100.200", "host 10.0.0.1", "epoch 1731240000", "size 10485760",
    "delta +10485760 bytes", "backup-20251110-120000", "id 123e4567-e89b-12d3-a456-426614174000",
    "hash 0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f",
    "mode 0600 0644", "date +2025-11-10", "call 000-000-0000", "etag \"0afcb402e74ff6a1\"",
])
def test_numbers_that_are_not_phone_numbers(tmp_path, text):
    write(tmp_path, "docs/notes.md", "Note: %s.\n" % text)
    assert where(scan(tmp_path)) == []


def test_ibans_validated_by_checksum(tmp_path):
    write(tmp_path, "docs/billing.md", textwrap.dedent("""\
        Refunds to DE89370400440532013000 or DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432.
        Not IBANs: DE89370400440532013001 (checksum), DE8937040044053201300 (length),
        ZZ89370400440532013000 (country), XDE89370400440532013000 (inside a word).
        """))
    assert where(scan(tmp_path)) == [("docs/billing.md", 1, "pii.iban", "iban")] * 3


@pytest.mark.parametrize("iban, ok", [
    ("DE89370400440532013000", True), ("DE89 3704 0044 0532 0130 00", True),
    ("GB82WEST12345698765432", True), ("NO9386011117947", True),
    ("DE89370400440532013001", False), ("DE8937040044053201300", False), ("XX00", False),
])
def test_iban_checksum(iban, ok):
    assert iban_is_valid(iban) is ok


# --- what must stay quiet ------------------------------------------------------------

RUNBOOK_EXCERPT = textwrap.dedent("""\
    ## Restore Steps
    ```bash
    vault kv get -format=json secret/cap/keys/company | \\
      jq -r '.data.data.private_key' | \\
      base64 -d > /tmp/company.ed25519
    curl -s -k -X POST \\
      -H "Authorization: Bearer $RESTORE_TOKEN" \\
      -H "Content-Type: application/json" \\
      -d @/restore/policy_store.json \\
      https://cap-restore.example.com/api/v1/policy/restore
    POLICY_HASH="0x0afcb402e74ff6a11601863fc4ae2f2d756124db71bc703f5889ecefcd371ff4"
    ```
    **Expected:** `{"status": "OK", "version": "0.11.0", "build_hash": null}`
    etag: "0afcb402e74ff6a1"
          - name: keys-volume
            secret:
              secretName: cap-keys-public
    - Retention: 7 days (168 backups at hourly frequency)
    - Replication: Cross-region (us-east-1 -> eu-central-1)
    5. **Escalate to Engineering**
       - Contact: cap-engineering@example.com
    **RTO:** 30-45 minutes, backup-20251110-120000, cap_backup_duration_seconds
    ./scripts/backup.sh --encrypt --encryption-key /keys/backup.key
    """)

MANIFEST = {
    "version": "backup.manifest.v1", "created_at": "2025-11-10T12:00:00Z",
    "created_by": "cap-backup-automation", "backup_id": "backup-20251110-120000",
    "system_version": "0.11.0",
    "files": [{"path": "registry.sqlite", "size_bytes": 10485760, "type": "database",
               "sha3_256": "0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f"},
              {"path": "keys/metadata/", "size_bytes": 102400, "type": "key_metadata",
               "sha3_256": "0x83a8779ddef4567890123456789012345678901234567890123456789012345a"}],
    "total_files": 15, "total_size_bytes": 12582912, "compression": "gzip",
    "encryption": "aes-256-gcm",
}


def registry_tree(root, rows=2000):
    """A realistic registry (SQLite and its JSON form) of hashes, KIDs and signatures."""
    rng = random.Random(42)
    db = root / "registry.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE registry_entries (id INTEGER PRIMARY KEY, manifest_hash TEXT, "
                 "proof_hash TEXT, policy_hash TEXT, kid TEXT, signature TEXT, created_at TEXT)")
    for i in range(rows):
        h = lambda: "0x%064x" % rng.getrandbits(256)  # noqa: E731
        sig = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(64))).decode()
        conn.execute("INSERT INTO registry_entries (manifest_hash, proof_hash, policy_hash, kid, "
                     "signature, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (h(), h(), h(), "company-2025", sig,
                      "2025-11-%02dT%02d:%02d:00Z" % (1 + i % 28, i % 24, i % 60)))
    conn.commit()
    conn.close()
    export_json(str(db), str(root / "registry.json"))


def test_a_clean_backup_tree_has_no_findings(tmp_path):
    registry_tree(tmp_path)
    seed = os.urandom(32)
    write(tmp_path, "backup.manifest.json", json.dumps(MANIFEST, indent=2))
    write(tmp_path, "keys/metadata/company.v1.json", json.dumps(key_metadata(
        "company", public_from_seed(seed), "CAP Engineering", ["sign"], "2025-11-10T12:00:00Z")))
    write(tmp_path, "keys/trusted/company.pub", public_pem(public_from_seed(seed)))
    write(tmp_path, "docs/backup-restore-runbook.md", RUNBOOK_EXCERPT)
    report = scan(tmp_path, allow=["cap-engineering@example.com"])
    assert where(report) == []
    assert report["allowed"] == 1
    assert report["files_scanned"] == 6


# --- allow list --------------------------------------------------------------

@pytest.fixture
def pii_tree(tmp_path):
    write(tmp_path, "docs/runbook.md", "Contact: cap-engineering@example.com\nOps: ops@example.com\n"
                                       "Phone: +49 30 1234567\n")
    write(tmp_path, "registry.json", '{"rows": [\n["0xab", "submitter@example.com"],\n'
                                     '["0xcd", "alice@corp-mail.de"]\n]}\n')
    write(tmp_path, "keys/company.ed25519", os.urandom(32))
    return tmp_path


def test_allow_exact_value_and_domain_glob(pii_tree):
    report = scan(pii_tree, allow=["CAP-Engineering@example.com"])
    assert ("docs/runbook.md", 1, "pii.email", "email") not in where(report)
    assert report["total"] == 5 and report["allow_hits"] == [1]
    report = scan(pii_tree, allow=["*@example.com"])
    assert where(report) == [("docs/runbook.md", 3, "pii.phone", "phone_international"),
                             COMPANY_KEY,
                             ("registry.json", 3, "pii.email", "email")]
    assert report["allowed"] == 3


def test_allow_kind_in_a_path(pii_tree):
    report = scan(pii_tree, allow=[{"kind": "pii.email", "path": "docs/*", "reason": "contacts"}])
    assert [(f, line) for f, line, kind, _ in where(report) if kind == "pii.email"] == [
        ("registry.json", 2), ("registry.json", 3)]
    report = scan(pii_tree, allow=[{"kind": "pii.*", "path": "docs/*"}])
    assert ("docs/runbook.md", 3, "pii.phone", "phone_international") not in where(report)


def test_allow_rule_and_absolute_path(pii_tree):
    report = scan(pii_tree, allow=[{"rule": "phone_international"},
                                   {"path": str(pii_tree / "keys") + "/*"}])
    assert report["allow_hits"] == [1, 1]
    assert {kind for _, _, kind, _ in where(report)} == {"pii.email"}


def test_value_globs_do_not_match_whole_file_findings(pii_tree):
    report = scan(pii_tree, allow=["*.ed25519", {"value": "*company*"}])
    assert COMPANY_KEY in where(report)
    assert report["allow_hits"] == [0, 0]


@pytest.mark.parametrize("entry, message", [
    ("*", "matches every finding"),
    ({"path": "**"}, "matches every finding"),
    ({}, "at least one of"),
    ({"kind": "pii.mail"}, "matches no kind"),
    ({"rule": "emial"}, "matches no rule"),
    ({"colour": "red"}, "unknown keys colour"),
    ({"kind": ""}, "non-empty string"),
    (42, "string (a value glob) or a dict"),
])
def test_bad_allow_entries_are_refused(tmp_path, entry, message):
    with pytest.raises(ScanError, match=re.escape(message)):
        Scanner(allow=["ok@example.com", entry])


# --- engine ---------------------------------------------------------------------

def mixed_file(root, lines=3000):
    """Hash lines with a secret every 97 lines, in several shapes; return the expected findings."""
    rng = random.Random(7)
    out, expected = [], []
    shapes = [
        ("  password: %s" % rand(14), "secret.password_in_yaml"),
        ("contact %s@corp-mail.de today" % rand(8).lower(), "pii.email"),
        ("token %s in text" % ("hvs.CAES" + rand(40)), "secret.vault_token"),
        ("iban DE89 3704 0044 0532 0130 00 end", "pii.iban"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private_key.pem"),
        ("jwt %s" % jwt(), "secret.jwt"),
    ]
    for i in range(1, lines + 1):
        if i % 97 == 0:
            text, kind = shapes[(i // 97) % len(shapes)]
            expected.append((i, kind))
        else:
            text = '  - ["0x%064x", "0x%064x", "company-2025", %d]' % (
                rng.getrandbits(256), rng.getrandbits(256), rng.getrandbits(20))
        out.append(text)
    write(root, "registry.yaml", "\n".join(out) + "\n")
    return expected


@pytest.mark.parametrize("chunk_size, overlap", [(200, 512), (1000, 512), (4096, 1024),
                                                 (1 << 20, 4096)])
def test_block_boundaries_never_lose_or_repeat_a_finding(tmp_path, chunk_size, overlap):
    expected = mixed_file(tmp_path)
    reference = Scanner().scan([str(tmp_path)])["findings"]
    report = Scanner(chunk_size=chunk_size, overlap=overlap).scan([str(tmp_path)])
    assert [(f["line"], f["kind"]) for f in report["findings"]] == expected
    assert report["findings"] == reference


def test_one_long_line_is_scanned_in_blocks(tmp_path):
    token = "hvs.CAES" + rand(50)
    row = '"0x%s",' % ("ab" * 32)
    head = row * 40000
    body = '{"rows": [%s"submitter %s@corp-mail.de", "%s", %s"end"]}' % (
        head, rand(8).lower(), token, head)
    write(tmp_path, "policy_store.json", body)
    report = Scanner(chunk_size=65536).scan([str(tmp_path)])
    assert [(f["line"], f["kind"]) for f in report["findings"]] == [(1, "pii.email"),
                                                                    (1, "secret.vault_token")]
    assert report["findings"][1]["column"] == body.index(token) + 1
    assert report["findings"][1]["offset"] == body.index(token)


def test_binary_file_reports_offsets(tmp_path):
    token = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
    data = (os.urandom(5000).replace(b"A", b"\x00") + b"\x00" + token.encode() + b"\x00"
            + os.urandom(3000))
    write(tmp_path, "build/blob.bin", data)
    report = scan(tmp_path)
    finding = [f for f in report["findings"] if f["kind"] == "secret.aws_access_key_id"]
    assert len(finding) == 1 and finding[0]["line"] is None and finding[0]["column"] is None
    assert data[finding[0]["offset"]:].startswith(token.encode())


def test_memory_stays_bounded_for_a_large_file(tmp_path):
    path = tmp_path / "registry.json"
    with open(path, "w") as handle:
        rng = random.Random(3)
        while handle.tell() < 24 * 1024 * 1024:
            handle.write('["0x%064x", "company-2025", "2025-11-10T12:00:00Z"],\n'
                         % rng.getrandbits(256))
        handle.write('["0x00", "late@corp-mail.de"]\n')
    tracemalloc.start()
    try:
        report = scan(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f["kind"] for f in report["findings"]] == ["pii.email"]
    assert peak < 16 * 1024 * 1024, "peak %d bytes for a %d byte file" % (peak, path.stat().st_size)


def test_megabytes_of_hex_hashes_give_no_finding(tmp_path):
    # Speed on the 100 MB registry is measured by `make bench`, not asserted here.
    path = tmp_path / "registry.json"
    rng = random.Random(5)
    row = '["0x%064x", "0x%064x", "0x%064x", "company-2025", "2025-11-10T12:00:00Z", 1048576],\n'
    line = "".join(row % (rng.getrandbits(256), rng.getrandbits(256), rng.getrandbits(256))
                   for _ in range(4000))
    with open(path, "w") as handle:
        while handle.tell() < 8 * 1024 * 1024:
            handle.write(line)
    report = scan(tmp_path)
    assert report["total"] == 0 and report["bytes_scanned"] >= 8 * 1024 * 1024


def test_findings_list_is_capped_but_counts_are_complete(tmp_path):
    write(tmp_path, "export/users.csv", "".join("%d,user%d@corp-mail.de\n" % (i, i) for i in range(50)))
    report = scan(tmp_path, max_findings=10)
    assert len(report["findings"]) == 10 and report["findings_truncated"]
    assert report["total"] == 50 and report["counts"]["pii.email"] == 50
    assert summary(report, limit=2) == ("50 findings: export/users.csv:1 pii.email; "
                                        "export/users.csv:2 pii.email; and 48 more")


def test_many_findings_in_one_block_are_all_counted(tmp_path):
    write(tmp_path, "export/contacts.csv", "".join("%d,user%d@corp-mail.de,+49 30 %07d\n" % (i, i, i)
                                                   for i in range(30000)))
    report = scan(tmp_path, max_findings=10)
    assert report["counts"]["pii.email"] == 30000 and report["counts"]["pii.phone"] == 30000


def test_symlinks_are_reported_not_followed(tmp_path):
    outside = tmp_path / "outside"
    write(outside, "company.ed25519", os.urandom(32))
    write(outside, "secrets/values.yaml", "password: %s\n" % rand(16))
    tree = tmp_path / "backup"
    write(tree, "docs/readme.md", "nothing here\n")
    os.symlink(str(outside / "company.ed25519"), str(tree / "current.key"))
    os.symlink(str(outside / "secrets"), str(tree / "docs" / "secrets"))
    os.symlink(str(tmp_path / "missing"), str(tree / "dangling"))
    report = scan(tree)
    assert where(report) == []
    assert report["files_scanned"] == 1
    assert sorted(report["symlinks"], key=lambda s: s["file"]) == [
        {"file": "current.key", "target": str(outside / "company.ed25519")},
        {"file": "dangling", "target": str(tmp_path / "missing")},
        {"file": "docs/secrets", "target": str(outside / "secrets")}]


def test_named_symlink_is_followed_and_files_scanned_once(tmp_path):
    write(tmp_path, "real/keys/company.ed25519", os.urandom(32))
    os.symlink(str(tmp_path / "real"), str(tmp_path / "current"))
    report = Scanner().scan([str(tmp_path / "current"),
                             str(tmp_path / "real" / "keys" / "company.ed25519")])
    assert where(report) == [COMPANY_KEY]
    assert report["files_scanned"] == 1


def test_fifo_is_skipped_not_opened(tmp_path):
    write(tmp_path, "docs/a.md", "fine\n")
    os.mkfifo(str(tmp_path / "docs" / "pipe"))
    report = scan(tmp_path)
    assert report["skipped"] == [{"file": "docs/pipe", "reason": "not a regular file"}]


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ScanError, match="does not exist"):
        scan_paths([str(tmp_path / "nope")])


def test_report_never_holds_a_value(tmp_path, keys):
    values = ["hunter2-" + rand(16), "hvs.CAES" + rand(60), rand(40, ALNUM + "/+"),
              "%s@corp-mail.de" % rand(10).lower(), jwt()]
    write(tmp_path, "config/values.yaml", "password: %s\n" % values[0])
    write(tmp_path, "docs/vault.md", "token %s\n" % values[1])
    write(tmp_path, "config/credentials", "aws_secret_access_key = %s\n" % values[2])
    write(tmp_path, "registry.json", '["%s"]\n' % values[3])
    write(tmp_path, "logs/api.log", "Authorization: Bearer %s\n" % values[4])
    report = scan(tmp_path)
    assert report["total"] == 5
    dumped = json.dumps(report) + summary(report)
    for value in values:
        for i in range(len(value) - 7):
            assert value[i:i + 8] not in dumped


# --- building blocks -----------------------------------------------------------------

@pytest.mark.parametrize("key, rule", [
    ("password", "password_field"), ("DB_PASSWORD", "password_field"),
    ("adminPassword", "password_field"),
    ("db_pass", "password_field"), ("client_secret", "secret_field"), ("clientSecret", "secret_field"),
    ("secret_id", "secret_field"), ("apiKey", "api_key_field"), ("X-API-Key", "api_key_field"),
    ("access_key", "api_key_field"), ("token", "token_field"), ("GITHUB_TOKEN", "token_field"),
    ("private_key", "private_field"), ("secretKey", "private_field"), ("seed", "private_field"),
    ("existingSecret", None), ("secretName", None), ("secretKeyRef", None), ("password_file", None),
    ("passwordPolicy", None), ("token_ttl", None), ("aws_access_key_id", None), ("public_key", None),
    ("passthrough", None), ("bypass", None), ("keyPassword", "password_field"), ("kid", None),
])
def test_classify_key(key, rule):
    assert classify_key(key) == rule


@pytest.mark.parametrize("value, quoted, literal", [
    (b"hunter2", False, True), (b"", False, False), (b"null", False, False), (b"~", False, False),
    (b"{{ vault_pw }}", True, False), (b"${DB_PASSWORD}", False, False),
    (b"$DB_PASSWORD", False, False),
    (b"<password>", True, False), (b"CHANGEME", False, False), (b"REDACTED", False, False),
    (b"***", True, False), (b"xxxxxxxx", False, False), (b"/run/secrets/db", False, False),
    (b"db-password", False, False), (b"ask the on-call SRE", False, False),
    (b"correct horse battery staple", True, True), (b"mysecretpassword9", False, True),
])
def test_is_literal_secret(value, quoted, literal):
    assert is_literal_secret(value, quoted) is literal


def test_every_rule_names_known_kinds_and_docs_describe_them():
    assert set(k for kinds in RULES.values() for k in kinds) == set(KINDS)
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "scan.md")).read()
    missing = [name for name in list(KINDS) + list(RULES) if "`%s`" % name not in docs]
    assert missing == []
