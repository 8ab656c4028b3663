#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_scan
short_description: Find private keys, secrets and PII that must never be in a backup
description:
  - Scans files and directory trees for what the runbook's "What is NOT Backed Up" section
    excludes, private keys, secrets and PII, and fails when it finds any.
  - "Private keys: PEM and OpenSSH private key blocks of every flavour (also base64-wrapped),
    C(*.ed25519) files, 32 or 64 byte random files with a key-like name, JSON and YAML fields
    such as C(private_key), C(secret_key), C(seed), the C(d) of a JWK, and base64 DER private keys."
  - "Secrets: Vault and OpenBao tokens, AWS access key ids and secret keys, bearer tokens, JWTs,
    passwords in URLs, and literal values of password, secret, token and API key fields in YAML,
    JSON, INI and env files. Empty values, C(null), Jinja, C(${ENV}) references, Kubernetes
    Secret references (C(existingSecret), C(secretKeyRef)) and placeholders are not findings."
  - "PII: e-mail addresses, phone numbers in international and common national formats, and
    IBANs with a valid mod-97 checksum."
  - Text is scanned line by line and binary files (SQLite databases) as their printable runs,
    block by block with overlap, so memory stays bounded whatever the file size.
  - Findings name the file, the line (or the byte offset in a binary file) and the kind, never
    the value found nor any part of it. docs/scan.md describes every rule.
  - Symbolic links inside a tree are reported in RV(symlinks) and never followed.
  - Reads only; never changes anything.
version_added: "1.0.0"
author: CAP Engineering
options:
  paths:
    description:
      - Files and directories to scan; directories are walked recursively.
      - Findings in a directory are reported relative to it; a named file as given.
    type: list
    elements: path
    required: true
  allow:
    description:
      - Entries that suppress findings.
      - A string is a glob matched case-insensitively against the value found, for example
        C(cap-engineering@example.com) or C(*@example.com). The value itself is never returned.
      - A dict may hold C(kind), C(rule), C(path) and C(value) globs, all of which must match,
        and a free-text C(reason). C(path) matches the reported file path or the absolute path;
        C(*) matches across C(/).
      - An entry that would match every finding, or names no existing kind or rule, is an error.
      - Do not put secrets here; this list appears in the task's invocation.
    type: list
    elements: raw
    default: []
  fail_on_findings:
    description:
      - Whether findings make the task fail. With C(false) they are only reported.
      - Unreadable files make the task fail either way, because the scan is then incomplete.
    type: bool
    default: true
  max_findings:
    description: How many findings RV(findings) lists at most; RV(counts) and RV(total) count all.
    type: int
    default: 1000
notes:
  - Supports check mode; the module never changes anything and reports RV(changed=false).
  - Compressed or encrypted files are scanned as bytes only; scan the staging tree before it
    is archived and encrypted.
seealso:
  - module: cap_backup_manifest
  - module: cap_backup_verify
"""

EXAMPLES = r"""
# Runbook "Compliance Checks": "No PII in backup archive (verify with grep)" and
# "Secrets not in backup (verify with strings)", on the staged backup before it is archived.
- name: Check the staged backup for keys, secrets and PII
  cap_backup_scan:
    paths:
      - /backup/staging/backup-20251110-120000
    allow:
      - cap-engineering@example.com
      - kind: pii.email
        path: "docs/*"
        reason: operational documentation names its contacts

# Report only, for a dashboard; the task does not fail.
- name: Count findings in the live registry
  cap_backup_scan:
    paths: [/app/build/registry.sqlite]
    fail_on_findings: false
  register: __scan

- name: Show where they are
  ansible.builtin.debug:
    msg: "{{ __scan.findings | map(attribute='file') | unique }}"
"""

RETURN = r"""
findings:
  description:
    - "One item per finding, in file order: C(file), C(line) (null in binary files and for
      whole-file findings), C(column), C(offset) (byte offset in the file), C(kind) and C(rule)."
    - Never the value found.
  type: list
  elements: dict
  returned: always
  sample:
    - {file: config/helm/values-prod.yaml, line: 40, column: 13, offset: 1187,
       kind: secret.password_in_yaml, rule: password_field}
    - {file: registry.sqlite, line: null, column: null, offset: 12291, kind: pii.email, rule: email}
    - {file: keys/company.ed25519, line: null, column: null, offset: null,
       kind: private_key.ed25519_file, rule: ed25519_file_name}
findings_truncated:
  description: Whether there were more findings than O(max_findings).
  type: bool
  returned: always
total:
  description: Number of findings, allowed ones not counted.
  type: int
  returned: always
  sample: 3
counts:
  description: Findings per kind, every kind listed.
  type: dict
  returned: always
  sample: {pii.email: 1, secret.password_in_yaml: 1, private_key.ed25519_file: 1, pii.phone: 0}
allowed:
  description: Number of findings the allow list suppressed.
  type: int
  returned: always
  sample: 2
allow_hits:
  description:
    - Findings suppressed by each O(allow) entry, in order.
    - A 0 marks an entry that is no longer needed.
  type: list
  elements: int
  returned: always
  sample: [2, 0]
files_scanned:
  description: Number of files read.
  type: int
  returned: always
  sample: 15
bytes_scanned:
  description: Sum of the sizes of the files read.
  type: int
  returned: always
  sample: 12582912
symlinks:
  description: Symbolic links found inside the trees, with their targets; not followed.
  type: list
  elements: dict
  returned: always
  sample: [{file: keys/current, target: /app/keys/company.ed25519}]
skipped:
  description: Entries that are not regular files (sockets, FIFOs, devices), not read.
  type: list
  elements: dict
  returned: always
errors:
  description: Files or directories that could not be read; any makes the task fail.
  type: list
  elements: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_scan import (
    DEFAULT_MAX_FINDINGS,
    ScanError,
    Scanner,
    summary,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            # Allow entries name what may appear (contact addresses, kinds, paths),
            # never a secret, and stay visible in the invocation on purpose.
            allow=dict(type="list", elements="raw", default=[], no_log=False),
            fail_on_findings=dict(type="bool", default=True),
            max_findings=dict(type="int", default=DEFAULT_MAX_FINDINGS),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        report = Scanner(allow=p["allow"], max_findings=p["max_findings"]).scan(p["paths"])
    except ScanError as exc:
        module.fail_json(msg="cannot scan: %s" % exc)
    result = dict(changed=False, **report)
    if report["symlinks"]:
        module.warn("%d symbolic link(s) not followed: %s" % (
            len(report["symlinks"]),
            ", ".join("%s -> %s" % (s["file"], s["target"]) for s in report["symlinks"][:5])))
    if report["errors"]:
        module.fail_json(msg="scan incomplete, cannot read: %s" % "; ".join(
            "%s (%s)" % (e["file"], e["error"]) for e in report["errors"][:5]), **result)
    if report["total"] and p["fail_on_findings"]:
        module.fail_json(msg=summary(report), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
