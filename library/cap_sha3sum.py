#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_sha3sum
short_description: SHA3-256 of a file, optionally checked against a value or a .sha3 sidecar
description:
  - Computes the SHA3-256 of O(path), reading it in 1 MiB blocks, so archives of any size
    use little memory.
  - With O(expected) or O(sidecar) it compares, and fails when they differ, naming the
    file, both hashes and the sidecar.
  - A sidecar is C(sha3sum -a 256) output, C(<64 hex>  <file name>), one line per file; an
    optional C(0x) prefix and C(*) (binary mode) are accepted. The line for the base name of
    O(path) is used.
  - With O(write_sidecar) it writes C(<64 hex>  <base name of path>) and a newline to that
    file, atomically and with mode 0644 (hashes are not secret). An identical sidecar is
    left alone. Nothing is written when a comparison fails.
version_added: "1.0.0"
author: CAP Engineering
options:
  path:
    description: The file to hash.
    type: path
    required: true
  expected:
    description: The hash it must have, C(0x) and 64 hex digits or just the 64 hex digits.
    type: str
  sidecar:
    description: A C(.sha3) file that says which hash O(path) must have.
    type: path
  write_sidecar:
    description: Where to write the sidecar of O(path), usually C(<path>.sha3).
    type: path
notes:
  - Supports check mode; the file is hashed and compared, and RV(changed) tells whether the
    sidecar would be written.
seealso:
  - module: cap_backup_prune
"""

EXAMPLES = r"""
# sha3sum -a 256 cap-backup-20251110-120000.tar.gz.enc > cap-backup-20251110-120000.tar.gz.enc.sha3
- name: Record the archive's SHA3-256 beside it
  cap_sha3sum:
    path: /backup/cap-backup-20251110-120000.tar.gz.enc
    write_sidecar: /backup/cap-backup-20251110-120000.tar.gz.enc.sha3
  register: __archive_hash

# sha3sum -a 256 -c cap-backup-20251110-120000.tar.gz.enc.sha3
- name: Check a downloaded archive against its sidecar
  cap_sha3sum:
    path: /restore/cap-backup-20251110-120000.tar.gz.enc
    sidecar: /restore/cap-backup-20251110-120000.tar.gz.enc.sha3

- name: Check an archive against the hash recorded at upload
  cap_sha3sum:
    path: /restore/cap-backup-20251110-120000.tar.gz.enc
    expected: "{{ __archive_hash.sha3_256 }}"
"""

RETURN = r"""
path:
  description: The file hashed.
  type: str
  returned: always
  sample: /backup/cap-backup-20251110-120000.tar.gz.enc
sha3_256:
  description: SHA3-256 of the file, 0x-prefixed.
  type: str
  returned: always
  sample: "0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f"
size_bytes:
  description: Size of the file in bytes.
  type: int
  returned: always
  sample: 12582912
expected:
  description: The hash compared against, 0x-prefixed (from O(expected) or read from O(sidecar)).
  type: str
  returned: when O(expected) or O(sidecar) is given
matched:
  description: Whether the file's hash equals the expected one (true whenever the task succeeds).
  type: bool
  returned: when O(expected) or O(sidecar) is given
  sample: true
sidecar_written:
  description:
    - Path of the sidecar written (or that would be); null when it already held the same
      line.
  type: str
  returned: when O(write_sidecar) is given
  sample: /backup/cap-backup-20251110-120000.tar.gz.enc.sha3
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_fsutil import atomic_write_bytes, same_content
from ansible.module_utils.cap_hashing import sha3_file
from ansible.module_utils.cap_retention import (
    SidecarError,
    normalize_digest,
    read_sidecar,
    sidecar_line,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            expected=dict(type="str"),
            sidecar=dict(type="path"),
            write_sidecar=dict(type="path"),
        ),
        mutually_exclusive=[("expected", "sidecar")],
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    name = os.path.basename(path)
    if not os.path.isfile(path):
        module.fail_json(msg="%s does not exist or is not a regular file" % path, path=path)
    expected = None
    try:
        if p["expected"] is not None:
            expected = normalize_digest(p["expected"])
        elif p["sidecar"]:
            if not os.path.isfile(p["sidecar"]):
                module.fail_json(msg="sidecar %s of %s does not exist" % (p["sidecar"], path),
                                 path=path)
            expected = read_sidecar(p["sidecar"], name)
    except SidecarError as exc:
        module.fail_json(msg="cannot check %s: %s" % (path, exc), path=path)
    except OSError as exc:
        module.fail_json(msg="cannot read sidecar %s: %s" % (exc.filename, exc.strerror), path=path)
    try:
        digest, size = sha3_file(path)
    except OSError as exc:
        module.fail_json(msg="cannot read %s: %s" % (path, exc.strerror), path=path)
    result = dict(changed=False, path=path, sha3_256=digest, size_bytes=size)
    if expected is not None:
        result.update(expected=expected, matched=digest == expected)
        if digest != expected:
            source = ("the sidecar %s says" % p["sidecar"]) if p["sidecar"] else "expected"
            module.fail_json(msg="SHA3-256 of %s is %s, %s %s: the archive is corrupt or incomplete"
                             % (path, digest, source, expected), **result)
    if p["write_sidecar"]:
        data = sidecar_line(digest, name).encode("utf-8")
        dest = p["write_sidecar"]
        changed = not same_content(dest, data)
        result.update(changed=changed, sidecar_written=dest if changed else None)
        if changed and not module.check_mode:
            try:
                atomic_write_bytes(dest, data, mode=0o644)
            except OSError as exc:
                module.fail_json(msg="cannot write sidecar %s: %s" % (dest, exc.strerror), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
