# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filters for the project's hash rules (docs/hashing.md).

- ``cap_sha3``: text or bytes to '0x' + SHA3-256 hex.
- ``cap_etag``: a policy_hash to its quoted ETag, e.g. '"0afcb402e74ff6a1"'.
- ``cap_canonical_json``: a value to the canonical JSON text that hashes are taken over.
"""

from __future__ import annotations

import os

import ansible.module_utils
from ansible.errors import AnsibleFilterError

# Controller-side plugins do not see the module_utils path from ansible.cfg; add it.
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.cap_hashing import (  # noqa: E402
    CapHashError,
    canonical_json,
    etag_for,
    sha3_bytes,
)


def cap_sha3(value):
    """'0x' + SHA3-256 of a string (UTF-8) or bytes."""
    if not isinstance(value, (str, bytes)):
        raise AnsibleFilterError("cap_sha3 expects a string, got %s; use cap_canonical_json "
                                 "first to hash a structure" % type(value).__name__)
    return sha3_bytes(value)


def cap_etag(policy_hash):
    """The ETag the API sends for a policy: '"' + first 16 hex digits of policy_hash + '"'."""
    try:
        return etag_for(str(policy_hash))
    except CapHashError as exc:
        raise AnsibleFilterError("cap_etag: %s" % exc)


def cap_canonical_json(value):
    """Canonical JSON text of a value (sorted keys, no spaces, UTF-8, no floats)."""
    try:
        return canonical_json(_plain(value))
    except CapHashError as exc:
        raise AnsibleFilterError("cap_canonical_json: %s" % exc)


def _plain(value):
    # Ansible hands filters its own str/dict/list subclasses; canonical JSON wants plain types.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class FilterModule:
    """The project's hash filters."""

    def filters(self):
        return {
            "cap_sha3": cap_sha3,
            "cap_etag": cap_etag,
            "cap_canonical_json": cap_canonical_json,
        }
