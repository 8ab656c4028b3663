#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_lock
short_description: Take or release the lock that lets only one backup run at a time
description:
  - The lock is a directory, for example C(/backup/.cap-backup.lock), created with a single
    C(mkdir). Creating a directory either succeeds or fails because it exists, atomically,
    also on NFS, so of several runs that start together on any hosts sharing the backup
    volume exactly one gets the lock.
  - The winner writes C(owner.json) into the directory with the owner, host, process id,
    creation time, a random token and O(info).
  - Taking the lock again with the same O(owner) changes nothing.
  - A lock older than O(stale_after) was left by a run that crashed; it is broken with a
    warning naming its owner and host, and taken.
  - Releasing removes the lock only when O(owner) is the recorded owner. Releasing a lock
    held by another owner fails and leaves it in place; releasing an absent lock is not
    an error.
  - Breaking and releasing happen under a short-lived second directory lock,
    C(<path>.guard), so that a run which saw a stale lock never removes the lock another
    run has just taken. A guard older than 60 seconds was left by a process that died
    and is removed.
version_added: "1.0.0"
author: CAP Engineering
options:
  path:
    description: The lock directory. Its parent must exist.
    type: path
    required: true
  state:
    description:
      - C(acquired) takes the lock, waiting up to O(timeout) seconds while another owner holds it.
      - C(released) gives it up.
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description: Identifies the run holding the lock, usually the backup id.
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait for a lock held by another owner, checking about once a second.
      - C(0) fails at once.
      - Only used with O(state=acquired).
    type: int
    default: 0
  stale_after:
    description:
      - Age in seconds after which a held lock counts as abandoned and is broken.
      - The age comes from the C(created_epoch) in C(owner.json), or from the directory's
        modification time when there is no readable C(owner.json).
      - Only used with O(state=acquired).
    type: int
    default: 21600
  info:
    description: Extra facts to record in C(owner.json), for example C(started_by).
    type: dict
    default: {}
notes:
  - Supports check mode; nothing is created or removed, RV(changed) tells whether the lock
    would be taken or released, and a lock held by another owner fails as it would for real.
  - The recorded C(pid) is that of the module process, which ends with the task; the owner
    and host identify the run.
seealso:
  - module: cap_backup_prune
"""

EXAMPLES = r"""
# mkdir /backup/.cap-backup.lock || { echo "another backup is running"; exit 1; }
- name: Take the backup lock
  cap_backup_lock:
    path: /backup/.cap-backup.lock
    owner: backup-20251110-120000
    timeout: 0
    info:
      started_by: cronjob/cap-backup

# Wait up to ten minutes for a running backup to finish first
- name: Take the backup lock, waiting for another run
  cap_backup_lock:
    path: /backup/.cap-backup.lock
    owner: manual-backup-20251110-121500
    timeout: 600

# rm -rf /backup/.cap-backup.lock, but only if it is ours
- name: Release the backup lock
  cap_backup_lock:
    path: /backup/.cap-backup.lock
    owner: backup-20251110-120000
    state: released
"""

RETURN = r"""
lock_path:
  description:
    - The lock directory. It is not called C(path) because Ansible would add the directory's
      file attributes (C(owner), C(state), C(mode)) to a result with that key.
  type: str
  returned: always
  sample: /backup/.cap-backup.lock
lock_state:
  description: The requested state of the lock.
  type: str
  returned: always
  sample: acquired
holder:
  description:
    - With O(state=acquired), the owner record of the lock now held (or that would be).
    - With O(state=released), the record that was (or would be) removed; null when there
      was no lock.
  type: dict
  returned: always
  sample:
    owner: backup-20251110-120000
    host: backup-7f9c
    pid: 4242
    created_at: "2025-11-10T12:00:00Z"
    created_epoch: 1762776000.0
    info: {started_by: cronjob/cap-backup}
broken:
  description: The owner record of a stale lock that was (or would be) broken; null otherwise.
  type: dict
  returned: when O(state=acquired)
  sample:
    owner: backup-20251110-040000
    host: backup-1a2b
    created_at: "2025-11-10T04:00:00Z"
waited:
  description: Seconds spent waiting for another owner to release the lock.
  type: float
  returned: when O(state=acquired)
  sample: 0.0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_lock import (
    LockError,
    LockHeld,
    LockNotOwned,
    acquire,
    describe,
    release,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["acquired", "released"], default="acquired"),
            owner=dict(type="str", required=True),
            timeout=dict(type="int", default=0),
            stale_after=dict(type="int", default=21600),
            info=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not p["owner"].strip():
        module.fail_json(msg="owner must not be empty")
    if p["timeout"] < 0:
        module.fail_json(msg="timeout must not be negative")
    if p["stale_after"] <= 0:
        module.fail_json(msg="stale_after must be a positive number of seconds")
    try:
        if p["state"] == "acquired":
            result = acquire(p["path"], p["owner"], timeout=p["timeout"],
                             stale_after=p["stale_after"], info=p["info"],
                             check_only=module.check_mode)
        else:
            result = release(p["path"], p["owner"], check_only=module.check_mode)
    except LockHeld as exc:
        module.fail_json(msg=str(exc), lock_path=p["path"], holder=exc.holder, waited=exc.waited)
    except LockNotOwned as exc:
        module.fail_json(msg=str(exc), lock_path=p["path"], holder=exc.holder)
    except LockError as exc:
        module.fail_json(msg=str(exc), lock_path=p["path"])
    except OSError as exc:
        module.fail_json(msg="backup lock %s: %s" % (exc.filename or p["path"], exc.strerror),
                         lock_path=p["path"])
    if result.get("broken"):
        module.warn("backup lock %s was stale (older than %d s) and %s broken: it was held by %s"
                    % (p["path"], p["stale_after"], "would be" if module.check_mode else "was",
                       describe(result["broken"])))
    module.exit_json(lock_path=p["path"], lock_state=p["state"], **result)


if __name__ == "__main__":
    main()
