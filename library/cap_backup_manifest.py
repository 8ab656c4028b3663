#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_manifest
short_description: Write backup.manifest.json (backup.manifest.v1) for a staged backup
description:
  - Walks a staging directory and writes C(backup.manifest.json) in the runbook's
    C(backup.manifest.v1) format, with the SHA3-256 and size of every file.
  - A pattern in O(types) that ends in C(/) turns a whole directory into one entry whose
    hash is the tree hash of docs/hashing.md; O(total_files) still counts files.
  - The output is byte-stable: entries sorted by path, fixed key order, fixed layout.
    The same tree and options always give the same bytes, and an unchanged manifest is
    not rewritten.
  - The manifest is written to a temporary file with mode 0600 and renamed into place.
version_added: "1.0.0"
author: CAP Engineering
options:
  root:
    description: Staging directory that holds the files of the backup.
    type: path
    required: true
  dest:
    description: Where to write the manifest. Defaults to C(<root>/backup.manifest.json).
    type: path
  backup_id:
    description: Identifier of the backup, for example C(backup-20251110-120000).
    type: str
    required: true
  system_version:
    description: Version of the CAP Verifier API that produced the data.
    type: str
    required: true
  created_by:
    description: Who or what created the backup.
    type: str
    default: cap-backup-automation
  created_at:
    description:
      - Creation time in UTC as C(YYYY-MM-DDTHH:MM:SSZ).
      - Defaults to now. Pass it to make the manifest reproducible.
    type: str
  compression:
    description: Compression of the archive the manifest travels in.
    type: str
    choices: [gzip, none]
    default: gzip
  encryption:
    description: Encryption of the archive the manifest travels in.
    type: str
    choices: [none, aes-256-gcm]
    default: none
  types:
    description:
      - Maps path patterns (shell globs on the relative path) to the runbook's entry types
        C(database), C(policy_store), C(key_metadata), C(configuration), C(documentation).
      - The first matching pattern wins. A pattern ending in C(/) makes that directory one entry.
      - A file that no pattern matches is an error, so nothing enters a backup untyped.
    type: dict
  mode:
    description: File mode of the manifest.
    type: raw
    default: "0600"
notes:
  - Supports check mode; nothing is written, and RV(changed) tells whether it would be.
seealso:
  - module: cap_backup_verify
  - module: cap_backup_sign
"""

EXAMPLES = r"""
- name: Describe the staged backup
  cap_backup_manifest:
    root: /backup/staging/backup-20251110-120000
    backup_id: backup-20251110-120000
    system_version: "0.11.0"
    created_at: "2025-11-10T12:00:00Z"
    encryption: aes-256-gcm

- name: Same, with a custom layout
  cap_backup_manifest:
    root: /srv/stage
    dest: /backup/backup.manifest.json
    backup_id: manual-20251110-120000
    system_version: "0.11.0"
    types:
      registry.json: database
      policy_store.json: policy_store
      keys/metadata/: key_metadata
      "config/*": configuration
"""

RETURN = r"""
dest:
  description: Path of the manifest.
  type: str
  returned: always
  sample: /backup/staging/backup-20251110-120000/backup.manifest.json
sha3_256:
  description: SHA3-256 of the manifest bytes, 0x-prefixed.
  type: str
  returned: always
  sample: "0x5f1c0e6b9e1c3c2d4f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e"
manifest:
  description: The manifest document.
  type: dict
  returned: always
total_files:
  description: Number of files described, counting the files inside directory entries.
  type: int
  returned: always
  sample: 15
total_size_bytes:
  description: Sum of the entries' sizes.
  type: int
  returned: always
  sample: 12582912
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_fsutil import atomic_write_bytes, same_content
from ansible.module_utils.cap_hashing import sha3_bytes
from ansible.module_utils.cap_manifest import (
    COMPRESSIONS,
    DEFAULT_TYPES,
    ENCRYPTIONS,
    MANIFEST_NAME,
    ManifestError,
    build_manifest,
    serialize_manifest,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            dest=dict(type="path"),
            backup_id=dict(type="str", required=True),
            system_version=dict(type="str", required=True),
            created_by=dict(type="str", default="cap-backup-automation"),
            created_at=dict(type="str"),
            compression=dict(type="str", choices=list(COMPRESSIONS), default="gzip"),
            encryption=dict(type="str", choices=list(ENCRYPTIONS), default="none"),
            types=dict(type="dict"),
            mode=dict(type="raw", default="0600"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    dest = p["dest"] or os.path.join(p["root"], MANIFEST_NAME)
    created_at = p["created_at"] or datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    try:
        manifest = build_manifest(
            p["root"], backup_id=p["backup_id"], created_at=created_at,
            system_version=p["system_version"], created_by=p["created_by"],
            compression=p["compression"], encryption=p["encryption"],
            types=p["types"] or DEFAULT_TYPES)
    except ManifestError as exc:
        module.fail_json(msg="cannot build manifest for %s: %s" % (p["root"], exc))
    except OSError as exc:
        module.fail_json(msg="cannot read %s: %s" % (exc.filename or p["root"], exc.strerror))
    data = serialize_manifest(manifest)
    changed = not same_content(dest, data)
    if changed and not module.check_mode:
        try:
            atomic_write_bytes(dest, data, mode=int(str(p["mode"]), 8))
        except OSError as exc:
            module.fail_json(msg="cannot write manifest %s: %s" % (dest, exc.strerror))
    module.exit_json(changed=changed, dest=dest, sha3_256=sha3_bytes(data), manifest=manifest,
                     total_files=manifest["total_files"],
                     total_size_bytes=manifest["total_size_bytes"])


if __name__ == "__main__":
    main()
