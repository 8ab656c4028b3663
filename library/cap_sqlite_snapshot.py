#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_sqlite_snapshot
short_description: Consistent snapshot of a live SQLite registry through the online backup API
description:
  - Copies an SQLite database with SQLite's online backup API in a single step, so the copy
    is one consistent read transaction of the source, safe while other processes write to it.
    It never copies the live file's bytes.
  - Runs C(PRAGMA integrity_check) on the copy and refuses to put a copy that fails it in place.
  - Returns the copy's SHA3-256, size and the row count of every table.
  - With O(format=json) it also writes the registry's JSON form (cap-registry.v1, see
    docs/registry-json.md) from the same consistent copy.
  - The copy is written 0600 under a temporary name and renamed into place; when it is
    identical to what O(dest) already holds, nothing is replaced and RV(changed) is false.
version_added: "1.0.0"
author: CAP Engineering
options:
  src:
    description: The live database, for example C(/app/build/registry.sqlite).
    type: path
    required: true
  dest:
    description: Where to write the snapshot.
    type: path
    required: true
  format:
    description:
      - C(sqlite) writes only the database copy.
      - C(json) also writes the JSON export to O(json_dest).
    type: str
    choices: [sqlite, json]
    default: sqlite
  json_dest:
    description: Path of the JSON export. Defaults to O(dest) with its extension replaced by C(.json).
    type: path
  verify:
    description:
      - Run C(PRAGMA integrity_check) on the copy and hash it before putting it in place.
      - V(false) leaves both to the step that reads the copy next, so the registry is not read
        twice more; the backup role packs the copy with M(cap_backup_archive)'s O(cap_backup_archive#module:check_sqlite),
        which runs the integrity check while compressing and refuses to write the archive when it
        fails, and M(cap_backup_manifest) hashes it. RV(sha3_256) and RV(row_counts) are then null
        and RV(integrity) is C(deferred).
    type: bool
    default: true
  busy_timeout:
    description: Seconds to wait for a lock held by a writer before giving up.
    type: int
    default: 30
  mode:
    description: File mode of the snapshot and the export.
    type: raw
    default: "0600"
notes:
  - Supports check mode; the copy is made and checked in a temporary file, then discarded.
  - The source is opened read-only.
seealso:
  - module: cap_backup_manifest
"""

EXAMPLES = r"""
# sqlite3 /app/build/registry.sqlite ".backup /backup/stage/registry.sqlite"
- name: Snapshot the registry
  cap_sqlite_snapshot:
    src: /app/build/registry.sqlite
    dest: /backup/stage/registry.sqlite
  register: __snapshot

# Same, plus the runbook's registry.json form
- name: Snapshot and export the registry
  cap_sqlite_snapshot:
    src: /app/build/registry.sqlite
    dest: /backup/stage/registry.sqlite
    format: json
    json_dest: /backup/stage/registry.json
"""

RETURN = r"""
dest:
  description: Path of the snapshot.
  type: str
  returned: always
sha3_256:
  description: SHA3-256 of the snapshot, 0x-prefixed; null with O(verify=false).
  type: str
  returned: always
  sample: "0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f"
size_bytes:
  description: Size of the snapshot in bytes.
  type: int
  returned: always
  sample: 10485760
row_counts:
  description: Number of rows in each table of the snapshot; null with O(verify=false).
  type: dict
  returned: always
  sample: {"registry_entries": 300, "policies": 30}
integrity:
  description: Result of PRAGMA integrity_check on the copy, or C(deferred) with O(verify=false).
  type: str
  returned: always
  sample: ok
json_dest:
  description: Path of the JSON export.
  type: str
  returned: when O(format=json)
json_sha3_256:
  description: SHA3-256 of the JSON export, 0x-prefixed.
  type: str
  returned: when O(format=json)
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_sqlite import SnapshotError, export_json_file, snapshot


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            format=dict(type="str", choices=["sqlite", "json"], default="sqlite"),
            json_dest=dict(type="path"),
            verify=dict(type="bool", default=True),
            busy_timeout=dict(type="int", default=30),
            mode=dict(type="raw", default="0600"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["busy_timeout"] < 0:
        module.fail_json(msg="busy_timeout must not be negative")
    if os.path.abspath(p["src"]) == os.path.abspath(p["dest"]):
        module.fail_json(msg="dest %s is the source itself; a snapshot needs another path" % p["dest"])
    mode = int(str(p["mode"]), 8)
    try:
        info = snapshot(p["src"], p["dest"], busy_timeout_ms=p["busy_timeout"] * 1000,
                        mode=mode, check_only=module.check_mode, verify=p["verify"])
    except SnapshotError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="snapshot of %s to %s failed: %s" % (p["src"], p["dest"], exc))
    result = dict(changed=info["changed"], dest=p["dest"], sha3_256=info["sha3_256"],
                  size_bytes=info["size_bytes"], row_counts=info["row_counts"],
                  integrity=info["integrity"])
    if p["format"] == "json":
        json_dest = p["json_dest"] or os.path.splitext(p["dest"])[0] + ".json"
        result["json_dest"] = json_dest
        if module.check_mode:
            result["changed"] = result["changed"] or not os.path.exists(json_dest)
        else:
            try:
                export = export_json_file(p["dest"], json_dest, mode=mode)
            except (OSError, SnapshotError) as exc:
                module.fail_json(msg="JSON export of %s to %s failed: %s" % (p["dest"], json_dest, exc))
            result["json_sha3_256"] = export["sha3_256"]
            result["changed"] = result["changed"] or export["changed"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
