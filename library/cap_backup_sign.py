#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_sign
short_description: Sign a backup manifest with Ed25519, or verify its detached signature
description:
  - With O(mode=sign), writes a detached Ed25519 signature of O(path) (normally
    C(backup.manifest.json)) as a C(backup.signature.v1) JSON file, by default
    C(<path>.sig). docs/signature.md describes the format.
  - The signature covers the exact bytes of the file. Ed25519 is deterministic, so signing
    an unchanged file with the same key yields the same signature file, which is then not
    rewritten.
  - With O(mode=verify), finds the public key by the signature's kid in O(trusted_keys_dir)
    (C(*.v1.json) cap-key.v1 documents and C(<kid>.pub) PEM files) or takes O(public_key),
    and fails with a message naming the problem when the kid is unknown, the file changed,
    the key is wrong, or the signature file is malformed.
  - Private key material never appears in a message, a return value or a written file.
version_added: "1.0.0"
author: CAP Engineering
requirements:
  - cryptography
options:
  mode:
    description: C(sign) writes the signature; C(verify) checks it and changes nothing.
    type: str
    required: true
    choices: [sign, verify]
  path:
    description: The signed file, normally C(backup.manifest.json).
    type: path
    required: true
  signature:
    description: The signature file. Defaults to C(<path>.sig).
    type: path
  private_key:
    description:
      - Ed25519 private key for O(mode=sign) as base64 of the 32-byte seed, or PEM PKCS#8 text.
      - One of O(private_key) and O(private_key_file) is required for O(mode=sign).
    type: str
  private_key_file:
    description:
      - File holding the private key (raw 32-byte seed, base64 or PEM), such as
        C(keys/company.ed25519).
    type: path
  kid:
    description:
      - With O(mode=sign), the key id written into the signature; required.
      - With O(mode=verify), the kid the signature must carry (optional).
    type: str
  public_key:
    description:
      - Ed25519 public key as PEM or base64 of the 32 raw bytes. With O(mode=verify) it is the
        key to verify with; with O(mode=sign) the private key is checked against it.
      - One of O(public_key) and O(trusted_keys_dir) is required for O(mode=verify).
    type: str
  trusted_keys_dir:
    description:
      - Directory of trusted public keys (C(*.v1.json), C(*.pub)). With O(mode=verify) the key is
        looked up by the signature's kid; with O(mode=sign) the private key is checked against
        the key of O(kid), so a signature no restore could verify is never written.
    type: path
  file_mode:
    description:
      - Permissions of the signature file, octal (C("0644")) or symbolic (C(u=rw,go=r)). It
        holds only public data, so it is readable by all by default. The file is written with
        mode 0600 and then set to this mode.
    type: raw
    default: "0644"
notes:
  - Supports check mode. Sign computes the signature and reports whether the file would
    change without writing it; verify never changes anything.
seealso:
  - module: cap_backup_manifest
  - module: cap_backup_verify
  - module: cap_backup_crypt
"""

EXAMPLES = r"""
# vault kv get secret/cap/keys/backup-signing
- name: Read the signing key from Vault
  community.hashi_vault.vault_kv2_get:
    path: cap/keys/backup-signing
  register: __signing_key
  no_log: true

# Runbook "Restore Security: verify backup signature (signed by backup service)", signing side
- name: Sign the backup manifest
  cap_backup_sign:
    mode: sign
    path: /backup/staging/backup-20251110-120000/backup.manifest.json
    private_key: "{{ __signing_key.secret.private_key }}"
    kid: cap-backup-2025
    trusted_keys_dir: /app/keys/trusted
  no_log: true

# openssl pkeyutl -verify -pubin -inkey keys/trusted/cap-backup-2025.pub -rawin \
#   -in backup.manifest.json -sigfile <(jq -r .signature backup.manifest.json.sig | base64 -d)
- name: Verify the manifest signature before restoring
  cap_backup_sign:
    mode: verify
    path: /restore/backup.manifest.json
    trusted_keys_dir: /restore/keys/trusted
  register: __signature

- name: Verify against one pinned key
  cap_backup_sign:
    mode: verify
    path: /restore/backup.manifest.json
    signature: /restore/backup.manifest.json.sig
    public_key: "{{ lookup('ansible.builtin.file', 'files/cap-backup-2025.pub') }}"
    kid: cap-backup-2025
"""

RETURN = r"""
signature:
  description: Path of the signature file.
  type: str
  returned: always
  sample: /backup/staging/backup-20251110-120000/backup.manifest.json.sig
kid:
  description: Key id of the signature.
  type: str
  returned: always
  sample: cap-backup-2025
verified:
  description: True when the signature verified; a failed verification fails the task.
  type: bool
  returned: mode is verify
sha3_256:
  description: SHA3-256 of the signed file, 0x-prefixed.
  type: str
  returned: always
  sample: "0x5f1c0e6b9e1c3c2d4f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e"
signed_file:
  description: File name recorded in the signature.
  type: str
  returned: always
  sample: backup.manifest.json
fingerprint:
  description: SHA3-256 of the raw public key that signed or verified, 0x-prefixed.
  type: str
  returned: always
  sample: "0x9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
algorithm:
  description: Signature algorithm.
  type: str
  returned: always
  sample: ed25519
document:
  description: The signature document as written (public data only).
  type: dict
  returned: mode is sign
"""

import base64
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.cap_fsutil import atomic_write_bytes, same_content
from ansible.module_utils.cap_keys import fingerprint, public_from_seed
from ansible.module_utils.cap_sign import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    CapSignError,
    check_key_pair,
    default_signature_path,
    load_private_key,
    public_key_from_value,
    sign_file,
    trusted_key_for,
    verify_file,
)


def run_sign(module, signature_path):
    p = module.params
    seed, warning = load_private_key(p["private_key"], p["private_key_file"])
    # Mask the seed wherever it could surface, including when it came from a file.
    module.no_log_values.add(base64.b64encode(seed).decode("ascii"))
    if warning:
        module.warn(warning)
    if p["public_key"] is not None:
        check_key_pair(seed, public_key_from_value(p["public_key"]), p["kid"])
    elif p["trusted_keys_dir"] is not None:
        check_key_pair(seed, trusted_key_for(p["kid"], p["trusted_keys_dir"]), p["kid"])
    doc, data = sign_file(p["path"], seed, p["kid"])
    changed = not same_content(signature_path, data)
    if changed and not module.check_mode:
        try:
            atomic_write_bytes(signature_path, data)
        except OSError as exc:
            module.fail_json(msg="cannot write signature %s: %s" % (signature_path, exc.strerror))
    if os.path.exists(signature_path) and not (changed and module.check_mode):
        changed = module.set_mode_if_different(signature_path, p["file_mode"], changed)
    return dict(changed=changed, signature=signature_path, kid=doc["kid"],
                sha3_256=doc["sha3_256"], signed_file=doc["signed_file"],
                fingerprint=fingerprint(public_from_seed(seed)), algorithm=doc["algorithm"],
                document=doc)


def run_verify(module, signature_path):
    p = module.params
    public_raw = None
    if p["public_key"] is not None:
        public_raw = public_key_from_value(p["public_key"])
    result = verify_file(p["path"], signature_path, trusted_keys_dir=p["trusted_keys_dir"],
                         public_key=public_raw, kid=p["kid"])
    if result["signed_file"] != os.path.basename(p["path"]):
        module.warn("the signature was made for a file named %s; it verifies against %s"
                    % (result["signed_file"], p["path"]))
    return dict(changed=False, **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", required=True, choices=["sign", "verify"]),
            path=dict(type="path", required=True),
            signature=dict(type="path"),
            private_key=dict(type="str", no_log=True),
            private_key_file=dict(type="path", no_log=False),
            kid=dict(type="str"),
            public_key=dict(type="str", no_log=False),
            trusted_keys_dir=dict(type="path"),
            file_mode=dict(type="raw", default="0644"),
        ),
        mutually_exclusive=[("private_key", "private_key_file"),
                            ("public_key", "trusted_keys_dir")],
        required_if=[
            ("mode", "sign", ("kid",)),
            ("mode", "sign", ("private_key", "private_key_file"), True),
            ("mode", "verify", ("public_key", "trusted_keys_dir"), True),
        ],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"),
                         exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    p = module.params
    signature_path = p["signature"] or default_signature_path(p["path"])
    try:
        if p["mode"] == "sign":
            result = run_sign(module, signature_path)
        else:
            result = run_verify(module, signature_path)
    except CapSignError as exc:
        module.fail_json(msg="%s failed: %s" % (p["mode"], exc), verified=False,
                         signature=signature_path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
