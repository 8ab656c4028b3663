"""The backup lock: atomic acquire across processes, waiting, stale locks, owned release."""

import json
import multiprocessing
import os
import re
import socket
import threading
import time

import pytest

from ansible.module_utils import cap_lock
from ansible.module_utils.cap_lock import (
    OWNER_FILE,
    LockError,
    LockHeld,
    LockNotOwned,
    acquire,
    read_holder,
    release,
)

TIME_RE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


def lock_path(tmp_path):
    return str(tmp_path / ".cap-backup.lock")


def write_holder(path, owner, age, host="old-host", token="t-old"):
    os.mkdir(path)
    created = time.time() - age
    with open(os.path.join(path, OWNER_FILE), "w") as handle:
        json.dump({"owner": owner, "host": host, "pid": 1, "token": token,
                   "created_epoch": created,
                   "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))},
                  handle)


def leftovers(tmp_path):
    """Anything beside the lock itself: moved-aside directories, temporary files."""
    return sorted(n for n in os.listdir(tmp_path) if n != ".cap-backup.lock")


def test_acquire_records_the_owner(tmp_path):
    path = lock_path(tmp_path)
    res = acquire(path, "backup-20251110-120000", info={"started_by": "cron"})
    assert res["changed"] and res["broken"] is None
    record = json.loads(open(os.path.join(path, OWNER_FILE)).read())
    assert record["owner"] == "backup-20251110-120000"
    assert record["host"] == socket.gethostname()
    assert record["pid"] == os.getpid()
    assert re.match(TIME_RE + "$", record["created_at"])
    assert abs(record["created_epoch"] - time.time()) < 60
    assert record["info"] == {"started_by": "cron"}
    assert res["holder"]["owner"] == "backup-20251110-120000"
    assert "token" not in res["holder"]
    assert sorted(os.listdir(path)) == [OWNER_FILE]


def test_reacquire_by_the_same_owner_changes_nothing(tmp_path):
    path = lock_path(tmp_path)
    first = acquire(path, "run-a")
    before = open(os.path.join(path, OWNER_FILE)).read()
    again = acquire(path, "run-a")
    assert not again["changed"]
    assert again["holder"]["created_at"] == first["holder"]["created_at"]
    assert open(os.path.join(path, OWNER_FILE)).read() == before


def test_held_lock_fails_fast_with_a_clear_message(tmp_path):
    path = lock_path(tmp_path)
    acquire(path, "backup-20251110-120000")
    with pytest.raises(LockHeld) as info:
        acquire(path, "backup-20251110-130000", timeout=0)
    msg = str(info.value)
    assert re.match(r"^backup lock %s is held by backup-20251110-120000 on host %s since %s "
                    r"\(waited 0 s\); another backup is running$"
                    % (re.escape(path), re.escape(socket.gethostname()), TIME_RE), msg), msg
    assert info.value.holder["owner"] == "backup-20251110-120000"
    assert read_holder(path)["owner"] == "backup-20251110-120000"


def _race(path, owner, start, results):
    start.wait()
    try:
        acquire(path, owner, timeout=0)
        results.put((owner, "won"))
    except LockHeld:
        results.put((owner, "held"))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((owner, "error: %r" % exc))


def run_race(path, contenders=8):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, "run-%d" % i, start, results))
             for i in range(contenders)]
    for proc in procs:
        proc.start()
    time.sleep(0.3)
    start.set()
    outcome = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return outcome


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_acquirers_exactly_one_wins(tmp_path, round_):
    path = lock_path(tmp_path)
    outcome = run_race(path)
    errors = [o for o in outcome if o[1].startswith("error")]
    assert not errors, errors
    winners = [owner for owner, result in outcome if result == "won"]
    assert len(winners) == 1, outcome
    assert read_holder(path)["owner"] == winners[0]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_breakers_of_a_stale_lock_exactly_one_wins(tmp_path, round_):
    path = lock_path(tmp_path)
    write_holder(path, "crashed-run", age=7 * 3600)
    outcome = run_race(path, contenders=16)
    errors = [o for o in outcome if o[1].startswith("error")]
    assert not errors, errors
    winners = [owner for owner, result in outcome if result == "won"]
    assert len(winners) == 1, outcome
    assert read_holder(path)["owner"] == winners[0]
    assert leftovers(tmp_path) == []


def test_a_guard_left_by_a_dead_breaker_is_cleared(tmp_path):
    path = lock_path(tmp_path)
    write_holder(path, "crashed-run", age=7 * 3600)
    guard = path + cap_lock.GUARD_SUFFIX
    os.mkdir(guard)
    old = time.time() - cap_lock.GUARD_STALE_AFTER - 5
    os.utime(guard, (old, old))
    res = acquire(path, "run-new", timeout=0)
    assert res["changed"] and res["broken"]["owner"] == "crashed-run"
    assert read_holder(path)["owner"] == "run-new"
    assert leftovers(tmp_path) == []


def test_a_live_guard_makes_a_breaker_wait_then_fail_without_touching_the_lock(tmp_path, monkeypatch):
    path = lock_path(tmp_path)
    write_holder(path, "crashed-run", age=7 * 3600, token="t-stale")
    guard = path + cap_lock.GUARD_SUFFIX
    os.mkdir(guard)
    monkeypatch.setattr(cap_lock, "GUARD_WAIT", 0.3)
    with pytest.raises(LockError) as info:
        acquire(path, "run-new", timeout=0)
    assert str(info.value) == ("lock guard %s stayed taken for 0 s: another process is removing "
                               "the lock" % guard)
    assert read_holder(path)["token"] == "t-stale"
    assert os.path.isdir(guard)


def test_release_leaves_no_guard(tmp_path):
    path = lock_path(tmp_path)
    acquire(path, "run-a")
    assert release(path, "run-a")["changed"]
    assert os.listdir(tmp_path) == []


def test_late_breaker_does_not_remove_a_fresh_lock(tmp_path, monkeypatch):
    """B saw the stale lock, then A broke it and took the lock before B acted: B must not win."""
    path = lock_path(tmp_path)
    write_holder(path, "crashed-run", age=7 * 3600, token="t-stale")
    stale_view = read_holder(path)
    acquire(path, "run-a")
    fresh = read_holder(path)
    views = iter([stale_view])
    original = cap_lock.read_holder
    monkeypatch.setattr(cap_lock, "read_holder", lambda p: next(views, None) or original(p))
    with pytest.raises(LockHeld) as info:
        acquire(path, "run-b", timeout=0)
    assert "held by run-a" in str(info.value)
    assert original(path)["token"] == fresh["token"]
    assert leftovers(tmp_path) == []


def test_wait_succeeds_when_the_holder_releases(tmp_path):
    path = lock_path(tmp_path)
    acquire(path, "first")
    timer = threading.Timer(1.5, release, args=(path, "first"))
    timer.start()
    try:
        res = acquire(path, "second", timeout=20, poll_interval=0.2)
    finally:
        timer.cancel()
    assert res["changed"]
    assert res["holder"]["owner"] == "second"
    # It waited for the holder, and did not run into its own timeout.
    assert res["waited"] >= 1.3
    assert read_holder(path)["owner"] == "second"


def test_wait_fails_after_the_timeout(tmp_path):
    path = lock_path(tmp_path)
    acquire(path, "first")
    started = time.time()
    with pytest.raises(LockHeld) as info:
        acquire(path, "second", timeout=2, poll_interval=0.2)
    # The timeout was honoured: it gave up only after waiting for it.
    assert time.time() - started >= 2
    assert "(waited 2 s)" in str(info.value)
    assert read_holder(path)["owner"] == "first"


def test_stale_lock_is_broken_and_reported(tmp_path):
    path = lock_path(tmp_path)
    write_holder(path, "backup-20251110-040000", age=7 * 3600, host="pod-a")
    res = acquire(path, "backup-20251110-120000", stale_after=6 * 3600)
    assert res["changed"]
    assert res["broken"]["owner"] == "backup-20251110-040000"
    assert res["broken"]["host"] == "pod-a"
    assert read_holder(path)["owner"] == "backup-20251110-120000"
    assert leftovers(tmp_path) == []


def test_lock_younger_than_stale_after_is_not_broken(tmp_path):
    path = lock_path(tmp_path)
    write_holder(path, "running", age=5 * 3600)
    with pytest.raises(LockHeld):
        acquire(path, "newcomer", stale_after=6 * 3600)
    assert read_holder(path)["owner"] == "running"


def test_lock_without_owner_record_ages_by_directory_mtime(tmp_path):
    path = lock_path(tmp_path)
    os.mkdir(path)
    with pytest.raises(LockHeld) as info:
        acquire(path, "newcomer")
    assert "unknown owner" in str(info.value)
    old = time.time() - 7 * 3600
    os.utime(path, (old, old))
    res = acquire(path, "newcomer")
    assert res["broken"]["owner"] is None
    assert read_holder(path)["owner"] == "newcomer"


def test_a_lock_taken_an_instant_ago_is_reported_with_its_owner(tmp_path):
    """Between the winner's mkdir and its owner.json, a loser waits for the record."""
    path = lock_path(tmp_path)
    os.mkdir(path)
    record = cap_lock.new_record("backup-20251110-120000")
    timer = threading.Timer(0.3, lambda: open(os.path.join(path, OWNER_FILE), "w").write(
        json.dumps(record)))
    timer.start()
    try:
        with pytest.raises(LockHeld) as info:
            acquire(path, "backup-20251110-130000", timeout=0)
    finally:
        timer.join()
    assert "is held by backup-20251110-120000 on host" in str(info.value)


def test_release_removes_only_our_lock(tmp_path):
    path = lock_path(tmp_path)
    acquire(path, "run-a")
    with pytest.raises(LockNotOwned) as info:
        release(path, "run-b")
    assert "held by run-a on host" in str(info.value)
    assert "not by run-b" in str(info.value)
    assert read_holder(path)["owner"] == "run-a"
    res = release(path, "run-a")
    assert res["changed"] and res["holder"]["owner"] == "run-a"
    assert not os.path.exists(path)
    assert os.listdir(tmp_path) == []


def test_release_of_an_absent_lock_is_not_a_change(tmp_path):
    res = release(lock_path(tmp_path), "run-a")
    assert res == {"changed": False, "holder": None}


def test_check_mode_changes_nothing(tmp_path):
    path = lock_path(tmp_path)
    res = acquire(path, "run-a", check_only=True)
    assert res["changed"] and res["holder"]["owner"] == "run-a"
    assert not os.path.exists(path)
    acquire(path, "run-a")
    res = release(path, "run-a", check_only=True)
    assert res["changed"]
    assert read_holder(path)["owner"] == "run-a"
    write_holder(str(tmp_path / "stale.lock"), "old", age=10 * 3600)
    res = acquire(str(tmp_path / "stale.lock"), "new", check_only=True)
    assert res["changed"] and res["broken"]["owner"] == "old"
    assert read_holder(str(tmp_path / "stale.lock"))["owner"] == "old"


def test_bad_paths_fail_clearly(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LockError) as info:
        acquire(str(tmp_path / "file"), "run-a")
    assert "not a directory" in str(info.value)
    missing = str(tmp_path / "no" / "such" / "lock")
    with pytest.raises(LockError) as info:
        acquire(missing, "run-a")
    assert missing in str(info.value)
