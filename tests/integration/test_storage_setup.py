"""playbooks/storage_setup.yml and the monthly offsite copy, against the sandbox's SeaweedFS.

The playbook runs on buckets of these tests' own (created by the playbook itself with
the sandbox's admin identity), so the inventory's buckets that other tests back up into
keep their settings. Every setting SeaweedFS stores is read back through boto3 and
compared with the runbook's numbers. What SeaweedFS 4.48 lacks is probed first, by
calling the S3 API and seeing it refuse, and then skipped with the reason; if a later
SeaweedFS accepts it, the same tests check it instead.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.playbook_runner import output_of, run_playbook

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PLAYBOOK = "playbooks/storage_setup.yml"
BACKUP = "playbooks/backup.yml"
SEAWEEDFS = "SeaweedFS 4.48"
PREFIX = "backups/"
# The runbook's Backup Storage numbers.
RETENTION_DAYS = 30
GLACIER_AFTER_DAYS = 7
OFFSITE_DAYS = 365
NONCURRENT_DAYS = 7
ROLE_ARN = "arn:aws:iam::123456789012:role/cap-backup-replication"
RECAP_RE = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def admin_client(sandbox):
    creds = json.loads(sandbox.read_file("s3_admin_credentials_file"))
    return sandbox.s3_client(creds["access_key"], creds["secret_key"])


def error_code(exc):
    return exc.response.get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


def recap(proc):
    """(ok, changed, unreachable, failed) of the play's recap line."""
    match = RECAP_RE.search(proc.stdout)
    assert match, "no PLAY RECAP line:\n" + output_of(proc)
    return tuple(int(g) for g in match.groups())


def storage_destinations(sandbox, names, **extra):
    """Two destinations on buckets of these tests; the first names its admin
    credentials itself, the second falls back to cap_backup_s3_admin_credentials_file."""
    common = {"prefix": PREFIX, "endpoint_url": sandbox["s3_endpoint"], "region": sandbox["s3_region"],
              "encrypt": False}
    common.update(extra)
    primary = dict(common, name="primary", bucket=names[0],
                   admin_credentials_file=sandbox["s3_admin_credentials_file"])
    replica = dict(common, name="cross-region", bucket=names[1])
    return [primary, replica]


def setup_storage(sandbox, destinations, check=False, **extra):
    extra_vars = {"cap_backup_s3_destinations": destinations}
    extra_vars.update(extra)
    return run_playbook(sandbox.state_dir, PLAYBOOK, extra_vars=extra_vars, check=check)


def rules_by_id(client, bucket):
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return {rule["ID"]: rule for rule in rules}


# ---------------------------------------------------------------------------
# Bucket settings

@pytest.fixture(scope="module")
def buckets(sandbox):
    """storage_setup.yml run twice on two new buckets: (bucket names, first run, second run)."""
    names = ("cap-storage-primary", "cap-storage-replica")
    destinations = storage_destinations(sandbox, names)
    first = setup_storage(sandbox, destinations)
    assert first.returncode == 0, output_of(first)
    second = setup_storage(sandbox, destinations)
    assert second.returncode == 0, output_of(second)
    return names, first, second


@pytest.fixture(scope="module")
def scratch_bucket(sandbox):
    """A versioned bucket for probing what the endpoint supports, outside the playbook."""
    client = admin_client(sandbox)
    name = "cap-storage-probe"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def test_first_run_creates_the_buckets_and_changes_them(sandbox, buckets):
    names, first, _second = buckets
    _ok, changed, _unreachable, failed = recap(first)
    assert failed == 0 and changed > 0, output_of(first)
    listed = {b["Name"] for b in admin_client(sandbox).list_buckets()["Buckets"]}
    assert set(names) <= listed


def test_second_run_changes_nothing(buckets):
    _names, _first, second = buckets
    _ok, changed, _unreachable, failed = recap(second)
    assert (changed, failed) == (0, 0), output_of(second)


def test_versioning_is_on(sandbox, buckets):
    names = buckets[0]
    client = admin_client(sandbox)
    for name in names:
        assert client.get_bucket_versioning(Bucket=name).get("Status") == "Enabled", name


def test_lifecycle_rules_match_the_runbook(sandbox, buckets):
    names = buckets[0]
    client = admin_client(sandbox)
    for name in names:
        rules = rules_by_id(client, name)
        assert set(rules) == {"cap-backup-backups:%sbackup-" % PREFIX, "cap-backup-offsite:%soffsite/" % PREFIX,
                              "cap-backup-versions:%s" % PREFIX}, rules
        backups = rules["cap-backup-backups:%sbackup-" % PREFIX]
        assert backups["Status"] == "Enabled"
        assert backups["Filter"] == {"Prefix": PREFIX + "backup-"}
        assert backups["Expiration"] == {"Days": RETENTION_DAYS}
        offsite = rules["cap-backup-offsite:%soffsite/" % PREFIX]
        assert offsite["Status"] == "Enabled"
        assert offsite["Filter"] == {"Prefix": PREFIX + "offsite/"}
        assert offsite["Expiration"] == {"Days": OFFSITE_DAYS}
        versions = rules["cap-backup-versions:%s" % PREFIX]
        assert versions["Filter"] == {"Prefix": PREFIX}
        assert versions["NoncurrentVersionExpiration"] == {"NoncurrentDays": NONCURRENT_DAYS}
        assert versions["Expiration"] == {"ExpiredObjectDeleteMarker": True}
        # The sandbox inventory switches transitions off (see test_transitions_*).
        assert all("Transitions" not in rule for rule in rules.values())


def test_backup_rule_does_not_reach_the_offsite_copies():
    """A rule on the whole prefix would expire the year-long offsite copies after 30 days."""
    backup_rule_prefix = PREFIX + "backup-"
    offsite_key = PREFIX + "offsite/2025-03/backup-20250310-120000/cap-backup-20250310-120000.tar.gz.enc"
    backup_key = PREFIX + "backup-20250310-120000/cap-backup-20250310-120000.tar.gz.enc"
    assert backup_key.startswith(backup_rule_prefix)
    assert not offsite_key.startswith(backup_rule_prefix)
    assert not (PREFIX + "latest.json").startswith(backup_rule_prefix)


def test_other_rules_on_the_bucket_are_kept(sandbox, buckets):
    names = buckets[0]
    client = admin_client(sandbox)
    current = client.get_bucket_lifecycle_configuration(Bucket=names[1])["Rules"]
    client.put_bucket_lifecycle_configuration(Bucket=names[1], LifecycleConfiguration={"Rules": current + [
        {"ID": "someone-else", "Filter": {"Prefix": "scratch/"}, "Status": "Enabled",
         "Expiration": {"Days": 2}}]})
    proc = setup_storage(sandbox, storage_destinations(sandbox, names))
    assert proc.returncode == 0, output_of(proc)
    assert recap(proc)[1] == 0, output_of(proc)
    assert rules_by_id(client, names[1])["someone-else"]["Expiration"] == {"Days": 2}


def test_changed_numbers_are_applied_and_restored(sandbox, buckets):
    names = buckets[0]
    client = admin_client(sandbox)
    destinations = storage_destinations(sandbox, names)
    proc = setup_storage(sandbox, destinations, cap_backup_s3_expiration_days=14)
    assert proc.returncode == 0, output_of(proc)
    assert recap(proc)[1] > 0
    for name in names:
        assert rules_by_id(client, name)["cap-backup-backups:%sbackup-" % PREFIX]["Expiration"] == {"Days": 14}
    proc = setup_storage(sandbox, destinations)
    assert proc.returncode == 0, output_of(proc)
    for name in names:
        assert rules_by_id(client, name)["cap-backup-backups:%sbackup-" % PREFIX]["Expiration"] == {
            "Days": RETENTION_DAYS}


def test_check_mode_changes_nothing(sandbox, buckets):
    names = buckets[0]
    client = admin_client(sandbox)
    before = {name: rules_by_id(client, name) for name in names}
    proc = setup_storage(sandbox, storage_destinations(sandbox, names), check=True,
                         cap_backup_s3_expiration_days=3)
    assert proc.returncode == 0, output_of(proc)
    assert {name: rules_by_id(client, name) for name in names} == before


def test_invalid_options_fail_before_any_bucket_is_touched(sandbox):
    names = ("cap-storage-never-created", "cap-storage-never-created-2")
    proc = setup_storage(sandbox, storage_destinations(sandbox, names),
                         cap_backup_s3_transition_days=40, cap_backup_s3_lifecycle_transitions=True)
    assert proc.returncode != 0
    assert "a transition must come before its expiration" in proc.stdout + proc.stderr, output_of(proc)
    listed = {b["Name"] for b in admin_client(sandbox).list_buckets()["Buckets"]}
    assert not set(names) & listed


def test_transitions_to_glacier_and_deep_archive(sandbox, buckets, scratch_bucket):
    """Runbook: Glacier after 7 days; offsite copies in an archive class."""
    from botocore.exceptions import ClientError

    client = admin_client(sandbox)
    try:
        client.put_bucket_lifecycle_configuration(Bucket=scratch_bucket, LifecycleConfiguration={"Rules": [
            {"ID": "probe", "Filter": {"Prefix": "probe/"}, "Status": "Enabled",
             "Expiration": {"Days": RETENTION_DAYS},
             "Transitions": [{"Days": GLACIER_AFTER_DAYS, "StorageClass": "GLACIER"}]}]})
    except ClientError as exc:
        assert error_code(exc) == "NotImplemented", exc
        # The playbook with transitions on fails with the endpoint's answer, changing nothing.
        names = buckets[0]
        before = rules_by_id(client, names[0])
        proc = setup_storage(sandbox, storage_destinations(sandbox, names),
                             cap_backup_s3_lifecycle_transitions=True)
        assert proc.returncode != 0
        assert "Could not configure s3://%s" % names[0] in proc.stdout + proc.stderr, output_of(proc)
        assert "NotImplemented" in proc.stdout + proc.stderr, output_of(proc)
        assert rules_by_id(client, names[0]) == before
        pytest.skip("%s does not support lifecycle transitions to storage classes "
                    "(PutBucketLifecycleConfiguration with a Transition answers NotImplemented); "
                    "the sandbox inventory sets cap_backup_s3_lifecycle_transitions: false" % SEAWEEDFS)
    names = buckets[0]
    proc = setup_storage(sandbox, storage_destinations(sandbox, names), cap_backup_s3_lifecycle_transitions=True)
    assert proc.returncode == 0, output_of(proc)
    for name in names:
        rules = rules_by_id(client, name)
        assert rules["cap-backup-backups:%sbackup-" % PREFIX]["Transitions"] == [
            {"Days": GLACIER_AFTER_DAYS, "StorageClass": "GLACIER"}]
        assert rules["cap-backup-offsite:%soffsite/" % PREFIX]["Transitions"] == [
            {"Days": 1, "StorageClass": "DEEP_ARCHIVE"}]


def test_cross_region_replication(sandbox, buckets, scratch_bucket):
    """Runbook: replication us-east-1 -> eu-central-1."""
    from botocore.exceptions import ClientError

    client = admin_client(sandbox)
    try:
        client.put_bucket_replication(Bucket=scratch_bucket, ReplicationConfiguration={
            "Role": ROLE_ARN, "Rules": [{
                "ID": "probe", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": "probe/"},
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Destination": {"Bucket": "arn:aws:s3:::%s" % buckets[0][1]}}]})
        stored = client.get_bucket_replication(Bucket=scratch_bucket)["ReplicationConfiguration"]
        supported = stored.get("Role") == ROLE_ARN
        answer = "GetBucketReplication returned %s" % stored
    except ClientError as exc:
        supported = False
        answer = "PutBucketReplication answered %s" % error_code(exc)
    names = buckets[0]
    replication = {"role_arn": ROLE_ARN, "source": "primary", "target": "cross-region"}
    proc = setup_storage(sandbox, storage_destinations(sandbox, names), cap_backup_s3_replication=replication)
    if not supported:
        # The playbook says so and names the buckets, rather than reporting success.
        assert proc.returncode != 0
        text = proc.stdout + proc.stderr
        assert "Could not set replication s3://%s/%s -> s3://%s" % (names[0], PREFIX, names[1]) in text, \
            output_of(proc)
        assert "the S3 endpoint does not support bucket replication" in text, output_of(proc)
        pytest.skip("%s does not support S3 bucket replication (%s; it has no replication "
                    "API, only its own filer.replicate); the sandbox inventory sets "
                    "cap_backup_s3_replication: {}" % (SEAWEEDFS, answer))
    assert proc.returncode == 0, output_of(proc)
    rules = client.get_bucket_replication(Bucket=names[0])["ReplicationConfiguration"]["Rules"]
    assert [r["Destination"]["Bucket"] for r in rules] == ["arn:aws:s3:::%s" % names[1]]
    assert rules[0]["Filter"] == {"Prefix": PREFIX}
    again = setup_storage(sandbox, storage_destinations(sandbox, names), cap_backup_s3_replication=replication)
    assert again.returncode == 0 and recap(again)[1] == 0, output_of(again)


def test_replication_needs_a_role_and_two_buckets(sandbox, buckets):
    names = buckets[0]
    proc = setup_storage(sandbox, storage_destinations(sandbox, names),
                         cap_backup_s3_replication={"role_arn": "cap-backup-replication", "target": "nowhere"})
    assert proc.returncode != 0
    assert "Invalid cap_backup_s3_replication" in proc.stdout + proc.stderr, output_of(proc)


# ---------------------------------------------------------------------------
# Monthly offsite copy

OFFSITE_BUCKETS = ("cap-offsite-primary", "cap-offsite-replica")


def backup_destinations(sandbox):
    """Backups into the offsite tests' own buckets (the scoped identity cannot reach
    them, so these destinations use the admin one for the backup too)."""
    return storage_destinations(sandbox, OFFSITE_BUCKETS,
                                credentials_file=sandbox["s3_admin_credentials_file"])


def run_backup(sandbox, output_dir, timestamp, **extra):
    extra_vars = {"cap_backup_output_dir": str(output_dir), "cap_backup_timestamp": timestamp,
                  "cap_backup_s3_destinations": backup_destinations(sandbox)}
    extra_vars.update(extra)
    return run_playbook(sandbox.state_dir, BACKUP, extra_vars=extra_vars)


def keys_under(client, bucket, prefix):
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def subdirs(client, bucket, prefix):
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return sorted(p["Prefix"][len(prefix):] for p in listing.get("CommonPrefixes", []))


def offsite_record(client, bucket, month):
    body = client.get_object(Bucket=bucket, Key="%soffsite/%s/offsite.json" % (PREFIX, month))["Body"]
    return json.loads(body.read())


@pytest.fixture(scope="module")
def offsite_backups(sandbox, tmp_path_factory):
    """Buckets set up by storage_setup.yml, then backups on 10 and 20 March 2025 and on
    2 April 2025: {timestamp: (proc, offsite.json of the month in each bucket after it)}."""
    client = admin_client(sandbox)
    proc = setup_storage(sandbox, backup_destinations(sandbox))
    assert proc.returncode == 0, output_of(proc)
    runs = {}
    for timestamp in ("20250310-120000", "20250320-120000", "20250402-120000"):
        out = tmp_path_factory.mktemp("offsite-" + timestamp)
        proc = run_backup(sandbox, out, timestamp)
        assert proc.returncode == 0, output_of(proc)
        month = "%s-%s" % (timestamp[:4], timestamp[4:6])
        runs[timestamp] = (proc, {b: offsite_record(client, b, month) for b in OFFSITE_BUCKETS})
    return runs


def test_first_backup_of_the_month_is_copied_off_site(sandbox, offsite_backups):
    client = admin_client(sandbox)
    _proc, records = offsite_backups["20250310-120000"]
    for bucket in OFFSITE_BUCKETS:
        record = records[bucket]
        assert record["version"] == "cap-backup-offsite.v1"
        assert record["month"] == "2025-03"
        assert record["backup_id"] == "backup-20250310-120000"
        assert record["prefix"] == PREFIX + "offsite/2025-03/backup-20250310-120000/"
        source = PREFIX + "backup-20250310-120000/"
        originals = keys_under(client, bucket, source)
        assert len(originals) >= 3  # archive, its .sha3, the manifest (and its signature)
        copies = keys_under(client, bucket, record["prefix"])
        assert [k[len(record["prefix"]):] for k in copies] == [k[len(source):] for k in originals]
        assert sorted(o["key"] for o in record["objects"]) == copies
        for original, copy in zip(originals, copies):
            src = client.head_object(Bucket=bucket, Key=original)
            dst = client.head_object(Bucket=bucket, Key=copy)
            assert dst["ContentLength"] == src["ContentLength"]
            assert dst["Metadata"]["sha3-256"] == src["Metadata"]["sha3-256"]
            assert client.get_object(Bucket=bucket, Key=copy)["Body"].read() == \
                client.get_object(Bucket=bucket, Key=original)["Body"].read()
        assert record["archive_sha3_256"] in {o["sha3_256"] for o in record["objects"]}


def test_second_backup_in_the_same_month_adds_no_copy(sandbox, offsite_backups):
    client = admin_client(sandbox)
    _proc, records = offsite_backups["20250320-120000"]
    for bucket in OFFSITE_BUCKETS:
        assert records[bucket] == offsite_backups["20250310-120000"][1][bucket]
        assert subdirs(client, bucket, PREFIX + "offsite/2025-03/") == ["backup-20250310-120000/"]
        # The backup itself went to its usual place.
        assert keys_under(client, bucket, PREFIX + "backup-20250320-120000/")


def test_a_new_month_gets_its_own_copy(sandbox, offsite_backups):
    client = admin_client(sandbox)
    _proc, records = offsite_backups["20250402-120000"]
    for bucket in OFFSITE_BUCKETS:
        assert records[bucket]["backup_id"] == "backup-20250402-120000"
        assert subdirs(client, bucket, PREFIX + "offsite/") == ["2025-03/", "2025-04/"]
        assert subdirs(client, bucket, PREFIX + "offsite/2025-04/") == ["backup-20250402-120000/"]


def test_a_broken_copy_is_removed_and_fails_the_run(sandbox, offsite_backups, tmp_path):
    """s3_object's copy reports success when its source is missing; the read-back catches
    it, the partial copy is removed and no offsite.json marks the month done."""
    client = admin_client(sandbox)
    bucket = OFFSITE_BUCKETS[0]
    backup_id = "backup-20250615-120000"
    archive = tmp_path / "cap-backup-20250615-120000.tar.gz.enc"
    archive.write_bytes(b"not really an archive")
    client.put_object(Bucket=bucket, Key="%s%s/%s" % (PREFIX, backup_id, archive.name), Body=archive.read_bytes(),
                      Metadata={"sha3-256": "0x" + "ab" * 32})
    playbook = tmp_path / "offsite.yml"
    playbook.write_text(json.dumps([{
        "name": "Offsite copy of a backup whose signature never reached S3",
        "hosts": "cap_backup_hosts",
        "gather_facts": False,
        "tasks": [
            {"name": "Resolve the destinations", "ansible.builtin.include_role": {
                "name": "cap_backup", "tasks_from": "storage_preflight.yml"}},
            {"name": "Copy off site", "ansible.builtin.include_role": {
                "name": "cap_backup", "tasks_from": "store_s3_offsite.yml"},
             "vars": {"_cap_backup_dest": "{{ _cap_backup_storage[0] | combine({'encrypt': false}) }}"}},
        ],
        "vars": {
            "cap_backup_s3_destinations": backup_destinations(sandbox),
            "_cap_backup_ts": "20250615-120000",
            "_cap_backup_id": backup_id,
            "_cap_backup_archive": str(archive),
            "_cap_backup_archive_sha3": "0x" + "ab" * 32,
            "_cap_backup_files": [
                {"path": str(archive), "sha3_256": "0x" + "ab" * 32, "size_bytes": archive.stat().st_size},
                {"path": str(tmp_path / "cap-backup-20250615-120000.manifest.json.sig"),
                 "sha3_256": "0x" + "cd" * 32, "size_bytes": 64},
            ],
            "__cap_backup_manifest": {"manifest": {"created_at": "2025-06-15T12:00:00Z"}},
        },
    }]))
    proc = run_playbook(sandbox.state_dir, playbook)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Offsite copy of %s to s3://%s/%soffsite/2025-06/ (primary) failed at Read back the originals" % (
        backup_id, bucket, PREFIX) in text, output_of(proc)
    assert keys_under(client, bucket, PREFIX + "offsite/2025-06/") == []
