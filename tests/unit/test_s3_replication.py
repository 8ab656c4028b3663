"""module_utils/cap_s3_replication: building, comparing and applying a replication configuration."""

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError
from botocore.stub import Stubber

from ansible.module_utils.cap_s3_replication import (
    ConfigurationError,
    ReplicationError,
    ReplicationManager,
    ReplicationUnsupported,
    bucket_arn,
    build_configuration,
    canonical,
    partition_of,
    same_configuration,
)

ROLE = "arn:aws:iam::123456789012:role/cap-backup-replication"
BUCKET = "cap-backups"


def rule(**kw):
    base = {"id": "cap-backup-replication:prod/", "prefix": "prod/",
            "destination_bucket": "cap-backups-eu-central-1"}
    base.update(kw)
    return base


def wanted():
    return build_configuration(ROLE, [rule()])


# ---------------------------------------------------------------------------
# Building

def test_build_configuration_shape():
    assert wanted() == {"Role": ROLE, "Rules": [{
        "ID": "cap-backup-replication:prod/",
        "Priority": 1,
        "Status": "Enabled",
        "Filter": {"Prefix": "prod/"},
        "DeleteMarkerReplication": {"Status": "Disabled"},
        "Destination": {"Bucket": "arn:aws:s3:::cap-backups-eu-central-1", "StorageClass": "STANDARD"},
    }]}


def test_build_configuration_options():
    config = build_configuration("arn:aws-cn:iam::123456789012:role/r", [
        rule(storage_class="standard_ia", replicate_delete_markers=True, enabled=False),
        rule(id="second", destination_bucket="arn:aws-cn:s3:::other", priority=7, prefix=None)])
    first, second = config["Rules"]
    assert first["Destination"] == {"Bucket": "arn:aws-cn:s3:::cap-backups-eu-central-1",
                                    "StorageClass": "STANDARD_IA"}
    assert first["DeleteMarkerReplication"] == {"Status": "Enabled"}
    assert first["Status"] == "Disabled"
    assert second["Priority"] == 7 and second["Filter"] == {"Prefix": ""}
    assert second["Destination"]["Bucket"] == "arn:aws-cn:s3:::other"


@pytest.mark.parametrize("role_arn", ["", "cap-backup-replication", "arn:aws:s3:::bucket",
                                      "arn:aws:iam::123456789012:user/someone"])
def test_role_arn_must_be_an_iam_role(role_arn):
    with pytest.raises(ConfigurationError, match="is not an IAM role ARN"):
        build_configuration(role_arn, [rule()])


@pytest.mark.parametrize("rules, message", [
    ([], "at least one rule"),
    ([rule(), rule()], "used twice"),
    ([rule(), rule(id="b", priority=1)], "priority 1 is used twice"),
    ([rule(storage_class="TAPE")], "storage class TAPE"),
    ([rule(id="")], "needs an id"),
    ([rule(destination_bucket="")], "needs a destination_bucket"),
])
def test_invalid_rules(rules, message):
    with pytest.raises(ConfigurationError, match=message):
        build_configuration(ROLE, rules)


def test_arns_and_partitions():
    assert partition_of("arn:aws-us-gov:iam::123456789012:role/x") == "aws-us-gov"
    assert bucket_arn("b") == "arn:aws:s3:::b"
    assert bucket_arn("arn:aws:s3:::b", "aws-cn") == "arn:aws:s3:::b"


# ---------------------------------------------------------------------------
# Comparing

def as_s3_returns_it(config):
    """The same configuration the way S3 may give it back: defaults dropped, rules reordered."""
    rules = []
    for r in reversed(config["Rules"]):
        r = dict(r, Destination={"Bucket": r["Destination"]["Bucket"]})
        r.pop("DeleteMarkerReplication")
        rules.append(r)
    return {"Role": config["Role"], "Rules": rules}


def test_defaults_that_s3_drops_are_no_difference():
    config = build_configuration(ROLE, [rule(), rule(id="b", prefix="")])
    assert same_configuration(config, as_s3_returns_it(config))
    empty_filter = dict(config, Rules=[dict(r, Filter={}) if r["ID"] == "b" else r for r in config["Rules"]])
    assert same_configuration(config, empty_filter)
    legacy = {"Role": ROLE, "Rules": [{k: v for k, v in r.items() if k != "Filter"} | {"Prefix": r["Filter"]["Prefix"]}
                                      for r in config["Rules"]]}
    assert same_configuration(config, legacy)


@pytest.mark.parametrize("change", [
    lambda c: c.update(Role="arn:aws:iam::123456789012:role/other"),
    lambda c: c["Rules"][0].update(Status="Disabled"),
    lambda c: c["Rules"][0].update(Filter={"Prefix": "other/"}),
    lambda c: c["Rules"][0].update(Filter={"And": {"Prefix": "prod/", "Tags": []}}),
    lambda c: c["Rules"][0]["Destination"].update(StorageClass="GLACIER"),
    lambda c: c["Rules"][0]["Destination"].update(Account="210987654321"),
    lambda c: c["Rules"][0].update(SourceSelectionCriteria={"SseKmsEncryptedObjects": {"Status": "Enabled"}}),
    lambda c: c["Rules"][0].update(DeleteMarkerReplication={"Status": "Enabled"}),
    lambda c: c["Rules"].append(dict(c["Rules"][0], ID="extra", Priority=2)),
])
def test_any_other_setting_is_a_difference(change):
    config = wanted()
    other = wanted()
    change(other)
    assert not same_configuration(config, other)


def test_nothing_compares_to_none():
    assert canonical(None) is None
    assert not same_configuration(None, wanted())
    assert same_configuration(None, None)


# ---------------------------------------------------------------------------
# Applying, with a stubbed S3 client

@pytest.fixture
def s3():
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIATEST",
                          aws_secret_access_key="test")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def manager(client, sleeps=None):
    return ReplicationManager(client, BUCKET, client_errors=(ClientError, BotoCoreError),
                              sleep=(sleeps.append if sleeps is not None else lambda _s: None))


def no_configuration(stub):
    stub.add_client_error("get_bucket_replication", service_error_code="ReplicationConfigurationNotFoundError",
                          http_status_code=404, expected_params={"Bucket": BUCKET})


def holds(stub, config):
    stub.add_response("get_bucket_replication", {"ReplicationConfiguration": config}, {"Bucket": BUCKET})


def test_sets_a_missing_configuration_and_reads_it_back(s3):
    client, stub = s3
    no_configuration(stub)
    stub.add_response("put_bucket_replication", {}, {"Bucket": BUCKET, "ReplicationConfiguration": wanted()})
    holds(stub, as_s3_returns_it(wanted()))
    changed, before, after = manager(client).ensure_present(wanted())
    assert changed and before is None
    assert same_configuration(after, wanted())


def test_a_matching_configuration_is_left_alone(s3):
    client, stub = s3
    holds(stub, as_s3_returns_it(wanted()))
    changed, before, after = manager(client).ensure_present(wanted())
    assert not changed and before == after


def test_check_mode_reads_only(s3):
    client, stub = s3
    other = build_configuration(ROLE, [rule(storage_class="GLACIER")])
    holds(stub, wanted())
    changed, before, after = manager(client).ensure_present(other, check_mode=True)
    assert changed and before == wanted() and after == other


def test_a_different_configuration_is_replaced(s3):
    client, stub = s3
    other = build_configuration(ROLE, [rule(storage_class="GLACIER")])
    holds(stub, wanted())
    stub.add_response("put_bucket_replication", {}, {"Bucket": BUCKET, "ReplicationConfiguration": other})
    holds(stub, other)
    assert manager(client).ensure_present(other)[0]


def test_a_stale_read_is_retried(s3):
    client, stub = s3
    sleeps = []
    no_configuration(stub)
    stub.add_response("put_bucket_replication", {}, {"Bucket": BUCKET, "ReplicationConfiguration": wanted()})
    no_configuration(stub)
    holds(stub, wanted())
    assert manager(client, sleeps).ensure_present(wanted())[0]
    assert sleeps == [2.0]


def test_an_endpoint_that_keeps_nothing_fails(s3):
    client, stub = s3
    sleeps = []
    no_configuration(stub)
    stub.add_response("put_bucket_replication", {}, {"Bucket": BUCKET, "ReplicationConfiguration": wanted()})
    for _ in range(5):
        no_configuration(stub)
    with pytest.raises(ReplicationError, match="accepted the replication configuration but holds none"):
        manager(client, sleeps).ensure_present(wanted())
    assert len(sleeps) == 4


@pytest.mark.parametrize("code", ["BucketAlreadyOwnedByYou", "NotImplemented"])
def test_an_endpoint_without_replication_is_named(s3, code):
    """SeaweedFS routes PUT ?replication to CreateBucket and answers BucketAlreadyOwnedByYou."""
    client, stub = s3
    no_configuration(stub)
    stub.add_client_error("put_bucket_replication", service_error_code=code, http_status_code=409)
    with pytest.raises(ReplicationUnsupported) as info:
        manager(client).ensure_present(wanted())
    assert str(info.value).startswith("bucket cap-backups: the S3 endpoint does not support bucket replication "
                                      "(PutBucketReplication answered %s" % code)


def test_other_errors_name_the_call(s3):
    client, stub = s3
    stub.add_client_error("get_bucket_replication", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(ReplicationError) as info:
        manager(client).ensure_present(wanted())
    assert not isinstance(info.value, ReplicationUnsupported)
    assert "GetBucketReplication failed" in str(info.value) and "AccessDenied" in str(info.value)


def test_removal(s3):
    client, stub = s3
    holds(stub, wanted())
    stub.add_response("delete_bucket_replication", {}, {"Bucket": BUCKET})
    no_configuration(stub)
    no_configuration(stub)
    m = manager(client)
    assert m.ensure_absent() == (True, wanted(), None)
    assert m.ensure_absent() == (False, None, None)


def test_removal_in_check_mode(s3):
    client, stub = s3
    holds(stub, wanted())
    assert manager(client).ensure_absent(check_mode=True) == (True, wanted(), None)
