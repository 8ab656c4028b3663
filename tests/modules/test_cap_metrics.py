"""cap_metrics run through Ansible, with a real Pushgateway on loopback."""

import os
import signal
import socket
import stat
import subprocess
import time
import urllib.request

import pytest

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
PROMTOOL = "/usr/bin/promtool"

ATTEMPT_HELP = "Backup runs by outcome."


def attempt(status):
    return dict(name="cap_backup_attempts_total", help=ATTEMPT_HELP, type="counter",
                labels={"status": status}, value=1, action="inc")


def size(value):
    return dict(name="cap_backup_size_bytes", help="Size of the newest backup archive in bytes.",
                type="gauge", value=value)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8")


@pytest.fixture
def pushgateway(tmp_path):
    """A Pushgateway on a free loopback port, without persistence; stopped by its PID."""
    port = free_port()
    log = open(tmp_path / "pushgateway.log", "wb")
    # Debian defaults --persistence.file to /var/lib/prometheus/pushgateway.data; keep it in memory.
    proc = subprocess.Popen([PUSHGATEWAY, "--web.listen-address=127.0.0.1:%d" % port,
                             "--persistence.file="],
                            stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.time() + 20
        while True:
            try:
                if http_get(url + "/-/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError("pushgateway did not start:\n%s"
                                     % (tmp_path / "pushgateway.log").read_text())
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def sample_lines(text, name):
    return sorted(line for line in text.splitlines() if line.startswith(name))


def test_counters_accumulate_and_gauges_are_replaced(module, tmp_path):
    path = str(tmp_path / "cap_backup.prom")
    for _ in range(3):
        res = module("cap_metrics", dict(path=path, metrics=[attempt("failure"), size(100)]))
        assert not res.failed, res.msg
        assert res.changed
    res = module("cap_metrics", dict(path=path, metrics=[attempt("success"), size(4096)]))
    assert not res.failed, res.msg
    text = open(path).read()
    assert sample_lines(text, "cap_backup_attempts_total") == [
        'cap_backup_attempts_total{status="failure"} 3',
        'cap_backup_attempts_total{status="success"} 1',
    ]
    assert sample_lines(text, "cap_backup_size_bytes") == ["cap_backup_size_bytes 4096"]
    assert res["samples"] == ['cap_backup_attempts_total{status="success"} 1',
                              "cap_backup_size_bytes 4096"]
    assert res["updates"][0]["previous"] is None and res["updates"][1]["previous"] == 100
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_other_metrics_in_the_file_are_kept(module, tmp_path):
    path = tmp_path / "cap_backup.prom"
    path.write_text("# HELP cap_restore_duration_seconds Duration of the last restore.\n"
                    "# TYPE cap_restore_duration_seconds gauge\n"
                    "cap_restore_duration_seconds 321.5\n")
    res = module("cap_metrics", dict(path=str(path), metrics=[size(7)]))
    assert not res.failed, res.msg
    text = path.read_text()
    assert "cap_restore_duration_seconds 321.5\n" in text
    assert "cap_backup_size_bytes 7\n" in text
    assert text.index("cap_backup_size_bytes") < text.index("cap_restore_duration_seconds")


def test_same_values_do_not_change_the_file(module, tmp_path):
    path = str(tmp_path / "cap_backup.prom")
    first = module("cap_metrics", dict(path=path, metrics=[size(10)]))
    mtime = os.stat(path).st_mtime_ns
    again = module("cap_metrics", dict(path=path, metrics=[size(10)]))
    assert first.changed and not again.changed
    assert os.stat(path).st_mtime_ns == mtime


def test_check_mode_writes_nothing(module, tmp_path):
    path = tmp_path / "cap_backup.prom"
    res = module("cap_metrics", dict(path=str(path), metrics=[attempt("failure")]), check=True)
    assert not res.failed, res.msg
    assert res.changed
    assert res["samples"] == ['cap_backup_attempts_total{status="failure"} 1']
    assert not path.exists()
    module("cap_metrics", dict(path=str(path), metrics=[attempt("failure")]))
    before = path.read_text()
    res = module("cap_metrics", dict(path=str(path), metrics=[attempt("failure")]), check=True)
    assert res["samples"] == ['cap_backup_attempts_total{status="failure"} 2']
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["cap_backup.prom"]


def test_corrupt_file_is_replaced_with_a_warning(module, tmp_path):
    path = tmp_path / "cap_backup.prom"
    path.write_text("cap_backup_size_bytes{broken 12\n")
    res = module("cap_metrics", dict(path=str(path), metrics=[attempt("failure")]))
    assert not res.failed, res.msg
    assert any("not valid exposition format" in w for w in res.get("warnings", []))
    assert path.read_text() == ("# HELP cap_backup_attempts_total %s\n"
                                "# TYPE cap_backup_attempts_total counter\n"
                                'cap_backup_attempts_total{status="failure"} 1\n' % ATTEMPT_HELP)


def test_invalid_metric_fails_and_writes_nothing(module, tmp_path):
    path = tmp_path / "cap_backup.prom"
    res = module("cap_metrics", dict(path=str(path), metrics=[
        dict(name="cap-backup", help="x", type="gauge", value=1)]))
    assert res.failed
    assert "invalid metric name 'cap-backup'" in res.msg and str(path) in res.msg
    assert not path.exists()


def test_credentials_need_a_pushgateway_url(module, tmp_path):
    res = module("cap_metrics", dict(path=str(tmp_path / "m.prom"), url_username="backup",
                                     url_password="pw-Secret-4711", metrics=[size(1)]))
    assert res.failed and "pushgateway_url" in res.msg
    assert "pw-Secret-4711" not in res.proc.stdout + res.proc.stderr
    assert not (tmp_path / "m.prom").exists()


def test_missing_directory_fails_clearly(module, tmp_path):
    path = str(tmp_path / "nope" / "cap_backup.prom")
    res = module("cap_metrics", dict(path=path, metrics=[size(1)]))
    assert res.failed and "textfile directory" in res.msg and "nope" in res.msg


def test_push_reaches_the_pushgateway(module, tmp_path, pushgateway):
    path = str(tmp_path / "cap_backup.prom")
    module("cap_metrics", dict(path=path, metrics=[attempt("failure")]))
    res = module("cap_metrics", dict(
        path=path, pushgateway_url=pushgateway, job="cap_backup",
        grouping={"instance": "prod/eu"},
        metrics=[attempt("failure"), size(12582912)]))
    assert not res.failed, res.msg
    assert res.changed and res["push_status"] in (200, 202)
    assert res["push_url"].startswith(pushgateway + "/metrics/job/cap_backup/instance@base64/")
    _status, text = http_get(pushgateway + "/metrics")
    failure = [line for line in text.splitlines()
               if line.startswith("cap_backup_attempts_total{")]
    assert len(failure) == 1, text
    assert 'instance="prod/eu"' in failure[0] and 'job="cap_backup"' in failure[0]
    assert 'status="failure"' in failure[0] and failure[0].endswith(" 2")
    assert any(line.startswith("cap_backup_size_bytes{") and line.endswith(" 1.2582912e+07")
               for line in text.splitlines()), text

    # A second push replaces the group: the gauge's new value is what the gateway serves.
    res = module("cap_metrics", dict(path=path, pushgateway_url=pushgateway,
                                     grouping={"instance": "prod/eu"}, metrics=[size(5)]))
    assert not res.failed, res.msg
    _status, text = http_get(pushgateway + "/metrics")
    sizes = [line for line in text.splitlines() if line.startswith("cap_backup_size_bytes{")]
    assert len(sizes) == 1 and sizes[0].endswith(" 5"), sizes


def test_check_mode_does_not_push(module, tmp_path, pushgateway):
    path = tmp_path / "cap_backup.prom"
    res = module("cap_metrics", dict(path=str(path), pushgateway_url=pushgateway,
                                     metrics=[size(1)]), check=True)
    assert not res.failed, res.msg
    assert res.changed and res["push_status"] is None
    _status, text = http_get(pushgateway + "/metrics")
    assert "cap_backup_size_bytes" not in text
    assert not path.exists()


def test_unreachable_pushgateway_fails_after_writing_the_file(module, tmp_path):
    path = tmp_path / "cap_backup.prom"
    url = "http://127.0.0.1:%d" % free_port()
    res = module("cap_metrics", dict(path=str(path), pushgateway_url=url, timeout=5,
                                     metrics=[attempt("failure")]))
    assert res.failed
    assert url + "/metrics/job/cap_backup" in res.msg
    assert "no HTTP status" in res.msg
    assert "the textfile %s was written" % path in res.msg
    assert 'cap_backup_attempts_total{status="failure"} 1' in path.read_text()


def test_pushgateway_http_error_reports_the_status(module, tmp_path, pushgateway):
    path = tmp_path / "cap_backup.prom"
    # The gateway refuses a push whose HELP differs from what another group already has.
    module("cap_metrics", dict(path=str(path), pushgateway_url=pushgateway,
                               grouping={"instance": "a"}, metrics=[size(1)]))
    other = tmp_path / "other.prom"
    res = module("cap_metrics", dict(path=str(other), pushgateway_url=pushgateway,
                                     grouping={"instance": "b"},
                                     metrics=[dict(size(2), type="counter",
                                                   name="cap_backup_size_bytes")]))
    assert res.failed
    assert "HTTP 400" in res.msg and pushgateway + "/metrics/job/cap_backup/instance/b" in res.msg
    assert res["push_status"] == 400
    assert other.exists()
