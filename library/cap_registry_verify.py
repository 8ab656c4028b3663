#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_registry_verify
short_description: Verify every registry entry's Ed25519 signature and describe the registry
description:
  - Reads a CAP registry, C(registry.sqlite) or its C(registry.json) form (cap-registry.v1,
    loaded into an in-memory database), and checks every entry in C(registry_entries), covering
    the runbook's Signature Checks ("Registry entries have valid KIDs", "Signatures verify
    with restored public keys").
  - An entry is C(valid) when its hashes and timestamp have the project's forms and its
    signature verifies, under the key its C(kid) names, over the canonical JSON of
    C(created_at), C(kid), C(manifest_hash), C(policy_hash) and C(proof_hash)
    (C(cap_registry.entry_message)). It is C(unknown_kid) when no trusted key carries its kid,
    and C(invalid) otherwise.
  - Returns RV(listing_sha256), the SHA-256 of the text the sqlite3 CLI prints for
    C(SELECT manifest_hash, proof_hash, kid FROM registry_entries ORDER BY manifest_hash;)
    (C(cap_registry.LISTING_QUERY)), which is the runbook's Test 5 done for every entry. Compare
    it with C(sqlite3 -batch -noheader registry.sqlite "<LISTING_QUERY>" | sha256sum) run inside
    the restored pod.
  - Rows are streamed in chunks, so memory stays bounded for SQLite registries; from 20,000
    entries on, the signature checks are spread over forked worker processes. The JSON form is
    loaded into memory as a whole.
  - Reads only; never changes anything.
version_added: "1.0.0"
author: CAP Engineering
options:
  path:
    description: The registry file, for example C(/restore/registry.sqlite).
    type: path
    required: true
  format:
    description:
      - C(auto) tells SQLite and JSON apart by the file's first bytes.
    type: str
    choices: [auto, sqlite, json]
    default: auto
  keys_dir:
    description:
      - Public keys to verify with, laid out like the backup's C(keys/metadata/) directory
        (C(*.v1.json) cap-key.v1 documents and C(trusted/<kid>.pub) PEM files), read with
        C(cap_keys.load_key_tree).
    type: path
    required: true
  fail_on_invalid:
    description: Fail when any entry is C(invalid) or C(unknown_kid). The result is returned either way.
    type: bool
    default: true
  sample:
    description:
      - Number of entries to return in RV(samples), spread evenly by id; 2 gives the first and
        the last. Feed them to M(cap_api_verify)'s O(cap_api_verify#module:entries).
    type: int
    default: 2
  workers:
    description: Worker processes for large registries. Defaults to the number of usable CPUs.
    type: int
notes:
  - Supports check mode; the module only reads, so check mode runs every check.
  - Needs the Python library C(cryptography) on the host that runs it.
seealso:
  - module: cap_api_verify
  - module: cap_sqlite_snapshot
"""

EXAMPLES = r"""
# Signature Checks of the runbook for the extracted backup:
#   every entry's signature against keys/metadata/, plus the Test 5 listing digest
- name: Verify the backup's registry
  cap_registry_verify:
    path: /restore/registry.sqlite
    keys_dir: /restore/keys/metadata
  register: __registry

# sqlite3 -batch -noheader /app/build/registry.sqlite "<query>" | sha256sum, inside the pod
- name: Compare the restored registry listing with the backup's
  kubernetes.core.k8s_exec:
    namespace: cap-restore
    pod: "{{ _restore_pod }}"
    command: >-
      sh -c 'set -eu; sqlite3 -batch -noheader /app/build/registry.sqlite
      "SELECT manifest_hash, proof_hash, kid FROM registry_entries ORDER BY manifest_hash;"
      | sha256sum'
  register: __listing
  changed_when: false
  failed_when: __listing.stdout.split()[0] != __registry.listing_sha256

# Report without failing, for a DR drill report
- name: Describe the registry.json form
  cap_registry_verify:
    path: /restore/registry.json
    keys_dir: /restore/keys/metadata
    fail_on_invalid: false
    sample: 5
"""

RETURN = r"""
path:
  description: The registry file.
  type: str
  returned: always
format:
  description: Form of the registry file.
  type: str
  returned: always
  sample: sqlite
entries:
  description: Number of rows in C(registry_entries).
  type: int
  returned: always
  sample: 300
policies:
  description: Number of rows in C(policies), or null when the registry has no such table.
  type: int
  returned: always
  sample: 30
listing_sha256:
  description:
    - SHA-256 (hex, as C(sha256sum) prints it) of the sqlite3 CLI's list-mode output of
      RV(listing_query).
  type: str
  returned: always
  sample: 5d41402abc4b2a76b9719d911017c592ae5c0c1f6e6b1d5d2b0a8f3e4d5c6b7a
listing_query:
  description: The query RV(listing_sha256) is computed over (C(cap_registry.LISTING_QUERY)).
  type: str
  returned: always
  sample: "SELECT manifest_hash, proof_hash, kid FROM registry_entries ORDER BY manifest_hash;"
signatures:
  description: Entry counts by verdict; they add up to RV(entries).
  type: dict
  returned: always
  sample: {"valid": 299, "invalid": 1, "unknown_kid": 0}
invalid:
  description:
    - The first 20 entries (by id) that are not valid, with the reason. Never holds key material.
  type: list
  elements: dict
  returned: always
  sample:
    - id: 17
      manifest_hash: "0x0b7c...e1"
      kid: cap-company-b3ba1c39847d
      verdict: invalid
      reason: signature does not verify under kid cap-company-b3ba1c39847d
kids:
  description: Every kid that signs some entry, sorted.
  type: list
  elements: str
  returned: always
  sample: [cap-auditor-5f0e2a1b9c3d, cap-company-b3ba1c39847d, cap-legacy-0d9a8b7c6e5f]
trusted_kids:
  description: Kids of the public keys loaded from O(keys_dir), sorted.
  type: list
  elements: str
  returned: always
samples:
  description: Sampled entries (id, manifest_hash, proof_hash, kid), first and last by id for O(sample=2).
  type: list
  elements: dict
  returned: always
row_counts:
  description: Rows in every table of the registry.
  type: dict
  returned: always
  sample: {"policies": 30, "registry_entries": 300}
workers:
  description: Processes that checked signatures (1 when the registry is small).
  type: int
  returned: always
duration_seconds:
  description: Time the checks took.
  type: float
  returned: always
  sample: 0.215
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.cap_keys import CapKeyError, load_key_tree
from ansible.module_utils.cap_registry import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    FORMATS,
    HAS_CRYPTOGRAPHY,
    LISTING_QUERY,
    RegistryFileError,
    verify_registry,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", choices=list(FORMATS), default="auto"),
            keys_dir=dict(type="path", required=True),
            fail_on_invalid=dict(type="bool", default=True),
            sample=dict(type="int", default=2),
            workers=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    if p["sample"] < 0:
        module.fail_json(msg="sample must not be negative, got %d" % p["sample"])
    if p["workers"] is not None and p["workers"] < 1:
        module.fail_json(msg="workers must be at least 1, got %d" % p["workers"])
    try:
        public_keys = load_key_tree(p["keys_dir"])
    except CapKeyError as exc:
        module.fail_json(msg="cannot load public keys from %s: %s" % (p["keys_dir"], exc))
    except OSError as exc:
        module.fail_json(msg="cannot read public keys in %s: %s" % (p["keys_dir"], exc.strerror or exc))
    if not public_keys:
        module.fail_json(msg="no public keys in %s (expected *.v1.json or trusted/*.pub)" % p["keys_dir"])
    try:
        info = verify_registry(p["path"], public_keys, fmt=p["format"], sample=p["sample"],
                               workers=p["workers"])
    except RegistryFileError as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=False, path=p["path"], listing_query=LISTING_QUERY,
                  trusted_kids=sorted(public_keys), **info)
    bad = info["signatures"]["invalid"] + info["signatures"]["unknown_kid"]
    if bad and p["fail_on_invalid"]:
        first = info["invalid"][0]
        module.fail_json(
            msg="registry %s: %d of %d entries fail verification (%d invalid, %d with an unknown kid); "
                "first: %s: %s" % (p["path"], bad, info["entries"], info["signatures"]["invalid"],
                                   info["signatures"]["unknown_kid"], first["manifest_hash"],
                                   first["reason"]),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
