#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_policy_store_rebuild
short_description: Rebuild the policy store from the registry (DR scenario 3, option B)
description:
  - Reads the compiled policies and their IR from the registry's C(policies) table and writes
    a C(cap-policy-store.v1) document, the body that C(POST /api/v1/policy/restore) takes.
  - Each record's C(policy_hash) and C(ir_hash) are checked against SHA3-256 of the canonical
    JSON of its content first; a record that does not match fails the task and nothing is written.
  - The output is byte-stable (canonical JSON, records sorted by C(policy_hash)), the same form the
    API exports; an unchanged store is not rewritten. Written 0600 under a temporary name and renamed.
version_added: "1.0.0"
author: CAP Engineering
options:
  registry:
    description: The registry, C(registry.sqlite) or its C(registry.json) form.
    type: path
    required: true
  dest:
    description: Where to write the rebuilt C(policy_store.json).
    type: path
    required: true
notes:
  - Supports check mode; the store is rebuilt and checked, nothing is written.
seealso:
  - module: cap_api_verify
"""

EXAMPLES = r"""
# DR scenario 3, option B: rebuild from registry entries, then restore through the API.
- name: Rebuild the policy store from the registry
  cap_policy_store_rebuild:
    registry: /restore/registry.sqlite
    dest: /restore/policy_store.rebuilt.json
  register: __rebuilt
"""

RETURN = r"""
dest:
  description: Path of the rebuilt store.
  type: str
  returned: always
policies:
  description: Number of policies in the rebuilt store.
  type: int
  returned: always
  sample: 30
sha3_256:
  description: SHA3-256 of the rebuilt store's bytes, 0x-prefixed.
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_fsutil import atomic_write_bytes, same_content
from ansible.module_utils.cap_hashing import sha3_bytes
from ansible.module_utils.cap_registry import RegistryFileError, policy_store_from_registry


def main():
    module = AnsibleModule(
        argument_spec=dict(
            registry=dict(type="path", required=True),
            dest=dict(type="path", required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        data, count = policy_store_from_registry(p["registry"])
    except RegistryFileError as exc:
        module.fail_json(msg="cannot rebuild the policy store: %s" % exc)
    changed = not same_content(p["dest"], data)
    if changed and not module.check_mode:
        try:
            atomic_write_bytes(p["dest"], data)
        except OSError as exc:
            module.fail_json(msg="cannot write %s: %s" % (p["dest"], exc.strerror))
    module.exit_json(changed=changed, dest=p["dest"], policies=count, sha3_256=sha3_bytes(data))


if __name__ == "__main__":
    main()
