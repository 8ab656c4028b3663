"""Grandfather-father-son retention: policy, sidecars, newest-verified protection."""

import datetime
import hashlib
import os
import random
import re

import pytest

from ansible.module_utils.cap_retention import (
    DEFAULT_PATTERN,
    RetentionError,
    SidecarError,
    apply,
    plan,
    read_sidecar,
    sidecar_line,
)

START = datetime.datetime(2025, 10, 1, 0, 0, 0)
NOT_BACKUPS = [
    ".cap-backup.lock", "audit", "cap_backup.prom", "cap-backup-latest.tar.gz",
    "cap-backup-20251001-000000.tar.gz.part", "notes-20251001-000000.txt",
    "cap-backup-20251001-0000.tar.gz", "backup.manifest.json",
]


def ts(moment):
    return moment.strftime("%Y%m%d-%H%M%S")


def write_backup(directory, name, sidecar="good", manifest=True):
    """An archive with its sidecars. sidecar: good, bad (wrong hash) or None."""
    data = ("archive %s\n" % name).encode() * 3
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(data)
    if sidecar:
        digest = hashlib.sha3_256(data).hexdigest()
        if sidecar == "bad":
            digest = hashlib.sha3_256(data + b"x").hexdigest()
        with open(path + ".sha3", "w") as handle:
            handle.write("%s  %s\n" % (digest, name))
    stem = name.split(".tar.gz")[0]
    if manifest:
        for suffix in (".manifest.json", ".manifest.json.sig"):
            with open(os.path.join(directory, stem + suffix), "w") as handle:
                handle.write("{}")


def build_forty_days(directory, seed=1):
    """~40 days of hourly backups with gaps, extra manual runs and mixed sidecars.

    Returns {stem: moment}.
    """
    rng = random.Random(seed)
    stems = {}
    for hour in range(40 * 24):
        moment = START + datetime.timedelta(hours=hour, minutes=0, seconds=rng.choice([0, 1, 7]))
        if rng.random() < 0.08:
            continue  # a missed hour
        stem = "cap-backup-%s" % ts(moment)
        suffix = ".tar.gz.enc" if rng.random() < 0.7 else ".tar.gz"
        write_backup(directory, stem + suffix, sidecar=rng.choice(["good", "good", "bad", None]))
        stems[stem] = moment
        if rng.random() < 0.05:
            extra = moment + datetime.timedelta(minutes=30)
            manual = "manual-backup-%s" % ts(extra)
            write_backup(directory, manual + ".tar.gz", sidecar="good", manifest=False)
            stems[manual] = extra
    for name in NOT_BACKUPS:
        path = os.path.join(directory, name)
        if name in (".cap-backup.lock", "audit"):
            os.mkdir(path)
        else:
            with open(path, "w") as handle:
                handle.write("x")
    return stems


def reference_keep(stems, keep_hourly, keep_daily, keep_monthly, keep_last):
    """The policy written the obvious way: group by period, newest periods, newest per period."""
    keep = set()
    newest_first = sorted(stems, key=lambda s: (stems[s], s), reverse=True)
    keep.update(newest_first[:keep_last])
    for count, fmt in ((keep_hourly, "%Y%m%d%H"), (keep_daily, "%Y%m%d"), (keep_monthly, "%Y%m")):
        periods = {}
        for stem, moment in stems.items():
            periods.setdefault(moment.strftime(fmt), []).append(stem)
        for period in sorted(periods, reverse=True)[:count]:
            keep.add(max(periods[period], key=lambda s: (stems[s], s)))
    return keep


def files_of(directory, stems):
    """The files that belong to these backups, by the naming rules of docs/retention.md."""
    present = set(os.listdir(directory))
    names = set()
    for stem in stems:
        for archive in (stem + ".tar.gz", stem + ".tar.gz.enc"):
            if archive in present:
                names.add(archive)
                names.add(archive + ".sha3")
        names.update((stem + ".manifest.json", stem + ".manifest.json.sig"))
    return names & present


@pytest.mark.parametrize("policy", [
    dict(keep_hourly=168, keep_daily=7, keep_monthly=0, keep_last=1),
    dict(keep_hourly=24, keep_daily=30, keep_monthly=0, keep_last=1),
    dict(keep_hourly=0, keep_daily=3, keep_monthly=2, keep_last=0),
    dict(keep_hourly=6, keep_daily=0, keep_monthly=0, keep_last=10),
    dict(keep_hourly=2000, keep_daily=0, keep_monthly=0, keep_last=0),
    dict(keep_hourly=0, keep_daily=0, keep_monthly=0, keep_last=0),
])
def test_forty_days_policy_matches_the_reference(tmp_path, policy):
    directory = str(tmp_path)
    stems = build_forty_days(directory)
    before = set(os.listdir(directory))
    expected_keep = reference_keep(stems, **policy)
    result = plan(directory, verify_newest=False, **policy)
    assert {r["backup"] for r in result["kept"]} == expected_keep
    assert {r["backup"] for r in result["deleted"]} == set(stems) - expected_keep
    expected_files = files_of(directory, set(stems) - expected_keep)
    removed = apply(directory, result)
    assert set(removed) == expected_files
    assert set(os.listdir(directory)) == before - expected_files
    for name in NOT_BACKUPS:
        assert os.path.exists(os.path.join(directory, name))


def test_default_policy_keeps_a_week_of_hours_and_a_week_of_days(tmp_path):
    directory = str(tmp_path)
    stems = build_forty_days(directory)
    result = plan(directory, verify_newest=False)
    kept = {r["backup"]: r["reasons"] for r in result["kept"]}
    newest = max(stems, key=lambda s: (stems[s], s))
    assert kept[newest] == ["keep_last", "hourly", "daily"]
    hourly = [s for s, reasons in kept.items() if "hourly" in reasons]
    daily = [s for s, reasons in kept.items() if "daily" in reasons]
    assert len(hourly) == 168 and len(daily) == 7
    # The daily keeps are the last backup of each of the seven newest days.
    days = sorted({stems[s].date() for s in stems}, reverse=True)[:7]
    assert sorted(stems[s].date() for s in daily) == sorted(days)
    assert len(kept) == 168 + 7 - len(set(hourly) & set(daily))


def test_small_hand_picked_case(tmp_path):
    directory = str(tmp_path)
    names = [
        "cap-backup-20251108-090000.tar.gz",
        "cap-backup-20251109-100000.tar.gz",
        "cap-backup-20251109-230000.tar.gz",
        "cap-backup-20251110-110000.tar.gz",
        "cap-backup-20251110-110500.tar.gz.enc",
        "cap-backup-20251110-120000.tar.gz.enc",
    ]
    for name in names:
        write_backup(directory, name)
    result = plan(directory, keep_hourly=2, keep_daily=2, keep_monthly=0, keep_last=1,
                  verify_newest=False)
    kept = {r["backup"]: r["reasons"] for r in result["kept"]}
    assert kept == {
        "cap-backup-20251110-120000": ["keep_last", "hourly", "daily"],
        "cap-backup-20251110-110500": ["hourly"],
        "cap-backup-20251109-230000": ["daily"],
    }
    assert [r["backup"] for r in result["deleted"]] == [
        "cap-backup-20251110-110000", "cap-backup-20251109-100000", "cap-backup-20251108-090000"]
    assert result["deleted"][0]["files"] == [
        "cap-backup-20251110-110000.tar.gz.sha3",
        "cap-backup-20251110-110000.manifest.json",
        "cap-backup-20251110-110000.manifest.json.sig",
        "cap-backup-20251110-110000.tar.gz",
    ]


def test_monthly_keeps_the_newest_of_each_month(tmp_path):
    directory = str(tmp_path)
    for name in ("cap-backup-20250815-000000.tar.gz", "cap-backup-20250831-230000.tar.gz",
                 "cap-backup-20250901-000000.tar.gz", "cap-backup-20250930-120000.tar.gz",
                 "cap-backup-20251002-000000.tar.gz"):
        write_backup(directory, name)
    result = plan(directory, keep_hourly=0, keep_daily=0, keep_monthly=2, keep_last=0,
                  verify_newest=False)
    assert [r["backup"] for r in result["kept"]] == [
        "cap-backup-20251002-000000", "cap-backup-20250930-120000"]
    result = plan(directory, keep_hourly=0, keep_daily=0, keep_monthly=12, keep_last=0,
                  verify_newest=False)
    assert [r["backup"] for r in result["kept"]] == [
        "cap-backup-20251002-000000", "cap-backup-20250930-120000", "cap-backup-20250831-230000"]


def test_archives_of_one_stem_are_one_backup(tmp_path):
    directory = str(tmp_path)
    write_backup(directory, "cap-backup-20251110-100000.tar.gz")
    write_backup(directory, "cap-backup-20251110-100000.tar.gz.enc")
    write_backup(directory, "cap-backup-20251110-120000.tar.gz.enc")
    result = plan(directory, keep_hourly=1, keep_daily=0, keep_last=0, verify_newest=False)
    (gone,) = result["deleted"]
    assert gone["archives"] == ["cap-backup-20251110-100000.tar.gz",
                                "cap-backup-20251110-100000.tar.gz.enc"]
    assert sorted(gone["files"]) == sorted([
        "cap-backup-20251110-100000.tar.gz", "cap-backup-20251110-100000.tar.gz.enc",
        "cap-backup-20251110-100000.tar.gz.sha3", "cap-backup-20251110-100000.tar.gz.enc.sha3",
        "cap-backup-20251110-100000.manifest.json", "cap-backup-20251110-100000.manifest.json.sig",
    ])
    assert gone["files"][-2:] == gone["archives"]


def test_newest_verified_is_protected_when_the_newest_have_bad_sidecars(tmp_path):
    directory = str(tmp_path)
    write_backup(directory, "cap-backup-20251110-080000.tar.gz.enc", sidecar="good")
    write_backup(directory, "cap-backup-20251110-090000.tar.gz.enc", sidecar="good")
    write_backup(directory, "cap-backup-20251110-100000.tar.gz.enc", sidecar="bad")
    write_backup(directory, "cap-backup-20251110-110000.tar.gz.enc", sidecar=None)
    write_backup(directory, "cap-backup-20251110-120000.tar.gz.enc", sidecar="bad")
    result = plan(directory, keep_hourly=2, keep_daily=0, keep_last=1)
    assert result["newest_verified"] == "cap-backup-20251110-090000.tar.gz.enc"
    assert result["protected"] == "cap-backup-20251110-090000.tar.gz.enc"
    kept = {r["backup"]: r["reasons"] for r in result["kept"]}
    assert kept == {
        "cap-backup-20251110-120000": ["keep_last", "hourly"],
        "cap-backup-20251110-110000": ["hourly"],
        "cap-backup-20251110-090000": ["newest_verified"],
    }
    assert [r["backup"] for r in result["deleted"]] == [
        "cap-backup-20251110-100000", "cap-backup-20251110-080000"]
    assert [u["archive"] for u in result["unverified"]] == [
        "cap-backup-20251110-120000.tar.gz.enc", "cap-backup-20251110-110000.tar.gz.enc",
        "cap-backup-20251110-100000.tar.gz.enc"]
    assert "the sidecar says" in result["unverified"][0]["detail"]
    assert "no sidecar" in result["unverified"][1]["detail"]
    assert len(result["warnings"]) == 3


def test_newest_verified_needs_no_protection_when_the_policy_keeps_it(tmp_path):
    directory = str(tmp_path)
    write_backup(directory, "cap-backup-20251110-110000.tar.gz.enc", sidecar="good")
    write_backup(directory, "cap-backup-20251110-120000.tar.gz.enc", sidecar="good")
    result = plan(directory, keep_hourly=1, keep_daily=0)
    assert result["newest_verified"] == "cap-backup-20251110-120000.tar.gz.enc"
    assert result["protected"] is None
    assert result["kept"][0]["reasons"] == ["keep_last", "hourly", "newest_verified"]


def test_protection_holds_in_the_forty_day_directory(tmp_path):
    directory = str(tmp_path)
    stems = build_forty_days(directory, seed=3)
    newest_first = sorted(stems, key=lambda s: (stems[s], s), reverse=True)
    # Break the sidecars of the newest 30 backups; the 31st gets a good one.
    for stem in newest_first[:30]:
        for name in os.listdir(directory):
            if name.startswith(stem + ".tar.gz") and not name.endswith(".sha3"):
                with open(os.path.join(directory, name + ".sha3"), "w") as handle:
                    handle.write("%s  %s\n" % ("0" * 64, name))
    target = newest_first[30]
    for name in os.listdir(directory):
        if name.startswith(target + ".tar.gz") and not name.endswith(".sha3"):
            data = open(os.path.join(directory, name), "rb").read()
            with open(os.path.join(directory, name + ".sha3"), "w") as handle:
                handle.write("0x%s  %s\n" % (hashlib.sha3_256(data).hexdigest(), name))
    result = plan(directory, keep_hourly=12, keep_daily=0, keep_last=1)
    assert result["newest_verified"].startswith(target + ".tar.gz")
    assert result["protected"] == result["newest_verified"]
    expected = reference_keep(stems, 12, 0, 0, 1) | {target}
    assert {r["backup"] for r in result["kept"]} == expected
    apply(directory, result)
    assert os.path.exists(os.path.join(directory, result["newest_verified"]))
    assert os.path.exists(os.path.join(directory, result["newest_verified"] + ".sha3"))


def test_no_verified_backup_warns_and_applies_the_policy(tmp_path):
    directory = str(tmp_path)
    for hour in (9, 10, 11):
        write_backup(directory, "cap-backup-20251110-%02d0000.tar.gz" % hour, sidecar="bad")
    result = plan(directory, keep_hourly=1, keep_daily=0)
    assert result["newest_verified"] is None and result["protected"] is None
    assert any("no backup" in w for w in result["warnings"])
    assert len(result["deleted"]) == 2
    for hour in range(12, 20):
        write_backup(directory, "cap-backup-20251110-%02d0000.tar.gz" % hour, sidecar=None)
    result = plan(directory, keep_hourly=1, keep_daily=0)
    assert len(result["unverified"]) == 11
    assert len(result["warnings"]) == 7
    assert "no backup" in result["warnings"][0]
    assert "6 more archives do not verify" in result["warnings"][-1]


def test_non_matching_files_symlinks_and_bad_timestamps_are_left_alone(tmp_path):
    directory = str(tmp_path)
    write_backup(directory, "cap-backup-20251110-120000.tar.gz")
    for name in NOT_BACKUPS[2:]:
        (tmp_path / name).write_text("x")
    (tmp_path / "cap-backup-20251399-000000.tar.gz").write_text("bad month")
    os.symlink("cap-backup-20251110-120000.tar.gz",
               str(tmp_path / "cap-backup-20250101-000000.tar.gz"))
    os.mkdir(str(tmp_path / "cap-backup-20250102-000000.tar.gz"))
    before = sorted(os.listdir(directory))
    result = plan(directory, keep_hourly=0, keep_daily=0, keep_last=0, verify_newest=False)
    assert [r["backup"] for r in result["deleted"]] == ["cap-backup-20251110-120000"]
    assert {s["name"] for s in result["skipped"]} == {
        "cap-backup-20251399-000000.tar.gz", "cap-backup-20250101-000000.tar.gz",
        "cap-backup-20250102-000000.tar.gz"}
    apply(directory, result)
    gone = set(before) - set(os.listdir(directory))
    assert gone == {"cap-backup-20251110-120000.tar.gz", "cap-backup-20251110-120000.tar.gz.sha3",
                    "cap-backup-20251110-120000.manifest.json",
                    "cap-backup-20251110-120000.manifest.json.sig"}


def test_custom_pattern(tmp_path):
    directory = str(tmp_path)
    for day in (1, 2, 3):
        (tmp_path / ("registry-202511%02d-000000.sqlite" % day)).write_text("x")
    result = plan(directory, pattern=r"^registry-(?P<ts>\d{8}-\d{6})\.sqlite$", keep_hourly=0,
                  keep_daily=1, keep_last=0, verify_newest=False)
    assert [r["backup"] for r in result["deleted"]] == ["registry-20251102-000000",
                                                        "registry-20251101-000000"]


@pytest.mark.parametrize("pattern,fragment", [
    (r"^cap-(\d{8}-\d{6})$", "no named group 'ts'"),
    (r"^cap-(?P<ts>[", "not a valid regular expression"),
])
def test_bad_patterns_fail(tmp_path, pattern, fragment):
    with pytest.raises(RetentionError) as info:
        plan(str(tmp_path), pattern=pattern)
    assert fragment in str(info.value)


def test_missing_directory_and_negative_counts_fail(tmp_path):
    with pytest.raises(RetentionError) as info:
        plan(str(tmp_path / "missing"))
    assert "does not exist" in str(info.value) and "missing" in str(info.value)
    with pytest.raises(RetentionError):
        plan(str(tmp_path), keep_daily=-1)


def test_default_pattern():
    regex = re.compile(DEFAULT_PATTERN)
    for name in ("cap-backup-20251110-120000.tar.gz", "cap-backup-20251110-120000.tar.gz.enc",
                 "manual-backup-20251110-120000.tar.gz"):
        assert regex.fullmatch(name).group("ts") == "20251110-120000"
    for name in ("cap-backup-20251110-120000.tar.gz.sha3",
                 "cap-backup-20251110-120000.manifest.json",
                 "xcap-backup-20251110-120000.tar.gz", "cap-backup-20251110-120000.tar"):
        assert regex.fullmatch(name) is None


def test_ages_and_future_warning(tmp_path):
    directory = str(tmp_path)
    write_backup(directory, "cap-backup-20251110-120000.tar.gz")
    result = plan(directory, now=datetime.datetime(2025, 11, 10, 18, 0, 0))
    assert result["kept"][0]["age_hours"] == 6.0
    assert result["now"] == "2025-11-10T18:00:00Z"
    assert not [w for w in result["warnings"] if "after now" in w]
    result = plan(directory, now=datetime.datetime(2025, 11, 10, 11, 0, 0))
    assert [w for w in result["warnings"] if "after now" in w]


def test_sidecar_format(tmp_path):
    digest = "0x" + "ab" * 32
    assert sidecar_line(digest, "a.tar.gz") == "%s  a.tar.gz\n" % ("ab" * 32)
    path = tmp_path / "a.tar.gz.sha3"
    path.write_text("0x%s  a.tar.gz\n" % ("AB" * 32))
    assert read_sidecar(str(path), "a.tar.gz") == digest
    path.write_text("%s *a.tar.gz\n" % ("ab" * 32))
    assert read_sidecar(str(path), "a.tar.gz") == digest
    path.write_text("%s  other.tar.gz\n%s  /x/a.tar.gz\n" % ("cd" * 32, "ab" * 32))
    assert read_sidecar(str(path), "a.tar.gz") == digest
    path.write_text("%s  other.tar.gz\n" % ("cd" * 32))
    with pytest.raises(SidecarError) as info:
        read_sidecar(str(path), "a.tar.gz")
    assert "describes other.tar.gz, not a.tar.gz" in str(info.value)
    for bad in ("", "abc  a.tar.gz\n", "%s a.tar.gz\n" % ("ab" * 32)):
        path.write_text(bad)
        with pytest.raises(SidecarError):
            read_sidecar(str(path), "a.tar.gz")
