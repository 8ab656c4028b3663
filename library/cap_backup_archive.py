#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_archive
short_description: Pack a backup tree into a deterministic tar.gz, or extract one safely
description:
  - With O(state=packed), writes the directory O(src) as a tar archive (gzip or plain) to the
    file O(dest). The bytes depend only on the tree's content; entries are sorted by path and
    have a fixed mtime, owner 0 and normalised modes, and the gzip header has no name or time.
    The same tree always gives the same archive and the same RV(sha3_256); an unchanged
    archive is not rewritten.
  - Compression runs block-parallel on O(threads) threads; the tar stream is cut into 512 KiB
    blocks and each becomes one gzip member compressed by libdeflate (gunzip, tar and Python's
    gzip read the members as one stream). The output does not depend on the thread count or
    the CPU. The archive is written to a temporary file (0600) and renamed into place.
  - Symbolic links, devices, FIFOs and sockets in O(src) are refused, never followed.
  - With O(state=extracted), extracts the archive O(src) (tar.gz or plain tar, detected by its
    magic bytes) into the directory O(dest). The whole archive is validated first, and an
    archive with an absolute or C(..) path, a link, a device, a FIFO, a duplicate member, a
    member below a file or link, an overlong name, a corrupt or truncated stream, or more than
    O(max_size_bytes) of content is refused before anything is written.
  - Extraction writes into a fresh private directory next to O(dest) and moves it into place
    only when everything succeeded, so a failure leaves O(dest) as it was.
  - docs/archive.md describes the archive format and the extraction rules precisely.
version_added: "1.0.0"
author: CAP Engineering
requirements:
  - deflate (libdeflate bindings), to pack with O(compression=gzip); extraction needs no
    extra package
  - cryptography, to encrypt while packing
options:
  state:
    description:
      - V(packed) writes the archive O(dest) from the directory O(src).
      - V(extracted) makes the directory O(dest) hold the content of the archive O(src).
    type: str
    required: true
    choices: [packed, extracted]
  src:
    description: The directory to pack, or the archive to extract.
    type: path
    required: true
  dest:
    description:
      - The archive file to write, or the directory to extract into.
      - Its parent directory must exist. When packing it must not lie inside O(src).
    type: path
    required: true
  compression:
    description:
      - Compression of the archive written with O(state=packed); the values of the manifest's
        C(compression) field.
      - Extraction detects the compression from the archive itself and ignores this option.
    type: str
    choices: [gzip, none]
    default: gzip
  compression_level:
    description: Deflate level for O(compression=gzip), 0 (store) to 9 (smallest).
    type: int
    choices: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    default: 6
  threads:
    description:
      - Compression threads for O(state=packed), 1 to 64.
      - Defaults to the CPUs available to the process, at most 8. The archive's bytes are
        the same for every value.
    type: int
  mtime:
    description:
      - Modification time (seconds since the epoch) written for every entry with O(state=packed).
      - Files' own times never enter the archive.
    type: int
    default: 0
  mode:
    description:
      - File mode of the archive written with O(state=packed), as an octal string.
    type: raw
    default: "0600"
  force:
    description:
      - With O(state=extracted), replace a non-empty O(dest) whose content differs from the
        archive. The old tree is swapped out atomically and then removed.
      - Without it such a O(dest) is an error. A O(dest) that already holds exactly the
        archive's content is left alone either way.
    type: bool
    default: false
  encryption_key:
    description:
      - With O(state=packed), encrypt the archive as it is written (AES-256-GCM, the CAPCRYPT
        stream of docs/encryption.md) with this key, the base64 of 32 bytes. The unencrypted
        archive never touches the disk; M(cap_backup_crypt) decrypts the result.
      - An encrypted archive carries a fresh nonce, so it is written on every run.
    type: str
  encryption_key_file:
    description: Like O(encryption_key), from a file holding the base64 key or the 32 raw bytes.
    type: path
  encryption_key_id:
    description: Key id stored in the encryption header; defaults to one derived from the key.
    type: str
  wrapped_key:
    description:
      - With O(encryption_key), the data key wrapped by Vault Transit (C(vault:v1:...)), stored in the
        header so a restore can unwrap it (envelope encryption).
    type: str
  check_sqlite:
    description:
      - With O(state=packed), SQLite databases inside O(src) (relative paths) on which
        C(PRAGMA integrity_check) runs while the archive is compressed. When a check fails the
        task fails and no archive is written. M(cap_sqlite_snapshot) with C(verify=false) leaves
        the check of its copy to this step.
    type: list
    elements: str
    default: []
  max_size_bytes:
    description:
      - With O(state=extracted), refuse archives whose uncompressed tar stream is larger than
        this (protection against decompression bombs).
    type: int
    default: 68719476736
  max_members:
    description: With O(state=extracted), refuse archives with more members than this.
    type: int
    default: 1000000
notes:
  - Supports check mode. Packing compresses the tree without writing anything and reports
    whether O(dest) would change. Extraction validates the whole archive, compares it with
    O(dest), writes nothing and reports whether it would extract.
  - Hard links inside O(src) are packed as separate regular files.
  - Extraction never creates links, devices or FIFOs, creates directories 0755 and files 0644
    (0755 when the archive gives any execute bit), drops setuid, setgid and sticky bits and
    leaves ownership to the user running the module.
seealso:
  - module: cap_backup_manifest
  - module: cap_backup_verify
"""

EXAMPLES = r"""
# tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
#     -czf /backup/cap-backup-20251110-120000.tar.gz -C /backup/staging/backup-20251110-120000 .
- name: Pack the staged backup
  cap_backup_archive:
    state: packed
    src: /backup/staging/backup-20251110-120000
    dest: /backup/cap-backup-20251110-120000.tar.gz
  register: __archive

# tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
#     -cf /backup/stage.tar -C /srv/stage .
- name: Pack without compression, for a pipeline that compresses on its own
  cap_backup_archive:
    state: packed
    src: /srv/stage
    dest: /backup/stage.tar
    compression: none

# tar -czf - -C stage . | openssl enc -aes-256-gcm ... > cap-backup-...tar.gz.enc, in one pass,
# with the registry's integrity check running beside it
- name: Pack and encrypt the staged backup
  cap_backup_archive:
    state: packed
    src: /backup/staging/backup-20251110-120000
    dest: /backup/cap-backup-20251110-120000.tar.gz.enc
    encryption_key_file: /keys/backup.key
    check_sqlite: [registry.sqlite]

# cd /restore && tar -xzf /backup/cap-backup-20251110-120000.tar.gz
- name: Extract the backup archive (runbook restore step 1)
  cap_backup_archive:
    state: extracted
    src: /backup/cap-backup-20251110-120000.tar.gz
    dest: /restore

# rm -rf /restore && mkdir /restore && \
#     tar -xzf /backup/cap-backup-20251110-120000.tar.gz -C /restore
- name: Replace an earlier restore with this archive
  cap_backup_archive:
    state: extracted
    src: /backup/cap-backup-20251110-120000.tar.gz
    dest: /restore
    force: true
"""

RETURN = r"""
dest:
  description: The archive written (packed) or the directory extracted into (extracted).
  type: str
  returned: always
  sample: /backup/cap-backup-20251110-120000.tar.gz
src:
  description: The directory packed or the archive extracted, as an absolute path.
  type: str
  returned: always
  sample: /backup/staging/backup-20251110-120000
sha3_256:
  description: SHA3-256 of the archive file's bytes (encrypted when encrypted), 0x-prefixed.
  type: str
  returned: always
  sample: "0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f"
plain_sha3_256:
  description: SHA3-256 of the unencrypted archive stream, the value that is deterministic.
  type: str
  returned: with O(state=packed)
encrypted:
  description: Whether the archive was encrypted as it was written.
  type: bool
  returned: with O(state=packed)
key_id:
  description: Key id in the encryption header.
  type: str
  returned: with O(state=packed) and a key
sqlite_row_counts:
  description: Row counts per table of each database in O(check_sqlite).
  type: dict
  returned: with O(state=packed)
  sample: {"registry.sqlite": {"registry_entries": 300, "policies": 30}}
size_bytes:
  description: Size of the archive file in bytes.
  type: int
  returned: always
  sample: 12582912
compression:
  description: Compression of the archive, C(gzip) or C(none).
  type: str
  returned: always
  sample: gzip
members:
  description: Number of archive entries, directories included.
  type: int
  returned: always
  sample: 21
directories:
  description: Number of directory entries.
  type: int
  returned: always
  sample: 6
file_count:
  description: Number of regular files in the archive.
  type: int
  returned: always
  sample: 15
total_bytes:
  description: Sum of the regular files' sizes.
  type: int
  returned: always
  sample: 12582912
tar_bytes:
  description: Size of the uncompressed tar stream.
  type: int
  returned: when state is packed
  sample: 12595200
compressor:
  description:
    - What compressed the archive, with the version of the Python package; C(none) without
      compression.
  type: str
  returned: when state is packed
  sample: libdeflate (deflate 0.9.0)
gzip_members:
  description:
    - Number of gzip members, one per 512 KiB block of the tar stream; 0 without compression.
  type: int
  returned: when state is packed
  sample: 24
mode:
  description: File mode of the archive, octal.
  type: str
  returned: when state is packed
  sample: "0600"
threads:
  description: Compression threads used.
  type: int
  returned: when state is packed
  sample: 2
files:
  description:
    - Relative paths of the regular files that O(dest) holds after extraction, in archive order
      (in check mode, the files it would hold).
  type: list
  elements: str
  returned: when state is extracted
  sample: [backup.manifest.json, config/helm/values-prod.yaml, policy_store.json, registry.sqlite]
replaced:
  description: Whether a non-empty O(dest) was (or in check mode would be) replaced.
  type: bool
  returned: when state is extracted
  sample: false
member:
  description: The archive member or source path at fault.
  type: str
  returned: on failure, when one member is to blame
  sample: ../etc/cron.d/evil
problems:
  description: Every refused member with the reason, when extraction refuses an archive.
  type: list
  elements: str
  returned: on failure, when members were refused
  sample: ["member '../etc/cron.d/evil': the path has a '..' segment"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.cap_archive import (
    COMPRESSIONS,
    DEFAULT_LEVEL,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_SIZE,
    HAS_LIBDEFLATE,
    LIBDEFLATE_IMPORT_ERROR,
    ArchiveError,
    extract,
)
from ansible.module_utils.cap_crypt import CapCryptError, load_key_file, parse_key
from ansible.module_utils.cap_package import package


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["packed", "extracted"]),
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            compression=dict(type="str", choices=list(COMPRESSIONS), default="gzip"),
            compression_level=dict(type="int", choices=list(range(10)), default=DEFAULT_LEVEL),
            threads=dict(type="int"),
            mtime=dict(type="int", default=0),
            mode=dict(type="raw", default="0600"),
            force=dict(type="bool", default=False),
            encryption_key=dict(type="str", no_log=True),
            encryption_key_file=dict(type="path"),
            encryption_key_id=dict(type="str", no_log=False),
            wrapped_key=dict(type="str", no_log=False),
            check_sqlite=dict(type="list", elements="str", default=[]),
            max_size_bytes=dict(type="int", default=DEFAULT_MAX_SIZE),
            max_members=dict(type="int", default=DEFAULT_MAX_MEMBERS),
        ),
        mutually_exclusive=[("encryption_key", "encryption_key_file")],
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "packed" and p["compression"] == "gzip" and not HAS_LIBDEFLATE:
        module.fail_json(msg=missing_required_lib("deflate", reason="to write a gzip archive "
                                                  "(libdeflate; extraction does not need it)"),
                         exception=LIBDEFLATE_IMPORT_ERROR)
    key = None
    if p["state"] == "packed" and (p["encryption_key"] or p["encryption_key_file"]):
        try:
            if p["encryption_key"]:
                key = parse_key(p["encryption_key"], "encryption_key")
            else:
                key, warning = load_key_file(p["encryption_key_file"])
                if warning:
                    module.warn(warning)
        except (CapCryptError, OSError) as exc:
            module.fail_json(msg="cannot use the encryption key: %s" % exc)
    elif p["wrapped_key"] or p["encryption_key_id"]:
        module.fail_json(msg="encryption_key_id and wrapped_key need encryption_key or "
                             "encryption_key_file and state=packed")
    if p["state"] == "packed":
        what = "cannot pack %s into %s" % (p["src"], p["dest"])
    else:
        what = "cannot extract %s into %s" % (p["src"], p["dest"])
    try:
        if p["state"] == "packed":
            result = package(p["src"], p["dest"], key=key, key_id=p["encryption_key_id"],
                             wrapped_key=p["wrapped_key"], check_sqlite=p["check_sqlite"],
                             level=p["compression_level"], threads=p["threads"], mtime=p["mtime"],
                             compression=p["compression"], mode=p["mode"], check=module.check_mode)
        else:
            result = extract(p["src"], p["dest"], max_size_bytes=p["max_size_bytes"],
                             max_members=p["max_members"], force=p["force"],
                             check=module.check_mode)
    except CapCryptError as exc:
        module.fail_json(msg="%s: %s" % (what, exc))
    except ArchiveError as exc:
        failure = dict(msg="%s: %s" % (what, exc))
        if exc.member is not None:
            failure["member"] = exc.member
        if exc.problems:
            failure["problems"] = exc.problems
        module.fail_json(**failure)
    except OSError as exc:
        module.fail_json(msg="%s: %s: %s" % (what, exc.filename or p["src"], exc.strerror or exc))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
