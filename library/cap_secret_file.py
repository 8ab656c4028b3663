#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_secret_file
short_description: Write a secret's raw bytes (given as base64) to an owner-only file, or remove it
description:
  - The runbook's Step 6 decodes the company private key from Vault into a file -
    C(vault kv get ... | jq -r .data.data.private_key | base64 -d > /tmp/company.ed25519).
    M(ansible.builtin.copy) cannot write raw binary from a variable; this module can.
  - O(content_base64) is decoded (white space ignored) and its bytes are written exactly as they
    are, under a temporary name with mode 0600, synced and renamed into place, so no other user can
    read it at any moment and a failure never leaves a partial file.
  - The content and any hash of it are never logged or returned; only its size is.
  - RV(changed) is true only when the file's bytes or mode differ from what is asked. A symbolic
    link at O(dest) is replaced by a regular file, never followed.
version_added: "1.0.0"
author: CAP Engineering
options:
  dest:
    description: The file to write or remove. Its directory must exist.
    type: path
    required: true
  content_base64:
    description:
      - Base64 (standard alphabet) of the raw bytes to write, as Vault's KV engine returns them.
      - Required with O(state=present).
    type: str
  state:
    description: C(present) writes the file; C(absent) removes it (the runbook's C(rm /tmp/company.ed25519)).
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - Mode of the file. Only the owner-only modes C(0600) and C(0400) are accepted, as a string
        (C("0600")) or as the YAML octal number C(0600).
    type: raw
    default: "0600"
notes:
  - Supports check mode; nothing is written or removed, and RV(changed) tells whether it would be.
  - Put C(no_log) on the task that reads the secret from Vault; this module masks its own input.
seealso:
  - module: community.hashi_vault.vault_kv2_get
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
# vault kv get -format=json secret/cap/keys/company | jq -r '.data.data.private_key' \
#   | base64 -d > /tmp/company.ed25519
- name: Read the company private key from Vault
  community.hashi_vault.vault_kv2_get:
    path: cap/keys/company
  register: __vault_company_key
  no_log: true

- name: Write the company private key to a 0600 file
  cap_secret_file:
    dest: "{{ _restore_workdir }}/company.ed25519"
    content_base64: "{{ __vault_company_key.secret.private_key }}"
  no_log: true

# rm /tmp/company.ed25519  # Clean up local copy
- name: Remove the local copy of the private key
  cap_secret_file:
    dest: "{{ _restore_workdir }}/company.ed25519"
    state: absent
"""

RETURN = r"""
dest:
  description: The file written or removed.
  type: str
  returned: always
  sample: /tmp/cap-restore/company.ed25519
size_bytes:
  description: Size of the file now; 0 after O(state=absent).
  type: int
  returned: always
  sample: 32
mode:
  description: Mode of the file, with O(state=present).
  type: str
  returned: when O(state=present)
  sample: "0600"
state:
  description: The state asked for.
  type: str
  returned: always
"""

import base64
import binascii
import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_fsutil import AtomicFile

ALLOWED_MODES = (0o600, 0o400)


def _decode(text):
    """Raw bytes of base64 text, white space (line breaks of `vault kv get`) ignored."""
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        # The message names neither the value nor its length.
        raise ValueError("content_base64 is not valid base64")


def _parse_mode(value):
    """The mode as an int when it is one of ALLOWED_MODES, else None.

    A YAML octal number arrives as an int (0600 is 384), a quoted one as a string.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            return None
    return mode if mode in ALLOWED_MODES else None


def _current(dest):
    """os.lstat of dest (a link is not followed), or None when nothing is there."""
    try:
        return os.lstat(dest)
    except FileNotFoundError:
        return None


def _same_bytes(dest, data):
    try:
        with open(dest, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            content_base64=dict(type="str", no_log=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            mode=dict(type="raw", default="0600"),
        ),
        required_if=[("state", "present", ("content_base64",))],
        supports_check_mode=True,
    )
    p = module.params
    dest = p["dest"]
    try:
        st = _current(dest)
    except OSError as exc:
        module.fail_json(msg="cannot inspect %s: %s" % (dest, exc.strerror or exc))
    if st is not None and stat.S_ISDIR(st.st_mode):
        module.fail_json(msg="%s is a directory; dest must be a file path" % dest)

    if p["state"] == "absent":
        changed = st is not None
        if changed and not module.check_mode:
            try:
                os.unlink(dest)
            except OSError as exc:
                module.fail_json(msg="cannot remove %s: %s" % (dest, exc.strerror or exc))
        module.exit_json(changed=changed, dest=dest, size_bytes=0, state="absent")

    mode = _parse_mode(p["mode"])
    if mode is None:
        module.fail_json(msg="mode %s is not allowed for a secret file %s; use 0600 or 0400"
                         % (p["mode"], dest))
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        module.fail_json(msg="directory %s of %s does not exist" % (directory, dest))
    try:
        data = _decode(p["content_base64"])
    except ValueError as exc:
        module.fail_json(msg="%s (for %s)" % (exc, dest))
    if not data:
        module.fail_json(msg="content_base64 for %s decodes to no bytes" % dest)

    is_file = st is not None and stat.S_ISREG(st.st_mode)
    same_content = is_file and st.st_size == len(data) and _same_bytes(dest, data)
    same_mode = is_file and stat.S_IMODE(st.st_mode) == mode
    changed = not (same_content and same_mode)
    if changed and not module.check_mode:
        try:
            if same_content:
                os.chmod(dest, mode)
            else:
                with AtomicFile(dest, mode=mode) as out:
                    out.write(data)
        except OSError as exc:
            module.fail_json(msg="cannot write %s: %s" % (dest, exc.strerror or exc))
    module.exit_json(changed=changed, dest=dest, size_bytes=len(data), mode="%04o" % mode, state="present")


if __name__ == "__main__":
    main()
