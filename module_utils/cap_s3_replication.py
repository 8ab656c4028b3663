# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 bucket replication: build the wanted configuration, compare it with the bucket's,
write it only when it differs and read it back.

The caller passes a boto3 S3 client; nothing here imports boto3. Every failure is a
ReplicationError naming the bucket; ReplicationUnsupported says the endpoint has no
replication API at all (SeaweedFS, MinIO without site replication, and the like).
"""

from __future__ import annotations

import json
import time

STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                   "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE")

# Error codes that mean "no configuration yet".
_NOT_FOUND = ("ReplicationConfigurationNotFoundError", "NoSuchReplicationConfiguration")
# Error codes that mean "this endpoint has no replication API". An endpoint that
# routes PUT /bucket?replication to CreateBucket answers BucketAlreadyOwnedByYou.
_UNSUPPORTED = ("NotImplemented", "XNotImplemented", "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists", "MethodNotAllowed")

# Rule keys compared; anything else a bucket's rule holds makes it differ.
_KNOWN_RULE_KEYS = ("ID", "Priority", "Status", "Filter", "Prefix", "DeleteMarkerReplication",
                    "Destination")
_KNOWN_DESTINATION_KEYS = ("Bucket", "StorageClass")


class ReplicationError(Exception):
    """The replication configuration of a bucket could not be read, written or checked."""

    def __init__(self, bucket, message):
        super().__init__("bucket %s: %s" % (bucket, message))
        self.bucket = bucket


class ReplicationUnsupported(ReplicationError):
    """The S3 endpoint does not implement bucket replication."""


class ConfigurationError(ValueError):
    """The options do not describe a valid replication configuration."""


def error_code(exc):
    """The S3 error code of a botocore ClientError (empty for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def partition_of(role_arn):
    """The ARN partition of the IAM role (aws, aws-cn, aws-us-gov)."""
    parts = (role_arn or "").split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != "iam" or not parts[5].startswith("role/"):
        raise ConfigurationError("role_arn %r is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                                 % role_arn)
    return parts[1]


def bucket_arn(bucket, partition="aws"):
    """The ARN of a bucket given by name or ARN."""
    if bucket.startswith("arn:"):
        return bucket
    return "arn:%s:s3:::%s" % (partition, bucket)


def build_configuration(role_arn, rules):
    """The ReplicationConfiguration for PutBucketReplication.

    rules: dicts with id, prefix, destination_bucket (name or ARN), storage_class,
    priority (None: position, from 1), enabled, replicate_delete_markers.
    """
    partition = partition_of(role_arn)
    if not rules:
        raise ConfigurationError("at least one rule is needed")
    out = []
    seen_ids, seen_priorities = set(), set()
    for index, rule in enumerate(rules):
        rule_id = rule.get("id") or ""
        if not rule_id or len(rule_id) > 255:
            raise ConfigurationError("rule %d needs an id of 1 to 255 characters" % (index + 1))
        if rule_id in seen_ids:
            raise ConfigurationError("rule id %r is used twice" % rule_id)
        priority = rule.get("priority")
        priority = index + 1 if priority is None else int(priority)
        if priority in seen_priorities:
            raise ConfigurationError("priority %d is used twice" % priority)
        storage_class = (rule.get("storage_class") or "STANDARD").upper()
        if storage_class not in STORAGE_CLASSES:
            raise ConfigurationError("rule %s: storage class %s is not one of %s"
                                     % (rule_id, storage_class, ", ".join(STORAGE_CLASSES)))
        if not rule.get("destination_bucket"):
            raise ConfigurationError("rule %s needs a destination_bucket" % rule_id)
        seen_ids.add(rule_id)
        seen_priorities.add(priority)
        out.append({
            "ID": rule_id,
            "Priority": priority,
            "Status": "Enabled" if rule.get("enabled", True) else "Disabled",
            "Filter": {"Prefix": rule.get("prefix") or ""},
            "DeleteMarkerReplication": {
                "Status": "Enabled" if rule.get("replicate_delete_markers") else "Disabled"},
            "Destination": {"Bucket": bucket_arn(rule["destination_bucket"], partition),
                            "StorageClass": storage_class},
        })
    return {"Role": role_arn, "Rules": out}


def _canonical_rule(rule):
    """What a rule means, in a form two equal rules share (S3 may add or drop defaults)."""
    filt = rule.get("Filter")
    if filt is None:
        prefix = rule.get("Prefix", "")  # the older, filter-less rule form
    else:
        prefix = filt.get("Prefix", "") if set(filt) <= {"Prefix"} else None
    destination = rule.get("Destination") or {}
    extra = {k: v for k, v in rule.items() if k not in _KNOWN_RULE_KEYS}
    extra.update({"Filter": filt} if prefix is None else {})
    extra.update({"Destination." + k: v for k, v in destination.items() if k not in _KNOWN_DESTINATION_KEYS})
    return {
        "ID": rule.get("ID", ""),
        "Priority": int(rule.get("Priority", 0) or 0),
        "Status": rule.get("Status", ""),
        "Prefix": prefix,
        "DeleteMarkerReplication": (rule.get("DeleteMarkerReplication") or {}).get("Status", "Disabled"),
        "Bucket": destination.get("Bucket", ""),
        "StorageClass": destination.get("StorageClass", "STANDARD"),
        "Other": json.dumps(extra, sort_keys=True, default=str),
    }


def canonical(configuration):
    """A comparable form of a ReplicationConfiguration (None stays None)."""
    if configuration is None:
        return None
    rules = [_canonical_rule(r) for r in configuration.get("Rules", [])]
    return {"Role": configuration.get("Role", ""), "Rules": sorted(rules, key=lambda r: r["ID"])}


def same_configuration(left, right):
    return canonical(left) == canonical(right)


class ReplicationManager:
    """Reads and writes one bucket's replication configuration through a boto3 client."""

    def __init__(self, client, bucket, client_errors=(), sleep=time.sleep, attempts=5, delay=2.0):
        self.client = client
        self.bucket = bucket
        # botocore's ClientError and BotoCoreError; passed in so this file needs no botocore.
        self.client_errors = tuple(client_errors) or (Exception,)
        self.sleep = sleep
        self.attempts = attempts
        self.delay = delay

    def _fail(self, action, exc):
        code = error_code(exc)
        if code in _UNSUPPORTED:
            raise ReplicationUnsupported(
                self.bucket, "the S3 endpoint does not support bucket replication (%s answered %s: %s)"
                % (action, code, exc))
        raise ReplicationError(self.bucket, "%s failed: %s" % (action, exc))

    def read(self):
        """The bucket's replication configuration, or None when it has none."""
        try:
            response = self.client.get_bucket_replication(Bucket=self.bucket)
        except self.client_errors as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            self._fail("GetBucketReplication", exc)
        configuration = dict(response.get("ReplicationConfiguration") or {})
        return configuration or None

    def _read_back(self, wanted):
        """Read until the bucket holds wanted (None: nothing); S3 may answer stale reads briefly."""
        current = None
        for attempt in range(self.attempts):
            current = self.read()
            if same_configuration(current, wanted):
                return current
            if attempt + 1 < self.attempts:
                self.sleep(self.delay)
        raise ReplicationError(
            self.bucket, "the S3 endpoint accepted the replication configuration but holds %s instead"
            % (json.dumps(current, sort_keys=True, default=str) if current else "none"))

    def ensure_present(self, wanted, check_mode=False):
        """Make the configuration wanted; returns (changed, before, after)."""
        before = self.read()
        if same_configuration(before, wanted):
            return False, before, before
        if check_mode:
            return True, before, wanted
        try:
            self.client.put_bucket_replication(Bucket=self.bucket, ReplicationConfiguration=wanted)
        except self.client_errors as exc:
            self._fail("PutBucketReplication", exc)
        return True, before, self._read_back(wanted)

    def ensure_absent(self, check_mode=False):
        """Remove any configuration; returns (changed, before, after)."""
        before = self.read()
        if before is None:
            return False, None, None
        if check_mode:
            return True, before, None
        try:
            self.client.delete_bucket_replication(Bucket=self.bucket)
        except self.client_errors as exc:
            self._fail("DeleteBucketReplication", exc)
        return True, before, self._read_back(None)
