#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_verify
short_description: Check an extracted backup against its backup.manifest.json
description:
  - Validates the manifest (version, hash format, sizes, safe relative paths) and then
    checks every entry against the files under O(root) by SHA3-256 and size; directory
    entries are checked by their tree hash.
  - Reports each entry as C(ok), C(mismatch) (with both hashes), C(missing) or C(unreadable),
    and lists files under O(root) that the manifest does not describe.
  - Fails when anything is wrong, with a message naming the files and what differs. Prints
    the runbook's step 2 lines in RV(lines).
  - Reads only; never changes anything.
version_added: "1.0.0"
author: CAP Engineering
options:
  manifest:
    description: Path of C(backup.manifest.json).
    type: path
    required: true
  root:
    description: Directory holding the extracted backup. Defaults to the manifest's directory.
    type: path
  ignore:
    description: Relative paths under O(root) that are not part of the backup content.
    type: list
    elements: str
    default: [backup.manifest.json, backup.manifest.json.sig]
  fail_on_extra:
    description: Whether files that the manifest does not list make the check fail.
    type: bool
    default: true
notes:
  - Supports check mode; the module never changes anything.
seealso:
  - module: cap_backup_manifest
"""

EXAMPLES = r"""
# ./scripts/restore.sh --verify-only --backup-dir /restore --manifest /restore/backup.manifest.json
- name: Verify backup integrity
  cap_backup_verify:
    manifest: /restore/backup.manifest.json
    root: /restore
  register: __verify

- name: Show the runbook's lines
  ansible.builtin.debug:
    msg: "{{ __verify.lines }}"
"""

RETURN = r"""
ok:
  description: Whether every entry matched and no extra file was found.
  type: bool
  returned: always
lines:
  description: The runbook's step 2 output, one line per entry and a verdict.
  type: list
  elements: str
  returned: always
  sample:
    - "🔍 Verifying backup integrity..."
    - "✅ registry.sqlite: SHA3-256 matches (0x1da941f7...)"
    - "✅ All 15 files verified successfully"
results:
  description: One item per manifest entry with path, type, status, expected, actual, expected_size, actual_size.
  type: list
  elements: dict
  returned: when the manifest is valid
extra:
  description: Files under root that the manifest does not describe.
  type: list
  elements: str
  returned: when the manifest is valid
files_checked:
  description: Number of files read, counting files inside directory entries.
  type: int
  returned: when the manifest is valid
manifest:
  description: The validated manifest document.
  type: dict
  returned: when the manifest is valid
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_manifest import (
    CONTROL_FILES,
    ManifestError,
    failure_summary,
    load_manifest,
    report_lines,
    verify_tree,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            manifest=dict(type="path", required=True),
            root=dict(type="path"),
            ignore=dict(type="list", elements="str", default=list(CONTROL_FILES)),
            fail_on_extra=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    root = p["root"] or os.path.dirname(os.path.abspath(p["manifest"]))
    try:
        manifest = load_manifest(p["manifest"])
        report = verify_tree(manifest, root, ignore=tuple(p["ignore"]))
    except ManifestError as exc:
        module.fail_json(msg="backup verification failed: %s" % exc, ok=False,
                         lines=["\u274C %s" % exc])
    if not p["fail_on_extra"] and report["extra"] and not report["count_mismatch"]:
        report["ok"] = all(r["status"] == "ok" for r in report["results"])
    lines = report_lines(report)
    result = dict(changed=False, ok=report["ok"], lines=lines, results=report["results"],
                  extra=report["extra"], files_checked=report["files_checked"],
                  manifest=manifest)
    if not report["ok"]:
        module.fail_json(msg="backup verification failed in %s: %s" % (root, failure_summary(report)),
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
