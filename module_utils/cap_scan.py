# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find what must never be in a backup: private keys, secrets and PII.

The runbook's "What is NOT Backed Up" section names private keys, secrets and
PII. This scanner walks files and reports where such material appears, by file,
line (or byte offset) and kind, and never by value: a finding never carries the
secret or any part of it.

Files are read in blocks; nothing reads a whole file at once. Text is scanned
as lines, binary files (SQLite databases) as their printable runs. Every rule
starts at a literal the regex engine finds at memory speed (``@``,
``PRIVATE KEY``, ``hvs.``, ``AA99`` in a map of character classes for IBANs),
or, for national phone numbers, at the delimiter in front of them, so 100 MB
of 0x-hex hashes scan in seconds.

docs/scan.md describes every rule with what it catches and what it leaves alone.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import fnmatch
import os
import re
from collections import OrderedDict

from ansible.module_utils.cap_hashing import READ_BLOCK

# Rule name -> the kinds it can report. A kind says what was found, a rule how.
RULES = OrderedDict([
    ("pem_pkcs8", ("private_key.pem",)),
    ("pem_encrypted", ("private_key.pem",)),
    ("pem_rsa", ("private_key.pem",)),
    ("pem_ec", ("private_key.pem",)),
    ("pem_dsa", ("private_key.pem",)),
    ("pem_openssh", ("private_key.pem",)),
    ("pem_pgp", ("private_key.pem",)),
    ("pem_other", ("private_key.pem",)),
    ("pem_base64", ("private_key.pem",)),
    ("ed25519_file_name", ("private_key.ed25519_file",)),
    ("raw_seed_bytes", ("private_key.raw_seed",)),
    ("encoded_seed_file", ("private_key.raw_seed",)),
    ("private_field", ("private_key.field",)),
    ("jwk_private_d", ("private_key.field",)),
    ("pkcs8_base64", ("private_key.der_base64",)),
    ("pkcs1_rsa_base64", ("private_key.der_base64",)),
    ("sec1_ec_base64", ("private_key.der_base64",)),
    ("vault_service_token", ("secret.vault_token",)),
    ("vault_batch_token", ("secret.vault_token",)),
    ("vault_recovery_token", ("secret.vault_token",)),
    ("vault_legacy_token", ("secret.vault_token",)),
    ("aws_access_key_id", ("secret.aws_access_key_id",)),
    ("aws_secret_access_key", ("secret.aws_secret_access_key",)),
    ("authorization_bearer", ("secret.bearer_token",)),
    ("bearer_token", ("secret.bearer_token",)),
    ("jwt", ("secret.jwt",)),
    ("url_password", ("secret.password_in_url",)),
    ("password_field", ("secret.password_in_yaml", "secret.password_in_json",
                        "secret.password_in_ini", "secret.password_in_env")),
    ("token_field", ("secret.password_in_yaml", "secret.password_in_json",
                     "secret.password_in_ini", "secret.password_in_env")),
    ("api_key_field", ("secret.password_in_yaml", "secret.password_in_json",
                       "secret.password_in_ini", "secret.password_in_env")),
    ("secret_field", ("secret.password_in_yaml", "secret.password_in_json",
                      "secret.password_in_ini", "secret.password_in_env")),
    ("email", ("pii.email",)),
    ("phone_international", ("pii.phone",)),
    ("phone_national", ("pii.phone",)),
    ("iban", ("pii.iban",)),
])
KINDS = tuple(OrderedDict((kind, None) for kinds in RULES.values() for kind in kinds))

# When two findings overlap, the more specific one is kept: a Vault token in a
# "password:" line is reported as a Vault token, a JWT after "Bearer" as a JWT,
# and the password of a postgres:// URL not also as an e-mail address.
_PRIORITY = {
    "private_key.pem": 0, "private_key.der_base64": 1, "private_key.field": 2,
    "secret.vault_token": 3, "secret.aws_access_key_id": 3, "secret.aws_secret_access_key": 3,
    "secret.jwt": 3, "secret.bearer_token": 4, "secret.password_in_url": 4,
    "secret.password_in_yaml": 5, "secret.password_in_json": 5, "secret.password_in_ini": 5,
    "secret.password_in_env": 5, "pii.email": 6, "pii.iban": 6, "pii.phone": 6,
}

DEFAULT_MAX_FINDINGS = 1000
# Bytes of already scanned data kept in front of each block, and the least data
# kept behind a cut inside a long line: every construct a rule looks at (a PEM
# header, a token, a JWK object around its "d") fits in this window.
OVERLAP = 4096
# A file whose first bytes hold a NUL is binary (the test git uses).
SNIFF_BYTES = 8192
# Lines longer than this are searched around each keyword hit only.
LONG_LINE = 65536


class ScanError(Exception):
    """A path or an allow-list entry cannot be used for a scan."""


# ---------------------------------------------------------------------------
# Patterns. All work on bytes so no decoding happens on the hot path.

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]{0,40}?)PRIVATE KEY( BLOCK)?-----")
_PEM_LABELS = {b"": "pem_pkcs8", b"ENCRYPTED ": "pem_encrypted", b"RSA ": "pem_rsa",
               b"EC ": "pem_ec", b"DSA ": "pem_dsa", b"OPENSSH ": "pem_openssh",
               b"PGP ": "pem_pgp"}
# base64 of "-----BEGIN " (Kubernetes Secret manifests carry PEM this way).
_PEM_B64_RE = re.compile(rb"LS0tLS1CRUdJTi[A-Za-z0-9+/]{8,120}")
# DER private keys in base64, recognised by their first bytes: SEQUENCE, then
# INTEGER version, then what follows the version in each format.
#   PKCS#8:  30 len 02 01 00|01 30 ...   PKCS#1 RSA: 30 82 len 02 01 00 02 82 ...
#   SEC1 EC: 30 len 02 01 01 04 ...
_DER_RE = re.compile(
    rb"M(?:"
    rb"[A-Za-z0-9+/]{2}CAQ(?:[AE]w|(?P<ecs>EE))"
    rb"|I[GH][A-Za-z0-9+/]AgE(?:[AB]M|(?P<ecm>BBD))"
    rb"|I[IJKL][A-Za-z0-9+/]{2}[AQgw]IBA(?:[DT]|(?P<rsa>AK))"
    rb")[A-Za-z0-9+/]{16}")
_VAULT_RE = re.compile(rb"hv([sbr])\.[A-Za-z0-9_-]{20,}")
_VAULT_RULES = {b"s": "vault_service_token", b"b": "vault_batch_token", b"r": "vault_recovery_token"}
_VAULT_LEGACY_RE = re.compile(rb"s\.[A-Za-z0-9]{24}")
_AWS_ID_RE = re.compile(rb"A[KS]IA[A-Z0-9]{16}")
_AWS_SECRET_RE = re.compile(
    rb"(?i:secret_?access_?key)[\"']?[ \t]*[:=][ \t]*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
_JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_BEARER_RE = re.compile(rb"(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]+=*)")
_AUTHORIZATION_BEFORE_RE = re.compile(rb"(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?[ \t]*\Z")
_URL_PASSWORD_RE = re.compile(rb"://([^\s/:@\"'<>]{1,128}):([^\s/@\"'<>]{1,256})@[A-Za-z0-9\[]")
_JWK_D_RE = re.compile(rb"\"d\"[ \t]*:[ \t]*\"([A-Za-z0-9_-]{16,})\"")
_JWK_KTY_RE = re.compile(rb"\"kty\"[ \t]*:[ \t]*\"(?:OKP|EC|RSA)\"")
_DOMAIN_LABEL = rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_DOMAIN_RE = re.compile(rb"@(" + _DOMAIN_LABEL + rb"(?:\." + _DOMAIN_LABEL + rb")+)")
_EMAIL_LOCAL_RE = re.compile(rb"[A-Za-z0-9._%+-]{1,64}\Z")
_FILE_EXTENSIONS = frozenset([b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"css",
                              b"js", b"json", b"yaml", b"yml", b"txt", b"html", b"htm", b"lock"])
_NOT_BEFORE_PLUS = (b"_", b"+", b"/", b".", b"-", b"\\")
_PHONE_INTL_RE = re.compile(rb"\+[1-9](?:(?:[ ./-]|\)[ ]?|[ ]?\()?[0-9]){7,14}(?![A-Za-z0-9_])")
# National phone numbers start with a digit or "(", which no literal can find
# quickly; one pattern that starts with the delimiter before them makes a
# single pass over the text.
_NATIONAL_PHONE_RE = re.compile(
    rb"[\s\"'(:;,=\[\]{}<>|`*](?=[0-9(])(?P<nat>"
    # (030) 1234567, (555) 123-4567
    rb"\((?:0[0-9]{1,4}\)[ ]?[0-9]{3,8}(?:[ -][0-9]{2,8}){0,2}"
    rb"|[2-9][0-9]{2}\)[ ]?[0-9]{3}[ .-][0-9]{4})"
    # 030 1234567, 030/1234567, 0151-23456789; 01 23 45 67 89; 0049 30 1234567
    rb"|0(?:[0-9]{1,4}(?:[ /-]|[ ]/[ ])[0-9]{3,8}(?:[ -][0-9]{2,8}){0,2}"
    rb"|[1-9](?P<fr>[ .])[0-9]{2}(?:(?P=fr)[0-9]{2}){3}"
    rb"|0[1-9][0-9]{0,3}[ ][0-9]{1,5}(?:[ ][0-9]{2,8}){1,3})"
    # 555-123-4567, 555.123.4567
    rb"|[2-9][0-9]{2}(?P<us>[.-])[0-9]{3}(?P=us)[0-9]{4}"
    rb")(?![A-Za-z0-9_]|[.,/-][0-9])")
# IBANs: the block is mapped to character classes (A-Z -> A, 0-9 -> 9) and the
# literal "AA99" found there marks each place where one can start.
_CHAR_CLASSES = bytes(0x41 if 0x41 <= b <= 0x5a else 0x39 if 0x30 <= b <= 0x39 else 0x2e
                      for b in range(256))
_IBAN_START_RE = re.compile(rb"AA99")
_IBAN_RE = re.compile(rb"[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}")
_ISO_DATE_RE = re.compile(rb"\+?[0-9]{4}-[0-9]{2}-[0-9]{2}")

_IBAN_LETTER_VALUES = {code: str(code - 55) for code in range(0x41, 0x5b)}
# IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

# --- keys that hold secrets in YAML, JSON, INI and env files -----------------

# Words of a hit are found in the lower-cased block; each hit's line is parsed.
_HIT_WORDS = tuple(re.compile(w) for w in (b"pass", b"pwd", b"secret", b"token", b"credential",
                                           b"seed", b"key"))
_LINE_RE = re.compile(
    rb"^[ \t]*(?:(?:#|//|;)[ \t]*)?(?:-[ \t]+)?(?P<export>export[ \t]+)?"
    rb"(?:\"(?P<dq>[^\"\n]{1,128})\"|'(?P<sq>[^'\n]{1,128})'|(?P<key>[A-Za-z_][A-Za-z0-9_.-]{0,127}))"
    rb"(?P<pre>[ \t]*)(?P<sep>[:=])(?P<rest>[^\n]*)")
_JSON_PAIR_RE = re.compile(rb"\"([^\"\\\n]{1,128})\"[ \t]*:[ \t]*\"((?:[^\"\\\n]|\\.){0,4096})\"")
_KEY_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_PASSWORD_WORDS = frozenset(["password", "passwd", "passphrase", "pass", "pwd", "passcode"])
_SECRET_WORDS = frozenset(["secret", "secrets", "credential", "credentials"])
_TOKEN_WORDS = frozenset(["token", "tokens"])
_KEY_PREFIXES = frozenset(["api", "access", "auth", "signing", "encryption", "master"])
# A key whose words after the secret word say it names, locates or describes a
# secret holds a reference, not the secret: secretName, password_file, token_ttl.
_REFERENCE_WORDS = frozenset([
    "name", "names", "ref", "refs", "keyref", "selector", "path", "paths", "file", "files",
    "filename", "dir", "directory", "url", "uri", "endpoint", "host", "port", "ttl", "timeout",
    "length", "len", "size", "count", "min", "max", "type", "mode", "enabled", "enable",
    "disabled", "required", "env", "var", "variable", "policy", "policies", "role", "roles",
    "mount", "field", "fields", "header", "format", "version", "id", "ids", "expiry", "expires",
    "expiration", "lifetime", "rotation", "period", "provider", "class", "source", "template",
    "label", "annotation", "store", "manager", "engine", "backend", "reviewer", "audience",
])
_REFERENCE_PREFIXES = frozenset(["existing", "external"])
_NULLISH = frozenset([b"null", b"~", b"none", b"nil", b"true", b"false", b"yes", b"no", b"on",
                      b"off", b"n/a", b"-"])
_PLACEHOLDER_PARTS = (b"changeme", b"change_me", b"change-me", b"changeit", b"redacted",
                      b"placeholder", b"example", b"replaceme", b"replace_me", b"replace-me",
                      b"your_", b"your-", b"notasecret", b"not-a-secret")
_PLACEHOLDER_RE = re.compile(rb"<[^<>]*>?|\[[^\[\]]*\]|[*xX.#_-]{3,}|\*+|(?i:todo|tbd|fixme)")
_REFERENCE_VALUE_RE = re.compile(
    rb"\{\{|\{%|\$\{|\$\(|%\(|#\{|^\$[A-Za-z_][A-Za-z0-9_]*$|^\$ANSIBLE_VAULT|^ENC\[|^vault:|^ref\+")
_PATH_VALUE_RE = re.compile(rb"(?:/|~/|\./|\.\./)[A-Za-z0-9_.@/-]*|[a-z0-9_.-]+(?:/[a-z0-9_.-]+)+/?")
_SECRET_NAME_RE = re.compile(rb"[a-z0-9][a-z0-9._-]*")
_NAME_WORDS = frozenset([b"password", b"passwd", b"pass", b"pwd", b"secret", b"secrets", b"token",
                         b"key", b"apikey", b"credential", b"credentials", b"passphrase"])
_BLOCK_SCALAR_RE = re.compile(rb"[|>][0-9+-]*")
_ENV_NAMES = re.compile(r"(?:^\.env(?:\..*)?|.*\.env|.*\.sh|.*\.bash|^\.envrc|.*\.envrc)$")
_INI_NAMES = re.compile(r".*\.(?:ini|cfg|conf|cnf|properties|toml)$")

# --- whole files -------------------------------------------------------------

_KEYLIKE_NAME_GLOBS = ("*.key", "*.seed", "*.priv", "*.sk", "*private*", "*secret*", "*seed*",
                       "*signing*")
_HEX_SEED_RE = re.compile(rb"(?:0x)?([0-9a-fA-F]{64}|[0-9a-fA-F]{128})")
_B64_SEED_RE = re.compile(rb"[A-Za-z0-9+/_-]{43,88}={0,2}")
_PRINTABLE = frozenset(range(0x20, 0x7f)) | frozenset(b"\t\r\n")
# Binary files are scanned as their printable runs: everything else becomes a
# line break, so a value stored in an SQLite page stands on a line of its own.
_BINARY_TO_TEXT = bytes(b if (0x20 <= b < 0x7f or b == 0x09) else 0x0a for b in range(256))


def iban_is_valid(text):
    """True when text (spaces allowed) is an IBAN of its country's length with mod-97 remainder 1."""
    compact = text.replace(" ", "").upper()
    if len(compact) != IBAN_LENGTHS.get(compact[:2], -1):
        return False
    if not (compact.isascii() and compact.isalnum() and compact[2:4].isdigit()):
        return False
    # Country and check digits go to the end; letters count as 10 (A) to 35 (Z).
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTER_VALUES)) % 97 == 1


def _key_words(key):
    """Lower-case words of a key: 'clientSecret' -> client, secret; 'DB_PASSWORD' -> db, password."""
    words = []
    for part in re.split(r"[^A-Za-z0-9]+", key):
        words.extend(w.lower() for w in _KEY_WORD_RE.findall(part))
    return words


def classify_key(key):
    """The rule for a key that holds a secret ('private_field', 'password_field'...), else None."""
    words = _key_words(key)
    if not words or len(key) > 128 or words[0] in _REFERENCE_PREFIXES:
        return None
    for index, word in enumerate(words):
        nxt = words[index + 1] if index + 1 < len(words) else None
        rest = words[index + 1:]
        rule = None
        if word == "private" and nxt == "key":
            rule, rest = "private_field", words[index + 2:]
        elif word == "secret" and nxt == "key":
            rule, rest = "private_field", words[index + 2:]
        elif word == "seed":
            rule = "private_field"
        elif word in _PASSWORD_WORDS:
            rule = "password_field"
        elif word in _TOKEN_WORDS:
            rule = "token_field"
        elif word in _KEY_PREFIXES and nxt == "key":
            rule, rest = "api_key_field", words[index + 2:]
        elif word == "apikey":
            rule = "api_key_field"
        elif word in _SECRET_WORDS:
            # Vault AppRole's secret_id is a credential, not an identifier.
            if rest[:1] == ["id"]:
                return "secret_field"
            rule = "secret_field"
        if rule is None:
            continue
        if any(w in _REFERENCE_WORDS for w in rest):
            return None
        return rule
    return None


def is_placeholder(value):
    """True for values that only stand for a secret: <...>, CHANGEME, REDACTED, ***, xxx."""
    lower = value.lower()
    if _PLACEHOLDER_RE.fullmatch(value):
        return True
    if len(set(value)) == 1 and len(value) >= 3:
        return True
    return any(part in lower for part in _PLACEHOLDER_PARTS)


def is_literal_secret(value, quoted=True):
    """True when an assignment's value is a literal secret rather than empty, a
    reference ({{ var }}, ${ENV}, $VAR, a path, the name of a Secret), an
    encrypted blob or a placeholder.

    Unquoted values with white space are prose ("Password: ask the on-call SRE").
    """
    value = value.strip()
    if not value or value.lower() in _NULLISH:
        return False
    if not quoted and re.search(rb"\s", value):
        return False
    if _REFERENCE_VALUE_RE.search(value) or is_placeholder(value):
        return False
    if _PATH_VALUE_RE.fullmatch(value):
        return False
    lower = value.lower()
    # A value that names a secret: an existing Secret "db-password", a key "token".
    if _SECRET_NAME_RE.fullmatch(lower) and _NAME_WORDS & set(re.split(rb"[._-]", lower)):
        return False
    return True


def _value_span(rest, syntax):
    """Span (start, end, quoted) of the value in the text after ':' or '='; None when empty."""
    n = len(rest)
    i = 0
    if syntax != "env":
        while i < n and rest[i] in b" \t":
            i += 1
    if i >= n:
        return None
    quote = rest[i:i + 1]
    if quote in (b'"', b"'"):
        j = i + 1
        while j < n:
            c = rest[j:j + 1]
            if quote == b'"' and c == b"\\":
                j += 2
                continue
            if c == quote:
                if quote == b"'" and rest[j + 1:j + 2] == b"'":
                    j += 2
                    continue
                return i + 1, j, True
            j += 1
        return i + 1, n, True
    if syntax == "env":
        end = i
        while end < n and rest[end] not in b" \t\r":
            end += 1
        return i, end, False
    end = n
    for marker in (b" #", b"\t#") + ((b" ;", b"\t;") if syntax == "ini" else ()):
        cut = rest.find(marker, i)
        if cut >= 0:
            end = min(end, cut)
    while end > i and rest[end - 1] in b" \t\r":
        end -= 1
    if syntax == "yaml" and end > i and rest[end - 1:end] == b",":
        end -= 1
    return (i, end, False) if end > i else None


def _distinct_enough(data):
    """Random 32 bytes have ~30 distinct values and 64 bytes ~56; a pattern or text has far fewer."""
    return len(set(data)) >= (24 if len(data) <= 32 else 40)


# ---------------------------------------------------------------------------


class AllowList:
    """Entries that suppress findings.

    A string is a glob matched, case-insensitively, against the value found
    ("*@example.com"). A dict may have kind, rule, path and value (globs; all
    given ones must match) and a free-text reason. path matches the reported
    file path or the absolute path. An entry that matches everything is refused.
    """

    KEYS = ("kind", "rule", "path", "value", "reason")

    def __init__(self, entries=None):
        self.entries = []
        for index, entry in enumerate(entries or []):
            self.entries.append(self._compile(index, entry))
        self.hits = [0] * len(self.entries)

    @staticmethod
    def _compile(index, entry):
        where = "allow[%d]" % index
        if isinstance(entry, str):
            entry = {"value": entry}
        if not isinstance(entry, dict):
            raise ScanError("%s must be a string (a value glob) or a dict, not %s"
                            % (where, type(entry).__name__))
        unknown = sorted(set(entry) - set(AllowList.KEYS))
        if unknown:
            raise ScanError("%s has unknown keys %s; use %s" % (where, ", ".join(unknown),
                                                              ", ".join(AllowList.KEYS)))
        spec = {}
        for key in ("kind", "rule", "path", "value"):
            if entry.get(key) is None:
                continue
            if not isinstance(entry[key], str) or not entry[key]:
                raise ScanError("%s.%s must be a non-empty string" % (where, key))
            spec[key] = entry[key]
        if not spec:
            raise ScanError("%s needs at least one of kind, rule, path, value" % where)
        if all(set(v) <= set("*?") for v in spec.values()):
            raise ScanError("%s matches every finding; name a kind, rule, path or value" % where)
        if "kind" in spec and not fnmatch.filter(KINDS, spec["kind"]):
            raise ScanError("%s.kind %r matches no kind (%s)" % (where, spec["kind"], ", ".join(KINDS)))
        if "rule" in spec and not fnmatch.filter(RULES, spec["rule"]):
            raise ScanError("%s.rule %r matches no rule (%s)" % (where, spec["rule"], ", ".join(RULES)))
        if "value" in spec:
            spec["value"] = spec["value"].lower()
        return spec

    def match(self, kind, rule, file, abspath, value):
        """Index of the first entry that allows this finding, else None (hit counted)."""
        lowered = None
        for index, spec in enumerate(self.entries):
            if "kind" in spec and not fnmatch.fnmatchcase(kind, spec["kind"]):
                continue
            if "rule" in spec and not fnmatch.fnmatchcase(rule, spec["rule"]):
                continue
            if "path" in spec and not (fnmatch.fnmatchcase(file, spec["path"])
                                       or fnmatch.fnmatchcase(abspath, spec["path"])):
                continue
            if "value" in spec:
                if value is None:
                    continue
                if lowered is None:
                    lowered = value.decode("utf-8", "replace").lower()
                if not fnmatch.fnmatchcase(lowered, spec["value"]):
                    continue
            self.hits[index] += 1
            return index
        return None


class _Candidate:
    __slots__ = ("start", "end", "kind", "rule", "value")

    def __init__(self, start, end, kind, rule, value):
        self.start, self.end, self.kind, self.rule, self.value = start, end, kind, rule, value


class Scanner:
    """Scan files and directories; collect findings into a report.

    ``scan(paths)`` returns the report (see ``new_report``). ``chunk_size`` and
    ``overlap`` bound the memory a file needs: about two chunks, whatever its size.
    """

    def __init__(self, allow=None, max_findings=DEFAULT_MAX_FINDINGS, chunk_size=READ_BLOCK,
                 overlap=OVERLAP):
        if max_findings < 0:
            raise ScanError("max_findings must not be negative")
        if chunk_size < 1 or overlap < 64:
            raise ScanError("chunk_size must be positive and overlap at least 64 bytes")
        self.allow = allow if isinstance(allow, AllowList) else AllowList(allow)
        self.max_findings = max_findings
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.report = self.new_report()

    @staticmethod
    def new_report():
        return {
            "findings": [],
            "findings_truncated": False,
            "total": 0,
            "counts": OrderedDict((kind, 0) for kind in KINDS),
            "allowed": 0,
            "allow_hits": [],
            "files_scanned": 0,
            "bytes_scanned": 0,
            "symlinks": [],
            "skipped": [],
            "errors": [],
        }

    # -- walking --------------------------------------------------------------

    def scan(self, paths):
        """Scan files and directory trees; return the report."""
        if isinstance(paths, (str, bytes)):
            paths = [paths]
        if not paths:
            raise ScanError("no paths to scan")
        seen = set()
        for top in paths:
            if not os.path.lexists(top):
                raise ScanError("path to scan does not exist: %s" % top)
            # A named path is what the caller asked for, so a link there is
            # followed; links inside a tree are reported and never followed.
            if os.path.isdir(top):
                self._walk(top, seen)
            elif os.path.isfile(top):
                self._scan_path(top, os.path.normpath(top), seen)
            else:
                self.report["skipped"].append({"file": top,
                                               "reason": "not a regular file or directory"})
        self.report["allow_hits"] = list(self.allow.hits)
        return self.report

    def _walk(self, top, seen):
        """Scan every regular file below top in byte order of its relative path."""
        def onerror(exc):
            self.report["errors"].append({"file": exc.filename or top,
                                          "error": exc.strerror or str(exc)})

        files = []
        for dirpath, dirnames, filenames in os.walk(top, onerror=onerror, followlinks=False):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, top).replace(os.sep, "/")
                if os.path.islink(full):
                    self._symlink(full, rel)
                elif name in filenames:
                    files.append((rel.encode("utf-8", "surrogateescape"), rel, full))
            # os.walk lists a link to a directory among dirnames and does not enter it.
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        self.report["symlinks"].sort(key=lambda s: s["file"])
        for _, rel, full in sorted(files):
            if os.path.isfile(full):
                self._scan_path(full, rel, seen)
            else:
                self.report["skipped"].append({"file": rel, "reason": "not a regular file"})

    def _symlink(self, full, rel):
        try:
            target = os.readlink(full)
        except OSError as exc:
            target = "(unreadable: %s)" % exc.strerror
        self.report["symlinks"].append({"file": rel, "target": target})

    def _scan_path(self, path, display, seen):
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        try:
            self.scan_file(path, display)
        except OSError as exc:
            self.report["errors"].append({"file": display, "error": exc.strerror or str(exc)})

    # -- one file ---------------------------------------------------------------

    def scan_file(self, path, display=None):
        """Scan one regular file; findings go into the report under ``display``."""
        display = display or path
        abspath = os.path.abspath(path)
        name = os.path.basename(path)
        lower_name = name.lower()
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(SNIFF_BYTES)
            binary = b"\x00" in head
            if lower_name.endswith(".ed25519"):
                self._emit(display, abspath, None, None, None, "private_key.ed25519_file",
                           "ed25519_file_name", None)
            elif self._keylike_name(lower_name) and size <= 256:
                rule = self._seed_file_rule(head if len(head) == size else head + handle.read())
                if rule:
                    self._emit(display, abspath, None, None, None, "private_key.raw_seed", rule, None)
            handle.seek(0)
            self._scan_stream(handle, binary, display, abspath, lower_name)
        self.report["files_scanned"] += 1
        self.report["bytes_scanned"] += size

    @staticmethod
    def _keylike_name(lower_name):
        if "pub" in lower_name:
            return False
        return any(fnmatch.fnmatchcase(lower_name, g) for g in _KEYLIKE_NAME_GLOBS)

    @staticmethod
    def _seed_file_rule(data):
        if len(data) in (32, 64) and any(b not in _PRINTABLE for b in data) and _distinct_enough(data):
            return "raw_seed_bytes"
        text = data.strip()
        match = _HEX_SEED_RE.fullmatch(text)
        if match:
            raw = binascii.unhexlify(match.group(1))
            return "encoded_seed_file" if _distinct_enough(raw) else None
        if _B64_SEED_RE.fullmatch(text):
            padded = text + b"=" * (-len(text) % 4)
            try:
                raw = base64.urlsafe_b64decode(padded.replace(b"+", b"-").replace(b"/", b"_"))
            except (binascii.Error, ValueError):
                return None
            if len(raw) in (32, 64) and _distinct_enough(raw):
                return "encoded_seed_file"
        return None

    def _scan_stream(self, handle, binary, display, abspath, lower_name):
        """Read blocks; scan each with context before it; accept findings once.

        The first block is preceded by a virtual line break at offset -1, so a
        file's first byte is a line start and has a delimiter before it. Matches
        are accepted only when they start in [start, limit) of a block; what
        lies beyond limit is scanned again, with context, in the next block.
        """
        if _ENV_NAMES.match(lower_name):
            style = "env"
        elif _INI_NAMES.match(lower_name):
            style = "ini"
        else:
            style = None
        context = b"\n"
        pending = b""
        pending_offset = 0      # file offset of pending[0]
        pending_line = 1        # line number of pending[0]
        line_start = 0          # file offset where the line holding pending[0] starts
        while True:
            data = handle.read(self.chunk_size)
            eof = not data
            if binary and data:
                data = data.translate(_BINARY_TO_TEXT)
            pending += data
            if not pending:
                break
            limit = len(pending) if eof else self._cut(pending)
            if limit <= 0:
                continue
            buf = context + pending
            start = len(context)
            base = pending_offset - start
            # Overlaps are settled among everything in view, context included,
            # so the blocks on both sides of a cut settle them the same way.
            found = [c for c in _resolve_overlaps(self._scan_block(buf, start + limit, style, binary))
                     if start <= c.start < start + limit]
            if found:
                self._report_block(found, buf, base, pending_line - context.count(b"\n"),
                                   line_start, binary, display, abspath)
            accepted = pending[:limit]
            last_nl = accepted.rfind(b"\n")
            if last_nl >= 0:
                line_start = pending_offset + last_nl + 1
            pending_line += accepted.count(b"\n")
            pending_offset += limit
            context = (context + accepted)[-self.overlap:] if len(accepted) < self.overlap \
                else accepted[-self.overlap:]
            pending = pending[limit:]
            if eof:
                break

    def _cut(self, pending):
        """Where to end the accepted part of a block.

        At the start of the last complete line, so every accepted line has the
        next one in view (a YAML block scalar's value); inside a very long line,
        leave at least ``overlap`` bytes for the next block to rescan.
        """
        last_nl = pending.rfind(b"\n")
        if last_nl > 0:
            prev_nl = pending.rfind(b"\n", 0, last_nl)
            if prev_nl >= 0 and len(pending) - prev_nl - 1 <= self.chunk_size:
                return prev_nl + 1
        return len(pending) - self.overlap

    def _report_block(self, found, buf, base, buf_line, carried_line_start, binary, display, abspath):
        """Emit candidates (in file order), counting lines only between consecutive ones."""
        line, start_of_line, pos = buf_line, carried_line_start, 0
        for cand in found:
            offset = base + cand.start
            if binary:
                self._emit(display, abspath, None, None, offset, cand.kind, cand.rule, cand.value)
                continue
            line += buf.count(b"\n", pos, cand.start)
            nl = buf.rfind(b"\n", pos, cand.start)
            if nl >= 0:
                start_of_line = base + nl + 1
            pos = cand.start
            self._emit(display, abspath, line, offset - start_of_line + 1, offset, cand.kind,
                       cand.rule, cand.value)

    def _emit(self, display, abspath, line, column, offset, kind, rule, value):
        if self.allow.match(kind, rule, display, abspath, value) is not None:
            self.report["allowed"] += 1
            return
        report = self.report
        report["total"] += 1
        report["counts"][kind] += 1
        if len(report["findings"]) < self.max_findings:
            report["findings"].append({"file": display, "line": line, "column": column,
                                       "offset": offset, "kind": kind, "rule": rule})
        else:
            report["findings_truncated"] = True

    # -- one block ------------------------------------------------------------

    @staticmethod
    def _scan_block(buf, hi, style, binary):
        """Candidates in buf; keyword lines are parsed only when they start before hi."""
        out = []

        def add(start, end, kind, rule, value):
            out.append(_Candidate(start, end, kind, rule, value))

        _find_pem(buf, add)
        _find_der(buf, add)
        _find_tokens(buf, add)
        _find_jwk(buf, add)
        _find_urls_and_emails(buf, add)
        _find_phones_and_ibans(buf, add, binary)
        low = buf.lower()
        if b"bearer" in low:
            _find_bearer(buf, low, add)
        _find_assignments(buf, low, hi, style, add)
        return out


def _resolve_overlaps(found):
    """Drop candidates that overlap a more specific one; return the rest in file order.

    Kept spans never overlap each other, so a new one only has to be checked
    against its neighbours in start order.
    """
    found.sort(key=lambda c: (_PRIORITY[c.kind], c.start))
    starts, kept = [], []
    for cand in found:
        i = bisect.bisect_right(starts, cand.start)
        if i > 0 and kept[i - 1].end > cand.start:
            continue
        if i < len(kept) and kept[i].start < cand.end:
            continue
        starts.insert(i, cand.start)
        kept.insert(i, cand)
    return kept


def _prev(buf, pos):
    return buf[pos - 1:pos] if pos > 0 else b"\n"


def _is_word(byte):
    return byte.isalnum() or byte == b"_"


# --- detectors: each calls add(start, end, kind, rule, value) ----------------

def _find_pem(buf, add):
    if b"PRIVATE KEY" in buf:
        for m in _PEM_RE.finditer(buf):
            rule = _PEM_LABELS.get(m.group(1), "pem_other")
            # The span reaches into the body so its first line is not reported
            # again as base64 DER.
            add(m.start(), m.end() + 80, "private_key.pem", rule, m.group(0))
    for m in _PEM_B64_RE.finditer(buf):
        text = m.group(0)
        text = text[:len(text) - len(text) % 4]
        try:
            decoded = base64.b64decode(text)
        except (binascii.Error, ValueError):
            continue
        if b"PRIVATE KEY" in decoded:
            add(m.start(), m.end(), "private_key.pem", "pem_base64", None)


def _find_der(buf, add):
    for m in _DER_RE.finditer(buf):
        p = _prev(buf, m.start())
        if p.isalnum() or p in (b"+", b"/"):
            continue
        if m.group("rsa"):
            rule = "pkcs1_rsa_base64"
        elif m.group("ecs") or m.group("ecm"):
            rule = "sec1_ec_base64"
        else:
            rule = "pkcs8_base64"
        add(m.start(), m.end(), "private_key.der_base64", rule, m.group(0))


def _find_tokens(buf, add):
    # The hv?. and JWT shapes are distinctive enough to need no boundary in
    # front: SQLite stores a row's columns back to back ("upstreamhvs.CAES...").
    for m in _VAULT_RE.finditer(buf):
        if is_placeholder(m.group(0)[4:]):
            continue
        add(m.start(), m.end(), "secret.vault_token", _VAULT_RULES[m.group(1)], m.group(0))
    for m in _VAULT_LEGACY_RE.finditer(buf):
        p = _prev(buf, m.start())
        body = m.group(0)[2:]
        if _is_word(p) or p == b"." or _is_word(buf[m.end():m.end() + 1]):
            continue
        # Random base62 has both cases; prose and identifiers rarely do at this length.
        if body.lower() == body or body.upper() == body or is_placeholder(body):
            continue
        add(m.start(), m.end(), "secret.vault_token", "vault_legacy_token", m.group(0))
    for m in _AWS_ID_RE.finditer(buf):
        before, after = _prev(buf, m.start()), buf[m.end():m.end() + 1]
        if before.isupper() or before.isdigit() or after.isupper() or after.isdigit():
            continue
        if is_placeholder(m.group(0)):
            continue
        add(m.start(), m.end(), "secret.aws_access_key_id", "aws_access_key_id", m.group(0))
    if b"eyJ" in buf:
        for m in _JWT_RE.finditer(buf):
            add(m.start(), m.end(), "secret.jwt", "jwt", m.group(0))


def _find_jwk(buf, add):
    if b'"kty"' not in buf or b'"d"' not in buf:
        return
    for m in _JWK_D_RE.finditer(buf):
        window = buf[max(0, m.start() - 2048):m.end() + 2048]
        if _JWK_KTY_RE.search(window):
            add(m.start(1), m.end(1), "private_key.field", "jwk_private_d", m.group(1))


def _find_urls_and_emails(buf, add):
    if b"@" not in buf:
        return
    if b"://" in buf:
        for m in _URL_PASSWORD_RE.finditer(buf):
            password = m.group(2)
            if not is_literal_secret(password):
                continue
            add(m.start(2), m.end(2), "secret.password_in_url", "url_password", password)
    for m in _EMAIL_DOMAIN_RE.finditer(buf):
        at = m.start()
        local = _EMAIL_LOCAL_RE.search(buf, max(0, at - 64), at)
        if not local:
            continue
        lstart = local.start()
        while lstart < at and buf[lstart:lstart + 1] == b".":
            lstart += 1
        if lstart >= at or buf[max(0, lstart - 2):lstart] == b"//":
            continue
        domain = m.group(1)
        tld = re.match(rb"[A-Za-z]*", domain.rsplit(b".", 1)[1]).group(0)
        if len(tld) < 2 or tld.lower() in _FILE_EXTENSIONS:
            continue
        after = buf[m.end():m.end() + 2]
        # git@github.com:org/repo is an SSH remote, not an address.
        if after[:1] == b":" and after[1:2] not in (b"", b" ", b"\t", b"\n", b"\r"):
            continue
        add(lstart, m.end(), "pii.email", "email", buf[lstart:m.end()])


def _digits(value):
    return sum(1 for c in value if 0x30 <= c <= 0x39)


def _find_phones_and_ibans(buf, add, binary=False):
    """Phone numbers and IBANs. In binary files a value can be glued to the previous
    SQLite column's text ("refundDE89...", "phone+49..."), so there a letter in
    front does not rule it out."""
    if b"+" in buf:
        for m in _PHONE_INTL_RE.finditer(buf):
            p = _prev(buf, m.start())
            if (p.isalpha() and not binary) or p.isdigit() or p in _NOT_BEFORE_PLUS:
                continue
            value = m.group(0)
            digits = [c for c in value if 0x30 <= c <= 0x39]
            separated = len(digits) + 1 != len(value)
            if (not separated and len(digits) < 10) or len(set(digits)) == 1:
                continue
            if _ISO_DATE_RE.match(value):
                continue
            add(m.start(), m.end(), "pii.phone", "phone_international", value)
    for m in _NATIONAL_PHONE_RE.finditer(buf):
        value = _trim_phone(m.group("nat"))
        if value is None:
            continue
        start = m.start("nat")
        add(start, start + len(value), "pii.phone", "phone_national", value)
    for m in _IBAN_START_RE.finditer(buf.translate(_CHAR_CLASSES)):
        start = m.start()
        p = _prev(buf, start)
        if p.isupper() or p.isdigit() or (not binary and (p.isalpha() or p == b"_")):
            continue
        iban = _IBAN_RE.match(buf, start)
        if iban and (binary or not _is_word(buf[iban.end():iban.end() + 1])):
            _check_iban(start, iban.group(0), add, strict_end=not binary)


def _trim_phone(value):
    """Drop trailing digit groups beyond 15 digits; None unless 9 to 15 varied digits remain."""
    while _digits(value) > 15:
        cut = max(value.rfind(b" "), value.rfind(b"-"))
        if cut <= 0:
            return None
        value = value[:cut]
    digits = [c for c in value if 0x30 <= c <= 0x39]
    if len(digits) < 9 or len(set(digits)) == 1:
        return None
    return value


def _check_iban(start, value, add, strict_end=True):
    """Report the IBAN at the start of value: its country's length, then mod 97.

    A spaced IBAN followed by more groups ("DE89 3704 ... 00 1234") is cut where
    the country's length ends, in text only at a group boundary; in binary files
    anywhere, since the next column's text may follow without a break.
    """
    text = value.decode("ascii")
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return
    if " " not in text:
        end = length
        if len(text) < length:
            return
    else:
        taken = 0
        for index, char in enumerate(text):
            if char != " ":
                taken += 1
            if taken == length:
                end = index + 1
                break
        else:
            return
    if strict_end and end < len(text) and text[end] != " ":
        return
    if iban_is_valid(text[:end]):
        add(start, start + end, "pii.iban", "iban", value[:end])


def _find_bearer(buf, low, add):
    pos = low.find(b"bearer")
    while pos >= 0:
        m = _BEARER_RE.match(buf, pos)
        if m and not _is_word(_prev(buf, pos)):
            token = m.group(1)
            line_start = buf.rfind(b"\n", 0, pos) + 1
            header = _AUTHORIZATION_BEFORE_RE.search(buf, max(line_start, pos - 64), pos)
            if header and len(token) >= 8:
                rule = "authorization_bearer"
            elif len(token) >= 20 and re.search(rb"[0-9]", token) and re.search(rb"[A-Za-z]", token):
                rule = "bearer_token"
            else:
                rule = None
            if rule and not is_placeholder(token):
                add(m.start(1), m.end(1), "secret.bearer_token", rule, token)
        pos = low.find(b"bearer", pos + 6)


def _find_assignments(buf, low, hi, style, add):
    """Parse every line that holds a keyword hit as YAML, JSON, INI or env assignments.

    Lines in the context in front of the block are parsed too: a key there can
    have its value (a YAML block scalar, a Kubernetes env "value:") inside it.
    """
    lines = {}
    for word in _HIT_WORDS:
        for m in word.finditer(low, 0, hi):
            pos = m.start()
            start = buf.rfind(b"\n", 0, pos) + 1
            if start in lines:
                continue
            end = buf.find(b"\n", pos)
            end = len(buf) if end < 0 else end
            if end - start > LONG_LINE:
                # Within a very long line only JSON pairs near the hit are looked at.
                _json_pairs(buf, max(start, pos - 256), min(end, pos + 4352), add)
                continue
            lines[start] = end
    for start, end in lines.items():
        _parse_line(buf, start, end, style, add)


def _json_pairs(buf, start, end, add):
    """Report JSON "key": "value" pairs with secret keys; return where their keys start."""
    found = []
    for m in _JSON_PAIR_RE.finditer(buf, start, end):
        key = m.group(1).decode("utf-8", "replace")
        rule = classify_key(key)
        if rule is None:
            continue
        found.append(m.start())
        _assignment(m.start(2), m.end(2), m.group(2), True, key, rule, "json", add)
    return found


def _parse_line(buf, start, end, style, add):
    json_keys = _json_pairs(buf, start, end, add)
    line = buf[start:end]
    for m in _AWS_SECRET_RE.finditer(line):
        add(start + m.start(1), start + m.end(1), "secret.aws_secret_access_key",
            "aws_secret_access_key", m.group(1))
    m = _LINE_RE.match(line)
    if not m:
        return
    if m.group("dq") is not None and start + m.start("dq") - 1 in json_keys:
        return
    key = (m.group("dq") or m.group("sq") or m.group("key")).decode("utf-8", "replace")
    sep, rest = m.group("sep"), m.group("rest")
    quoted_key = m.group("dq") is not None or m.group("sq") is not None
    if sep == b":":
        # YAML wants white space after the colon; "http://x" is no mapping.
        if rest[:1] not in (b"", b" ", b"\t", b"\r") and not quoted_key:
            return
        syntax = "yaml"
    elif m.group("export") or style == "env":
        syntax = "env"
    elif style == "ini" or m.group("pre") or rest[:1] in (b" ", b"\t") \
            or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
        syntax = "ini"
    else:
        syntax = "env"
    span = _value_span(rest, syntax)
    if span is None:
        return
    rest_at = start + m.start("rest")
    vstart, vend, quoted = span
    value = rest[vstart:vend]
    rule = classify_key(key)
    if rule is None:
        if syntax == "yaml" and key == "name":
            _env_list_value(buf, end, value.decode("utf-8", "replace"), add)
        return
    if syntax == "yaml" and not quoted:
        if _BLOCK_SCALAR_RE.fullmatch(value):
            _block_scalar(buf, end, len(line) - len(line.lstrip()), key, rule, add)
            return
        skipped = _yaml_prefix(value)
        if skipped is None:
            return
        vstart += skipped
        value = value[skipped:]
    _assignment(rest_at + vstart, rest_at + vend, value, quoted, key, rule, syntax, add)


def _yaml_prefix(value):
    """Length of an anchor (&pw) or a standard tag (!!str) in front of a plain YAML
    value; None when the value is no literal: an alias, another tag (!vault), a
    flow collection or a reserved indicator."""
    skipped = 0
    while True:
        m = re.match(rb"(?:&[^\s]+|!!(?:str|binary))[ \t]+", value[skipped:])
        if not m:
            break
        skipped += m.end()
    if value[skipped:skipped + 1] in (b"*", b"!", b"{", b"[", b"@", b"`", b"%", b"&"):
        return None
    return skipped


def _env_list_value(buf, name_line_end, name, add):
    """Kubernetes env lists: '- name: DB_PASSWORD' followed by 'value: hunter2'."""
    rule = classify_key(name)
    if rule is None:
        return
    pos = name_line_end + 1
    end = buf.find(b"\n", pos)
    end = len(buf) if end < 0 else end
    m = re.match(rb"[ \t]*value[ \t]*:(?P<rest>[^\n]*)", buf[pos:end])
    if not m:
        return
    span = _value_span(m.group("rest"), "yaml")
    if span is None:
        return
    vstart, vend, quoted = span
    value = m.group("rest")[vstart:vend]
    if not quoted and _yaml_prefix(value) != 0:
        return
    at = pos + m.start("rest")
    _assignment(at + vstart, at + vend, value, quoted, name, rule, "yaml", add)


def _block_scalar(buf, key_line_end, key_indent, key, rule, add):
    """A 'password: |' value is on the next more-indented line."""
    pos = key_line_end + 1
    for _ in range(3):
        if pos >= len(buf):
            return
        end = buf.find(b"\n", pos)
        end = len(buf) if end < 0 else end
        line = buf[pos:end]
        stripped = line.strip()
        if stripped:
            indent = len(line) - len(line.lstrip())
            if indent > key_indent:
                first = pos + indent
                _assignment(first, first + len(stripped), stripped, True, key, rule, "yaml", add)
            return
        pos = end + 1


def _assignment(vstart, vend, value, quoted, key, rule, syntax, add):
    if not is_literal_secret(value, quoted):
        return
    if rule == "private_field":
        if len(value.strip()) >= 16:
            add(vstart, vend, "private_key.field", "private_field", value)
            return
        # Too short for key material: a short "secret_key" is still a secret,
        # a short "seed" is a number for a random generator.
        if "secret" not in _key_words(key) and "private" not in _key_words(key):
            return
        rule = "secret_field"
    add(vstart, vend, "secret.password_in_" + syntax, rule, value)


# ---------------------------------------------------------------------------


def scan_paths(paths, allow=None, max_findings=DEFAULT_MAX_FINDINGS):
    """Scan paths with an allow list; return the report."""
    return Scanner(allow=allow, max_findings=max_findings).scan(paths)


def finding_location(finding):
    """'file:line', 'file@offset' for binary files, or 'file' for whole-file findings."""
    if finding.get("line") is not None:
        return "%s:%d" % (finding["file"], finding["line"])
    if finding.get("offset") is not None:
        return "%s@%d" % (finding["file"], finding["offset"])
    return finding["file"]


def summary(report, limit=10):
    """One line naming the first findings: '3 findings: registry.json:12 pii.email; ...'."""
    total = report["total"]
    shown = report["findings"][:limit]
    text = "; ".join("%s %s" % (finding_location(f), f["kind"]) for f in shown)
    more = total - len(shown)
    return "%d finding%s: %s%s" % (total, "" if total == 1 else "s", text,
                                   "; and %d more" % more if more > 0 else "")
