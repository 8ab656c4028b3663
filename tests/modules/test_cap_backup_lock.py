"""cap_backup_lock run through Ansible."""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.cap_lock import OWNER_FILE, acquire, read_holder, release


def test_acquire_twice_and_release(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    res = module("cap_backup_lock", dict(path=path, owner="backup-20251110-120000",
                                         info={"started_by": "pytest"}))
    assert not res.failed, res.msg
    assert res.changed
    assert res["lock_path"] == path and res["lock_state"] == "acquired"
    assert res["holder"]["owner"] == "backup-20251110-120000"
    record = json.loads(open(os.path.join(path, OWNER_FILE)).read())
    assert record["info"] == {"started_by": "pytest"}

    again = module("cap_backup_lock", dict(path=path, owner="backup-20251110-120000"))
    assert not again.failed, again.msg
    assert not again.changed

    gone = module("cap_backup_lock", dict(path=path, owner="backup-20251110-120000",
                                          state="released"))
    assert not gone.failed, gone.msg
    assert gone.changed
    assert not os.path.exists(path)

    absent = module("cap_backup_lock", dict(path=path, owner="backup-20251110-120000",
                                            state="released"))
    assert not absent.failed and not absent.changed


def test_held_lock_fails_with_owner_host_and_time(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    acquire(path, "backup-20251110-120000")
    res = module("cap_backup_lock", dict(path=path, owner="backup-20251110-130000"))
    assert res.failed
    assert res.msg.startswith("backup lock %s is held by backup-20251110-120000 on host " % path)
    assert "(waited 0 s); another backup is running" in res.msg
    assert res["holder"]["owner"] == "backup-20251110-120000"
    assert read_holder(path)["owner"] == "backup-20251110-120000"


def test_concurrent_module_runs_exactly_one_wins(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    owners = ["run-%d" % i for i in range(4)]
    with ThreadPoolExecutor(max_workers=len(owners)) as pool:
        results = list(pool.map(lambda o: (o, module("cap_backup_lock", dict(path=path, owner=o))),
                                owners))
    winners = [owner for owner, res in results if not res.failed]
    assert len(winners) == 1, [(o, r.msg) for o, r in results]
    assert read_holder(path)["owner"] == winners[0]
    for owner, res in results:
        if owner != winners[0]:
            assert "is held by %s" % winners[0] in res.msg


def test_waits_for_the_holder_to_release(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    acquire(path, "first")
    timer = threading.Timer(3, release, args=(path, "first"))
    timer.start()
    try:
        res = module("cap_backup_lock", dict(path=path, owner="second", timeout=60))
    finally:
        timer.cancel()
    assert not res.failed, res.msg
    assert res.changed and res["waited"] > 0.5
    assert read_holder(path)["owner"] == "second"


def test_wait_times_out(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    acquire(path, "first")
    started = time.time()
    res = module("cap_backup_lock", dict(path=path, owner="second", timeout=2))
    assert res.failed
    assert "(waited 2 s)" in res.msg
    assert time.time() - started >= 2
    assert read_holder(path)["owner"] == "first"


def test_stale_lock_is_broken_with_a_warning(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    acquire(path, "backup-20251110-040000")
    record_path = os.path.join(path, OWNER_FILE)
    record = json.loads(open(record_path).read())
    record["created_epoch"] -= 7 * 3600
    open(record_path, "w").write(json.dumps(record))
    res = module("cap_backup_lock", dict(path=path, owner="backup-20251110-120000",
                                         stale_after=3600))
    assert not res.failed, res.msg
    assert res.changed
    assert res["broken"]["owner"] == "backup-20251110-040000"
    warnings = " ".join(res.get("warnings", []))
    assert "was stale" in warnings and "backup-20251110-040000" in warnings
    assert read_holder(path)["owner"] == "backup-20251110-120000"


def test_foreign_release_is_refused(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    acquire(path, "run-a")
    res = module("cap_backup_lock", dict(path=path, owner="run-b", state="released"))
    assert res.failed
    assert "held by run-a" in res.msg and "not by run-b" in res.msg
    assert not res.changed
    assert read_holder(path)["owner"] == "run-a"


def test_check_mode_changes_nothing(module, tmp_path):
    path = str(tmp_path / ".cap-backup.lock")
    res = module("cap_backup_lock", dict(path=path, owner="run-a"), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert not os.path.exists(path)

    acquire(path, "run-a")
    res = module("cap_backup_lock", dict(path=path, owner="run-a", state="released"), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert read_holder(path)["owner"] == "run-a"

    res = module("cap_backup_lock", dict(path=path, owner="run-b"), check=True)
    assert res.failed and "held by run-a" in res.msg
