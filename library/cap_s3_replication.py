#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_s3_replication
short_description: Set or remove the replication configuration of an S3 bucket
description:
  - Makes the replication configuration of O(bucket) exactly O(rules), replicated with
    the IAM role O(role_arn), or removes it with O(state=absent). No module of
    amazon.aws or community.aws manages bucket replication; this one adds only that and
    takes its connection options (credentials, region, endpoint, TLS) from amazon.aws.
  - The configuration is read first and written only when it differs, so a second run
    reports no change. Defaults that S3 adds or leaves out (filter forms, the STANDARD
    storage class, disabled delete marker replication) do not count as a difference;
    any setting the bucket has that O(rules) does not describe does, and is replaced.
  - After writing, the configuration is read back until it matches (S3 may answer a
    stale read for a moment); an endpoint that accepts the request but keeps something
    else fails the task.
  - An endpoint without a replication API (SeaweedFS, for one) fails with a message
    saying so, naming the S3 error it answered.
  - S3 replicates only between versioned buckets, and only objects written after the
    configuration is set; the role must allow S3 to read the source and write the
    destination.
version_added: "1.0.0"
author: CAP Engineering
options:
  bucket:
    description: The source bucket, whose new objects are replicated.
    type: str
    required: true
    aliases: [name]
  state:
    description: C(present) sets the configuration, C(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  role_arn:
    description:
      - IAM role that S3 assumes to replicate, C(arn:aws:iam::<account>:role/<name>).
      - Its partition (C(aws), C(aws-cn), C(aws-us-gov)) is used for destination bucket ARNs.
      - Required with O(state=present).
    type: str
  rules:
    description: The replication rules; together they are the bucket's whole configuration.
    type: list
    elements: dict
    suboptions:
      id:
        description: Rule ID, unique in the bucket (1 to 255 characters).
        type: str
        required: true
      prefix:
        description: Replicate only objects whose key starts with this; empty means all.
        type: str
        default: ""
      destination_bucket:
        description: Destination bucket, by name or ARN.
        type: str
        required: true
      storage_class:
        description: Storage class of the replicas.
        type: str
        choices: [STANDARD, REDUCED_REDUNDANCY, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING,
                  GLACIER, GLACIER_IR, DEEP_ARCHIVE]
        default: STANDARD
      priority:
        description: Rule priority when rules overlap; default the rule's position, from 1.
        type: int
      enabled:
        description: Whether the rule is in force.
        type: bool
        default: true
      replicate_delete_markers:
        description: Replicate delete markers too (a deletion in the source then hides the replica).
        type: bool
        default: false
notes:
  - Supports check mode and diff mode; in check mode the configuration is read and
    compared, and RV(changed) tells whether it would be written.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
seealso:
  - module: amazon.aws.s3_bucket
  - module: community.aws.s3_lifecycle
"""

EXAMPLES = r"""
# aws s3api put-bucket-replication --bucket cap-backups --replication-configuration file://replication.json
- name: Replicate new backups to the cross-region bucket
  cap_s3_replication:
    bucket: cap-backups
    role_arn: arn:aws:iam::123456789012:role/cap-backup-replication
    rules:
      - id: cap-backup-replication:prod/
        prefix: prod/
        destination_bucket: cap-backups-eu-central-1
        storage_class: STANDARD
    region: us-east-1

# aws s3api delete-bucket-replication --bucket cap-backups
- name: Stop replicating
  cap_s3_replication:
    bucket: cap-backups
    state: absent
    region: us-east-1
"""

RETURN = r"""
bucket:
  description: The source bucket.
  type: str
  returned: always
  sample: cap-backups
replication:
  description:
    - The bucket's replication configuration after the task (what it would be in check
      mode), as S3 returns it; null when it has none.
  type: dict
  returned: always
  sample:
    Role: arn:aws:iam::123456789012:role/cap-backup-replication
    Rules:
      - ID: cap-backup-replication:prod/
        Priority: 1
        Status: Enabled
        Filter: {Prefix: prod/}
        DeleteMarkerReplication: {Status: Disabled}
        Destination: {Bucket: "arn:aws:s3:::cap-backups-eu-central-1", StorageClass: STANDARD}
previous:
  description: The configuration before the task; null when there was none.
  type: dict
  returned: always
  sample: null
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

from ansible.module_utils.cap_s3_replication import (
    STORAGE_CLASSES,
    ConfigurationError,
    ReplicationError,
    ReplicationManager,
    ReplicationUnsupported,
    build_configuration,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            bucket=dict(type="str", required=True, aliases=["name"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            role_arn=dict(type="str"),
            rules=dict(
                type="list",
                elements="dict",
                options=dict(
                    id=dict(type="str", required=True),
                    prefix=dict(type="str", default=""),
                    destination_bucket=dict(type="str", required=True),
                    storage_class=dict(type="str", choices=list(STORAGE_CLASSES), default="STANDARD"),
                    priority=dict(type="int"),
                    enabled=dict(type="bool", default=True),
                    replicate_delete_markers=dict(type="bool", default=False),
                ),
            ),
        ),
        required_if=[("state", "present", ("role_arn", "rules"))],
        supports_check_mode=True,
    )
    params = module.params
    bucket = params["bucket"]
    wanted = None
    if params["state"] == "present":
        try:
            wanted = build_configuration(params["role_arn"], params["rules"])
        except ConfigurationError as exc:
            module.fail_json(msg="Invalid replication for bucket %s: %s" % (bucket, exc), bucket=bucket)

    client = module.client("s3")
    manager = ReplicationManager(
        client, bucket, client_errors=(botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError))
    try:
        if wanted is not None:
            changed, before, after = manager.ensure_present(wanted, check_mode=module.check_mode)
        else:
            changed, before, after = manager.ensure_absent(check_mode=module.check_mode)
    except ReplicationError as exc:
        module.fail_json(msg="Replication of %s" % exc, bucket=bucket,
                         unsupported=isinstance(exc, ReplicationUnsupported))

    result = dict(changed=changed, bucket=bucket, replication=after, previous=before)
    if module._diff:
        result["diff"] = dict(before=before or {}, after=after or {})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
