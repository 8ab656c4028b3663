"""The sandbox: a local CAP Verifier API stand-in plus real OpenBao and SeaweedFS.

Importing this package makes the project's module_utils importable as
``ansible.module_utils.cap_*``, the same way Ansible modules import them, so the
stand-in hashes exactly as the backup and restore code does.
"""

from __future__ import annotations

import os

import ansible.module_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODULE_UTILS = os.path.join(ROOT, "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)
