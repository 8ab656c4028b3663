#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_crypt
short_description: Encrypt, decrypt or inspect a backup archive (streaming AES-256-GCM)
description:
  - Encrypts a file into the CAPCRYPT v1 format of docs/encryption.md, decrypts it back, or
    reads only its header.
  - The file is processed in chunks, each sealed with AES-256-GCM under a per-file key, with a
    nonce built from a random prefix, the chunk index and a final-chunk flag, and with the
    header as associated data. A flipped bit anywhere, a changed header, reordered chunks, a
    stream cut short and data appended after the end are all detected. Memory use does not
    depend on the file size.
  - The header can carry a wrapped data key (a Vault Transit ciphertext) for envelope
    encryption; O(mode=inspect) returns it without needing any key, so a restore can unwrap
    it through Vault first.
  - Output is written to a temporary file (mode 0600) and renamed into place only when
    complete. Decryption renames only after the final chunk authenticated. On any failure no
    O(dest) is left behind and an existing O(dest) is not touched.
  - Key bytes never appear in a message or return value.
version_added: "1.0.0"
author: CAP Engineering
requirements:
  - cryptography
options:
  mode:
    description:
      - C(encrypt) turns O(src) into an encrypted O(dest).
      - C(decrypt) authenticates O(src) and writes the plaintext to O(dest).
      - C(inspect) reads and validates only the header of O(src); no key is needed and nothing
        is written.
    type: str
    required: true
    choices: [encrypt, decrypt, inspect]
  src:
    description: File to encrypt, decrypt or inspect.
    type: path
    required: true
  dest:
    description: File to write. Required for O(mode=encrypt) and O(mode=decrypt).
    type: path
  key:
    description:
      - The 256-bit key as base64 of exactly 32 bytes, for example the C(plaintext) of a Vault
        Transit C(datakey/plaintext) call.
      - One of O(key) and O(key_file) is required for O(mode=encrypt) and O(mode=decrypt).
    type: str
  key_file:
    description:
      - File holding the key, as its base64 text or as the 32 raw bytes.
      - A warning is given when the file is accessible by group or others.
    type: path
  key_id:
    description:
      - With O(mode=encrypt), the key id stored in the header. Defaults to the key's derived id,
        C(k-) and the first 16 hex digits of the SHA3-256 of the key. Other names may use
        letters, digits, C(.), C(_), C(:), C(/) and C(-), up to 128 characters.
      - With O(mode=decrypt), the key id the archive must carry; decryption fails before reading
        any chunk when the header names another.
      - Whatever this option says, a header carrying a derived key id that is not the given
        key's fails fast with C(wrong key).
    type: str
  wrapped_key:
    description:
      - With O(mode=encrypt), a wrapped form of the key to store in the header, typically the
        Vault Transit C(ciphertext) (C(vault:v1:...)) of the data key. It is not secret by
        itself; only Vault can unwrap it.
      - Only valid with O(mode=encrypt).
    type: str
  chunk_size:
    description: Plaintext bytes per chunk when encrypting (16 to 67108864).
    type: int
    default: 1048576
  force:
    description:
      - Write O(dest) even when it already holds the expected result.
      - Without it, an existing encrypted O(dest) is kept when its header has the same key id,
        wrapped key and chunk size and it decrypts under the key to exactly O(src), and an
        existing decrypted O(dest) is kept when it equals the plaintext.
    type: bool
    default: false
  file_mode:
    description:
      - Permissions of O(dest), octal (C("0600")) or symbolic (C(u=rw,go=)). O(dest) is written
        with mode 0600 and then set to this mode.
    type: raw
    default: "0600"
notes:
  - Supports check mode. Encrypt checks the key and O(src) and, when O(dest) exists, whether it
    is up to date; decrypt authenticates the whole stream; nothing is written, and RV(changed)
    tells whether it would be.
  - Deciding that an existing encrypted O(dest) is up to date costs one full decryption of it.
seealso:
  - module: cap_backup_sign
  - module: cap_backup_manifest
"""

EXAMPLES = r"""
# ./scripts/backup.sh --encrypt --encryption-key /keys/backup.key --output /backup/cap-backup.tar.gz
- name: Encrypt the backup archive with a key file
  cap_backup_crypt:
    mode: encrypt
    src: /backup/staging/cap-backup-20251110-120000.tar.gz
    dest: /backup/cap-backup-20251110-120000.tar.gz.enc
    key_file: /keys/backup.key

# vault write -f transit/datakey/plaintext/cap-backup
- name: Ask Vault Transit for a fresh data key
  community.hashi_vault.vault_write:
    path: transit/datakey/plaintext/cap-backup
  register: __datakey
  no_log: true

- name: Encrypt under the data key, keeping its wrapped form in the header
  cap_backup_crypt:
    mode: encrypt
    src: /backup/staging/cap-backup-20251110-120000.tar.gz
    dest: /backup/cap-backup-20251110-120000.tar.gz.enc
    key: "{{ __datakey.data.data.plaintext }}"
    wrapped_key: "{{ __datakey.data.data.ciphertext }}"
    key_id: transit:transit/cap-backup
  no_log: true

- name: Read the header to find the wrapped data key
  cap_backup_crypt:
    mode: inspect
    src: /restore/cap-backup-20251110-120000.tar.gz.enc
  register: __header

# vault write transit/decrypt/cap-backup ciphertext=vault:v1:...
- name: Unwrap the data key
  community.hashi_vault.vault_write:
    path: transit/decrypt/cap-backup
    data:
      ciphertext: "{{ __header.wrapped_key }}"
  register: __unwrapped
  no_log: true

# tar -xzf needs the plain archive: decrypt it first
- name: Decrypt the archive
  cap_backup_crypt:
    mode: decrypt
    src: /restore/cap-backup-20251110-120000.tar.gz.enc
    dest: /restore/cap-backup-20251110-120000.tar.gz
    key: "{{ __unwrapped.data.data.plaintext }}"
  no_log: true
"""

RETURN = r"""
dest:
  description: Path of the written file.
  type: str
  returned: mode is encrypt or decrypt
  sample: /backup/cap-backup-20251110-120000.tar.gz.enc
sha3_256:
  description:
    - SHA3-256 of O(dest)'s content, 0x-prefixed. For decrypt this is the plaintext's hash.
    - Not returned when encrypting in check mode with a new O(dest), as encryption output is
      random until written.
  type: str
  returned: mode is encrypt or decrypt
  sample: "0x1da941f7026bae3cf8b1bcdc3a8e01e76ea678c32ec6bc2c374fb67b3744571f"
size_bytes:
  description: Size of O(dest) (decrypt, encrypt) or O(src) (inspect), in bytes.
  type: int
  returned: always, except where RV(sha3_256) is not returned
  sample: 10485850
key_id:
  description: Key id in the header.
  type: str
  returned: always
  sample: k-3f6c1e0a9b2d4c5e
chunks:
  description: Number of chunks in the encrypted stream.
  type: int
  returned: mode is encrypt or decrypt
  sample: 11
chunk_size:
  description: Plaintext bytes per chunk.
  type: int
  returned: always
  sample: 1048576
wrapped_key:
  description:
    - Wrapped data key stored in the header, or null. A Vault Transit ciphertext, safe to log.
  type: str
  returned: always
  sample: "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w=="
src:
  description: Path of the inspected file.
  type: str
  returned: mode is inspect
  sample: /restore/cap-backup-20251110-120000.tar.gz.enc
format_version:
  description: Format version in the header.
  type: int
  returned: mode is inspect
  sample: 1
algorithm:
  description: Cipher of the chunks.
  type: str
  returned: mode is inspect
  sample: aes-256-gcm
key_id_derived:
  description:
    - Whether the key id has the derived form, so that a wrong key is recognised before
      decryption.
  type: bool
  returned: mode is inspect
header_size_bytes:
  description: Length of the header in bytes.
  type: int
  returned: mode is inspect
  sample: 74
"""

import base64
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.cap_crypt import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    DEFAULT_CHUNK_SIZE,
    HAS_CRYPTOGRAPHY,
    CapCryptError,
    decrypt_file,
    encrypt_file,
    inspect_file,
    load_key_file,
    parse_key,
)


def load_key(module):
    p = module.params
    if p["key"] is not None:
        return parse_key(p["key"], "key")
    key, warning = load_key_file(p["key_file"])
    # Mask the file's key wherever it might otherwise surface in output.
    module.no_log_values.add(base64.b64encode(key).decode("ascii"))
    if warning:
        module.warn(warning)
    return key


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", required=True, choices=["encrypt", "decrypt", "inspect"]),
            src=dict(type="path", required=True),
            dest=dict(type="path"),
            key=dict(type="str", no_log=True),
            key_file=dict(type="path", no_log=False),
            key_id=dict(type="str", no_log=False),
            wrapped_key=dict(type="str", no_log=False),
            chunk_size=dict(type="int", default=DEFAULT_CHUNK_SIZE),
            force=dict(type="bool", default=False),
            file_mode=dict(type="raw", default="0600"),
        ),
        mutually_exclusive=[("key", "key_file")],
        required_if=[
            ("mode", "encrypt", ("dest",)),
            ("mode", "decrypt", ("dest",)),
            ("mode", "encrypt", ("key", "key_file"), True),
            ("mode", "decrypt", ("key", "key_file"), True),
        ],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"),
                         exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    p = module.params
    if p["wrapped_key"] and p["mode"] != "encrypt":
        module.fail_json(msg="wrapped_key only applies to mode=encrypt; at decrypt it is read "
                             "from the header")

    try:
        if p["mode"] == "inspect":
            module.exit_json(changed=False, **inspect_file(p["src"]))
        key = load_key(module)
        if p["mode"] == "encrypt":
            result = encrypt_file(p["src"], p["dest"], key, key_id=p["key_id"],
                                  wrapped_key=p["wrapped_key"], chunk_size=p["chunk_size"],
                                  force=p["force"], check_mode=module.check_mode)
        else:
            result = decrypt_file(p["src"], p["dest"], key, expected_key_id=p["key_id"],
                                  force=p["force"], check_mode=module.check_mode)
    except CapCryptError as exc:
        module.fail_json(msg="%s failed: %s" % (p["mode"], exc))
    # dest is always created with mode 0600, so it is never readable by others
    # before its permissions are set here; an up-to-date dest may need them too.
    if os.path.exists(result["dest"]) and not (result["changed"] and module.check_mode):
        result["changed"] = module.set_mode_if_different(result["dest"], p["file_mode"],
                                                         result["changed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
