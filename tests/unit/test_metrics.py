"""Prometheus textfile format: parse, update, render, escape, and the Pushgateway URL."""

import base64
import io
import random
import subprocess
import urllib.error

import pytest

from ansible.module_utils.cap_metrics import (
    MetricsError,
    PushError,
    apply_updates,
    format_value,
    normalize_value,
    parse_text,
    push,
    push_url,
    redact_url,
    render,
)

PROMTOOL = "/usr/bin/promtool"


def promtool_check(text):
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True)
    return proc.returncode, proc.stdout + proc.stderr


def attempt(status, value=1):
    return dict(name="cap_backup_attempts_total", help="Backup runs by outcome.",
                type="counter", labels={"status": status}, value=value, action="inc")


def gauge(name, value, labels=None, help_text="A gauge."):
    return dict(name=name, help=help_text, type="gauge", labels=labels or {}, value=value)


def run(text, updates):
    families, applied = apply_updates(parse_text(text), updates)
    return render(families), applied


def sample_value(text, line_prefix):
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return line[len(line_prefix) + 1:]
    raise AssertionError("no sample %s in:\n%s" % (line_prefix, text))


def test_counter_accumulates_from_zero():
    text = ""
    for expected in (1, 2, 3):
        text, applied = run(text, [attempt("failure")])
        assert sample_value(text, 'cap_backup_attempts_total{status="failure"}') == str(expected)
        assert applied[0]["previous"] == (expected - 1 if expected > 1 else None)
    text, _ = run(text, [attempt("success", 5)])
    assert sample_value(text, 'cap_backup_attempts_total{status="failure"}') == "3"
    assert sample_value(text, 'cap_backup_attempts_total{status="success"}') == "5"


def test_gauge_is_replaced_and_other_metrics_are_kept():
    text, _ = run("", [attempt("success"), gauge("cap_backup_size_bytes", 100),
                       gauge("cap_backup_duration_seconds", 12.5)])
    text, _ = run(text, [gauge("cap_backup_size_bytes", 250)])
    assert sample_value(text, "cap_backup_size_bytes") == "250"
    assert sample_value(text, "cap_backup_duration_seconds") == "12.5"
    assert sample_value(text, 'cap_backup_attempts_total{status="success"}') == "1"
    assert [l for l in text.splitlines() if l.startswith("cap_backup_size_bytes")] == [
        "cap_backup_size_bytes 250"]


def test_exact_layout_and_order():
    updates = [gauge("zz_last", 1), attempt("success"), attempt("failure", 2),
               gauge("cap_backup_size_bytes", 7, help_text="Size.")]
    text, _ = run("", updates)
    assert text == (
        "# HELP cap_backup_attempts_total Backup runs by outcome.\n"
        "# TYPE cap_backup_attempts_total counter\n"
        'cap_backup_attempts_total{status="failure"} 2\n'
        'cap_backup_attempts_total{status="success"} 1\n'
        "# HELP cap_backup_size_bytes Size.\n"
        "# TYPE cap_backup_size_bytes gauge\n"
        "cap_backup_size_bytes 7\n"
        "# HELP zz_last A gauge.\n"
        "# TYPE zz_last gauge\n"
        "zz_last 1\n")


def test_output_does_not_depend_on_update_order():
    updates = [gauge("m_%d" % (i % 5), i, {"a": str(i % 3), "b": "x%d" % i}) for i in range(40)]
    shuffled = list(updates)
    random.Random(7).shuffle(shuffled)
    first, _ = run("", updates)
    second, _ = run("", shuffled)
    assert first == second
    lines = [line for line in first.splitlines() if not line.startswith("#")]
    assert lines[0].startswith('m_0{a="0",b="x0"} ')


def test_rendered_file_parses_back_identically():
    text, _ = run("", [attempt("success"), gauge("g", 0.25, {"path": 'a\\b"c\nd'}),
                       gauge("cap_backup_last_success_timestamp", "1762776000")])
    assert render(parse_text(text)) == text


def test_label_values_are_escaped():
    text, _ = run("", [gauge("cap_restore_target_info", 1,
                             {"path": 'C:\\backup "x"\nnext'})])
    assert 'cap_restore_target_info{path="C:\\\\backup \\"x\\"\\nnext"} 1' in text
    families = parse_text(text)
    (key,) = families["cap_restore_target_info"].samples
    assert dict(key) == {"path": 'C:\\backup "x"\nnext'}
    rc, out = promtool_check(text)
    assert rc == 0, out


def test_help_text_is_escaped():
    text, _ = run("", [gauge("g", 1, help_text="line one\nback\\slash")])
    assert "# HELP g line one\\nback\\\\slash\n" in text
    assert parse_text(text)["g"].help == "line one\nback\\slash"


def test_full_file_passes_promtool():
    updates = [attempt("success"), attempt("failure", 3),
               gauge("cap_backup_duration_seconds", 93.25,
                     help_text="Duration of the last backup."),
               gauge("cap_backup_size_bytes", 12582912, help_text="Size of the last archive."),
               gauge("cap_backup_last_success_timestamp", 1762776000.0,
                     help_text="Unix time of the last successful backup.")]
    text, _ = run("", updates)
    rc, out = promtool_check(text)
    assert rc == 0, out


def test_promtool_rejects_what_we_reject():
    # The checker used above does fail on broken text, so passing it means something.
    rc, _ = promtool_check('cap_backup_size_bytes{a="x} 1\n')
    assert rc != 0
    with pytest.raises(MetricsError):
        parse_text('cap_backup_size_bytes{a="x} 1\n')


@pytest.mark.parametrize("value,text", [
    (3, "3"), (3.0, "3"), ("42", "42"), ("1762776000", "1762776000"), (0.1, "0.1"),
    (12.5, "12.5"), ("2.5e-3", "0.0025"), (1e20, "1e+20"), (-0.0, "0"), (float("nan"), "NaN"),
    (float("inf"), "+Inf"), (float("-inf"), "-Inf"), ("+Inf", "+Inf"),
])
def test_value_formatting(value, text):
    assert format_value(normalize_value(value)) == text


@pytest.mark.parametrize("value", [True, None, "ten", "", [1], {"a": 1}])
def test_non_numbers_are_refused(value):
    with pytest.raises(MetricsError):
        normalize_value(value)


def test_float_increment_keeps_precision():
    text, _ = run("", [dict(gauge("g", 0.1), action="inc")])
    text, _ = run(text, [dict(gauge("g", 0.2), action="inc")])
    assert sample_value(text, "g") == repr(0.1 + 0.2)


@pytest.mark.parametrize("update,fragment", [
    (gauge("1bad", 1), "invalid metric name"),
    (gauge("bad-name", 1), "invalid metric name"),
    (gauge("ok", 1, {"bad-label": "x"}), "invalid label name"),
    (gauge("ok", 1, {"__name__": "x"}), "reserved"),
    (dict(attempt("failure"), value=-1), "only be increased"),
    (dict(attempt("failure"), action="set", value=-1), "negative"),
    (dict(gauge("new_metric", 1), help=None), "needs a help text"),
    (dict(gauge("ok", 1), type="histogram"), "type must be"),
    (dict(gauge("ok", 1), action="add"), "action must be"),
])
def test_invalid_updates_fail_with_the_reason(update, fragment):
    with pytest.raises(MetricsError) as info:
        apply_updates({}, [update])
    assert fragment in str(info.value)


def test_type_conflict_with_the_file_fails():
    text, _ = run("", [gauge("cap_backup_attempts_total", 1)])
    with pytest.raises(MetricsError) as info:
        run(text, [attempt("failure")])
    assert "has type gauge in the file" in str(info.value)


def test_help_is_kept_when_not_given():
    text, _ = run("", [gauge("g", 1, help_text="Original help.")])
    text, _ = run(text, [dict(gauge("g", 2), help=None)])
    assert "# HELP g Original help.\n" in text


@pytest.mark.parametrize("text", [
    "this is not a metric\n",
    'm{a="unterminated} 1\n',
    "m 1\nm 2\n",
    "# TYPE m summary\nm 1\n",
    "m{a=\"1\",a=\"2\"} 3\n",
    "m notanumber\n",
    "m 1\n# TYPE m gauge\n",
])
def test_corrupt_text_is_rejected(text):
    with pytest.raises(MetricsError):
        parse_text(text)


def test_parse_accepts_untyped_samples_and_drops_timestamps():
    families = parse_text('other_metric{x="1"} 5 1700000000000\n')
    assert families["other_metric"].type == "untyped"
    assert render(families) == '# TYPE other_metric untyped\nother_metric{x="1"} 5\n'


def test_push_url_encoding():
    base = "http://127.0.0.1:9091/"
    assert push_url(base, "cap_backup") == "http://127.0.0.1:9091/metrics/job/cap_backup"
    assert (push_url(base, "cap_backup", {"instance": "prod eu", "cluster": "c1"})
            == "http://127.0.0.1:9091/metrics/job/cap_backup/cluster/c1/instance/prod%20eu")
    url = push_url(base, "cap/backup", {"path": "/backup/x"})
    job_b64 = base64.urlsafe_b64encode(b"cap/backup").decode()
    path_b64 = base64.urlsafe_b64encode(b"/backup/x").decode()
    assert url == "http://127.0.0.1:9091/metrics/job@base64/%s/path@base64/%s" % (job_b64, path_b64)
    assert push_url(base, "j", {"empty": ""}).endswith("/empty@base64/=")
    with pytest.raises(MetricsError):
        push_url(base, "j", {"job": "other"})
    with pytest.raises(MetricsError):
        push_url(base, "j", {"bad-label": "x"})


def test_redact_url():
    assert redact_url("https://u:secret@pg:9091/metrics/job/j") == "https://pg:9091/metrics/job/j"
    assert redact_url("http://pg:9091/x") == "http://pg:9091/x"


class FakeResponse:
    def __init__(self, status):
        self.status = status

    def getcode(self):
        return self.status

    def read(self):
        return b""


def test_push_sends_put_with_content_type():
    calls = []

    def fake_open_url(url, **kwargs):
        calls.append((url, kwargs))
        return FakeResponse(200)

    assert push("http://pg/metrics/job/j", b"m 1\n", fake_open_url, timeout=5) == 200
    url, kwargs = calls[0]
    assert kwargs["method"] == "PUT"
    assert kwargs["data"] == b"m 1\n"
    assert kwargs["headers"]["Content-Type"] == "text/plain; version=0.0.4"


def test_push_passes_credentials_to_open_url():
    calls = []

    def fake_open_url(url, **kwargs):
        calls.append(kwargs)
        return FakeResponse(202)

    push("https://pg/metrics/job/j", b"", fake_open_url, validate_certs=False,
         url_username="backup", url_password="s3cret", force_basic_auth=True)
    assert calls[0]["url_username"] == "backup" and calls[0]["url_password"] == "s3cret"
    assert calls[0]["force_basic_auth"] is True and calls[0]["validate_certs"] is False


def test_push_http_error_names_url_and_status():
    def fake_open_url(url, **kwargs):
        raise urllib.error.HTTPError(url, 400, "Bad Request", {},
                                     io.BytesIO(b"pushed metrics are invalid"))

    with pytest.raises(PushError) as info:
        push("http://user:pw@pg:9091/metrics/job/j", b"m 1\n", fake_open_url)
    msg = str(info.value)
    assert "http://pg:9091/metrics/job/j" in msg and "pw" not in msg
    assert "HTTP 400" in msg and "pushed metrics are invalid" in msg
    assert info.value.status == 400


def test_push_connection_error_has_no_status():
    def fake_open_url(url, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    with pytest.raises(PushError) as info:
        push("http://127.0.0.1:1/metrics/job/j", b"", fake_open_url)
    assert "no HTTP status" in str(info.value) and "Connection refused" in str(info.value)
    assert info.value.status is None
