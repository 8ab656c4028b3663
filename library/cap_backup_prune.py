#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_backup_prune
short_description: Grandfather-father-son retention of the primary backup directory
description:
  - Finds the backup archives in O(path) by O(pattern), whose named group C(ts) is the
    backup's UTC time as C(YYYYMMDD-HHMMSS). Archives whose names agree up to the end of the
    timestamp (C(cap-backup-20251110-120000.tar.gz) and C(.tar.gz.enc)) are one backup.
  - For each of hourly, daily and monthly it keeps the newest backup of each of the
    O(keep_hourly), O(keep_daily), O(keep_monthly) most recent periods that have a backup,
    as restic and borg do; O(keep_last) newest backups are kept whatever their periods.
    The union of these survives.
  - With O(verify_newest), the newest archive whose SHA3-256 matches its C(<archive>.sha3)
    sidecar is never deleted, even when the policy would drop it (RV(protected)).
  - Every other backup is deleted with its sidecars, C(<archive>.sha3) for each of its archives
    and C(<stem>.manifest.json) and C(<stem>.manifest.json.sig), where the stem is the archive
    name up to the end of the timestamp (C(cap-backup-20251110-120000)). Sidecars are deleted
    before the archive.
  - Files that do not match O(pattern), symbolic links and directories are never touched.
  - docs/retention.md describes the policy with examples.
version_added: "1.0.0"
author: CAP Engineering
options:
  path:
    description: The primary backup directory, for example C(/backup).
    type: path
    required: true
  pattern:
    description:
      - Regular expression for a whole archive file name, with a named group C(ts) matching
        C(YYYYMMDD-HHMMSS).
      - The default matches C(cap-backup-YYYYMMDD-HHMMSS.tar.gz),
        C(manual-backup-YYYYMMDD-HHMMSS.tar.gz) and both with C(.enc) appended.
    type: str
    default: '^(?:cap|manual)-backup-(?P<ts>\d{8}-\d{6})\.tar\.gz(?:\.enc)?$'
  keep_hourly:
    description:
      - Number of most recent hours with a backup whose newest backup is kept.
      - 168 is the runbook's 7 days of hourly backups.
    type: int
    default: 168
  keep_daily:
    description: Number of most recent days with a backup whose newest backup is kept.
    type: int
    default: 7
  keep_monthly:
    description: Number of most recent months with a backup whose newest backup is kept.
    type: int
    default: 0
  keep_last:
    description: The newest backups kept whatever the other rules say.
    type: int
    default: 1
  now:
    description:
      - The current UTC time as C(YYYY-MM-DDTHH:MM:SSZ) or C(YYYYMMDD-HHMMSS), for
        reproducible runs.
      - It only sets the reported ages and the check for backups dated in the future; the policy
        counts periods that have a backup, not periods before now.
    type: str
  verify_newest:
    description:
      - Hash archives from the newest down until one matches its sidecar, and never delete
        that one.
    type: bool
    default: true
notes:
  - Supports check mode; RV(deleted) lists what would be deleted and nothing is.
  - RV(changed) is true when a file was (or would be) deleted.
seealso:
  - module: cap_sha3sum
  - module: cap_backup_lock
"""

EXAMPLES = r"""
# find /backup -name 'cap-backup-*.tar.gz*' -mtime +7 -delete,
# but by period, with sidecars, and never the newest good backup
- name: Apply retention to the primary backup directory
  cap_backup_prune:
    path: /backup
    keep_hourly: 168
    keep_daily: 7
  register: __prune

- name: Also keep the newest backup of each of the last 12 months
  cap_backup_prune:
    path: /backup
    keep_hourly: 24
    keep_daily: 30
    keep_monthly: 12

# What would go? (playbooks/prune.yml --check)
- name: Preview retention
  cap_backup_prune:
    path: /backup
  check_mode: true
"""

RETURN = r"""
path:
  description: The backup directory.
  type: str
  returned: always
  sample: /backup
kept:
  description:
    - The backups kept, newest first, with the rules that keep each of them
      (C(hourly), C(daily), C(monthly), C(keep_last), C(newest_verified)).
  type: list
  elements: dict
  returned: always
  sample:
    - backup: cap-backup-20251110-120000
      archives: [cap-backup-20251110-120000.tar.gz.enc]
      timestamp: "2025-11-10T12:00:00Z"
      age_hours: 0.5
      reasons: [keep_last, hourly, daily, newest_verified]
deleted:
  description:
    - The backups deleted (or that would be), newest first, each with its archives, the
      sidecars present and all its files.
  type: list
  elements: dict
  returned: always
  sample:
    - backup: cap-backup-20251101-030000
      archives: [cap-backup-20251101-030000.tar.gz.enc]
      sidecars:
        - cap-backup-20251101-030000.tar.gz.enc.sha3
        - cap-backup-20251101-030000.manifest.json
      files: [cap-backup-20251101-030000.tar.gz.enc.sha3, cap-backup-20251101-030000.manifest.json,
              cap-backup-20251101-030000.tar.gz.enc]
      timestamp: "2025-11-01T03:00:00Z"
      age_hours: 225.5
deleted_files:
  description: Every file name removed (or that would be), sidecars included.
  type: list
  elements: str
  returned: always
newest_verified:
  description:
    - The newest archive whose SHA3-256 matches its sidecar.
    - Null when none does or with O(verify_newest=false).
  type: str
  returned: always
  sample: cap-backup-20251110-120000.tar.gz.enc
protected:
  description:
    - The newest verified archive when only that rule keeps it; null otherwise.
  type: str
  returned: always
  sample: null
unverified:
  description:
    - Archives newer than RV(newest_verified) that did not match their sidecar, with the
      reason. All archives when none matched.
  type: list
  elements: dict
  returned: always
  sample:
    - archive: cap-backup-20251110-130000.tar.gz.enc
      detail: no sidecar cap-backup-20251110-130000.tar.gz.enc.sha3
skipped:
  description:
    - Names that match O(pattern) but are left alone (not regular files, invalid
      timestamps), each with the reason.
  type: list
  elements: dict
  returned: always
now:
  description: The time used for ages, in UTC.
  type: str
  returned: always
  sample: "2025-11-10T12:30:00Z"
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_retention import DEFAULT_PATTERN, RetentionError, apply, plan


def parse_now(text):
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y%m%d-%H%M%S"):
        try:
            return datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(text)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            pattern=dict(type="str", default=DEFAULT_PATTERN),
            keep_hourly=dict(type="int", default=168),
            keep_daily=dict(type="int", default=7),
            keep_monthly=dict(type="int", default=0),
            keep_last=dict(type="int", default=1),
            now=dict(type="str"),
            verify_newest=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    now = None
    if p["now"]:
        try:
            now = parse_now(p["now"])
        except ValueError:
            module.fail_json(msg="now must be YYYY-MM-DDTHH:MM:SSZ or YYYYMMDD-HHMMSS, got %r"
                             % p["now"])
    try:
        result = plan(p["path"], pattern=p["pattern"], keep_hourly=p["keep_hourly"],
                      keep_daily=p["keep_daily"], keep_monthly=p["keep_monthly"],
                      keep_last=p["keep_last"], verify_newest=p["verify_newest"], now=now)
    except RetentionError as exc:
        module.fail_json(msg=str(exc), path=p["path"])
    for warning in result.pop("warnings"):
        module.warn(warning)
    files = [name for record in result["deleted"] for name in record["files"]]
    if not module.check_mode:
        try:
            files = apply(p["path"], result)
        except RetentionError as exc:
            module.fail_json(msg="retention of %s stopped: %s" % (p["path"], exc),
                             path=p["path"], deleted_files=exc.deleted, changed=bool(exc.deleted))
    module.exit_json(changed=bool(files), path=p["path"], deleted_files=files,
                     **result)


if __name__ == "__main__":
    main()
