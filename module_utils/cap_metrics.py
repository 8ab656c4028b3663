# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus text exposition format (0.0.4) files for node-exporter's textfile collector.

parse_text() reads what render() writes: '# HELP', '# TYPE' and sample lines with
labels. apply_updates() sets or increments samples. render() writes families by
name and samples by their sorted labels, so the same metrics always give the same
bytes. push_url() and push() send a file to a Pushgateway. docs/metrics.md describes
the metrics the project writes and how they reach Prometheus.
"""

from __future__ import annotations

import base64
import math
import re

from urllib.parse import quote, urlsplit, urlunsplit

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "untyped")
WRITABLE_TYPES = ("counter", "gauge")
ACTIONS = ("set", "inc")
CONTENT_TYPE = "text/plain; version=0.0.4"

_NAME_AT_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_AT_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_VALUE_RE = re.compile(r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
                       r"|Inf|inf|NaN|nan)$")


class MetricsError(Exception):
    """A metric, a label or a metrics file is not valid."""


class PushError(MetricsError):
    """The Pushgateway did not accept the metrics."""

    def __init__(self, message, url, status=None):
        super().__init__(message)
        self.url = url
        self.status = status


class Family:
    """One metric: its name, help text, type and samples keyed by sorted label pairs."""

    def __init__(self, name, help_text, mtype):
        self.name = name
        self.help = help_text
        self.type = mtype
        self.samples = {}

    def copy(self):
        other = Family(self.name, self.help, self.type)
        other.samples = dict(self.samples)
        return other


# Values ---------------------------------------------------------------------------------

def normalize_value(value, where="value"):
    """An int or float from an int, float or numeric string; integral floats become ints."""
    if isinstance(value, bool) or value is None:
        raise MetricsError("%s must be a number, got %r" % (where, value))
    if isinstance(value, str):
        text = value.strip()
        if not _VALUE_RE.match(text):
            raise MetricsError("%s must be a number, got %r" % (where, value))
        try:
            value = int(text)
        except ValueError:
            value = float(text)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2 ** 53:
            return int(value)
        return value
    raise MetricsError("%s must be a number, got %r" % (where, value))


def format_value(value):
    """Prometheus text of a value: integers without '.0', floats by repr, NaN and +-Inf."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


# Names and labels -----------------------------------------------------------------------

def check_metric_name(name):
    if not isinstance(name, str) or not METRIC_NAME_RE.match(name):
        raise MetricsError("invalid metric name %r: it must match %s"
                           % (name, METRIC_NAME_RE.pattern))


def check_label_name(metric, name):
    if not isinstance(name, str) or not LABEL_NAME_RE.match(name):
        raise MetricsError("invalid label name %r of %s: it must match %s"
                           % (name, metric, LABEL_NAME_RE.pattern))
    if name.startswith("__"):
        raise MetricsError("label name %r of %s is reserved: names starting with '__' are "
                           "for Prometheus itself" % (name, metric))


def label_key(metric, labels):
    """The sorted tuple of (name, value) pairs that identifies a sample of metric."""
    key = []
    for name, value in (labels or {}).items():
        check_label_name(metric, name)
        if value is None or isinstance(value, (dict, list)):
            raise MetricsError("label %s of %s must be a string, got %r" % (name, metric, value))
        if isinstance(value, bool):
            value = "true" if value else "false"
        key.append((name, str(value)))
    return tuple(sorted(key))


def escape_label_value(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(text, allowed):
    out = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "n":
                out.append("\n")
            elif nxt in allowed:
                out.append(nxt)
            else:
                out.append(char + nxt)
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def sample_line(name, key, value):
    """One sample line: name{a="1",b="2"} value."""
    if key:
        labels = ",".join('%s="%s"' % (k, escape_label_value(v)) for k, v in key)
        return "%s{%s} %s" % (name, labels, format_value(value))
    return "%s %s" % (name, format_value(value))


# Parsing --------------------------------------------------------------------------------

def _parse_labels(text, pos, lineno):
    """Parse '{a="x",b="y"}' starting at text[pos] == '{'. Returns (pairs, next_pos)."""
    pairs = []
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "}":
            return pairs, pos + 1
        match = _LABEL_AT_RE.match(text, pos)
        if not match:
            raise MetricsError("line %d: expected a label name at column %d" % (lineno, pos + 1))
        name = match.group(0)
        pos = match.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if text[pos:pos + 2] != '="':
            raise MetricsError("line %d: expected =\"...\" after label %s" % (lineno, name))
        pos += 2
        start = pos
        while True:
            if pos >= len(text):
                raise MetricsError("line %d: unterminated value of label %s" % (lineno, name))
            if text[pos] == "\\":
                pos += 2
                continue
            if text[pos] == '"':
                break
            pos += 1
        pairs.append((name, _unescape(text[start:pos], '\\"')))
        pos += 1
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "}":
            return pairs, pos + 1
        raise MetricsError("line %d: expected , or } after the value of label %s" % (lineno, name))


def parse_text(text):
    """Parse exposition text into {name: Family}. Raises MetricsError on anything malformed."""
    families = {}

    def family(name):
        if name not in families:
            families[name] = Family(name, None, "untyped")
        return families[name]

    seen_samples = set()
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if len(parts) >= 2 and parts[0] == "HELP":
                check_metric_name(parts[1])
                fam = family(parts[1])
                if fam.help is not None:
                    raise MetricsError("line %d: second HELP line for %s" % (lineno, parts[1]))
                fam.help = _unescape(parts[2] if len(parts) > 2 else "", "\\")
            elif len(parts) >= 2 and parts[0] == "TYPE":
                check_metric_name(parts[1])
                mtype = parts[2].strip() if len(parts) > 2 else ""
                if mtype not in TYPES:
                    raise MetricsError("line %d: unsupported type %r of %s"
                                       % (lineno, mtype, parts[1]))
                fam = family(parts[1])
                if fam.samples:
                    raise MetricsError("line %d: TYPE of %s after its samples" % (lineno, parts[1]))
                fam.type = mtype
            continue
        match = _NAME_AT_RE.match(line)
        if not match:
            raise MetricsError("line %d: expected a metric name" % lineno)
        name = match.group(0)
        pos = match.end()
        pairs = []
        if pos < len(line) and line[pos] == "{":
            pairs, pos = _parse_labels(line, pos, lineno)
        fields = line[pos:].split()
        if len(fields) not in (1, 2):
            raise MetricsError("line %d: expected a value after %s" % (lineno, name))
        value = normalize_value(fields[0], "line %d: value" % lineno)
        # A trailing timestamp is dropped: the textfile collector does not accept them.
        names = [k for k, _v in pairs]
        if len(set(names)) != len(names):
            raise MetricsError("line %d: repeated label in a sample of %s" % (lineno, name))
        for label in names:
            check_label_name(name, label)
        key = tuple(sorted(pairs))
        if (name, key) in seen_samples:
            raise MetricsError("line %d: duplicate sample %s"
                               % (lineno, sample_line(name, key, value)))
        seen_samples.add((name, key))
        family(name).samples[key] = value
    return families


# Updating and rendering -----------------------------------------------------------------

def apply_updates(families, updates):
    """Apply a list of updates to a copy of families.

    Each update is a dict with name, help, type (counter|gauge), labels, value and
    action (set|inc). 'inc' adds to the existing sample of the same name and labels,
    starting from 0. Returns (new_families, applied) where applied lists, per update,
    name, type, labels, action, previous and value.
    """
    result = dict((name, fam.copy()) for name, fam in families.items())
    applied = []
    for index, update in enumerate(updates):
        name = update.get("name")
        check_metric_name(name)
        mtype = update.get("type")
        if mtype not in WRITABLE_TYPES:
            raise MetricsError("metric %s: type must be one of %s, got %r"
                               % (name, ", ".join(WRITABLE_TYPES), mtype))
        action = update.get("action") or "set"
        if action not in ACTIONS:
            raise MetricsError("metric %s: action must be one of %s, got %r"
                               % (name, ", ".join(ACTIONS), action))
        value = normalize_value(update.get("value"), "metric %s: value" % name)
        key = label_key(name, update.get("labels"))
        help_text = update.get("help")
        fam = result.get(name)
        if fam is None:
            if not help_text:
                raise MetricsError("metric %s is new and needs a help text" % name)
            fam = result[name] = Family(name, help_text, mtype)
        elif fam.type != mtype:
            if fam.type == "untyped" and not fam.samples:
                fam.type = mtype
            else:
                raise MetricsError("metric %s has type %s in the file, the update says %s"
                                   % (name, fam.type, mtype))
        if help_text:
            fam.help = help_text
        elif not fam.help:
            raise MetricsError("metric %s has no help text; give one" % name)
        previous = fam.samples.get(key)
        if action == "inc":
            if mtype == "counter" and (value < 0 or math.isnan(value)):
                raise MetricsError("counter %s can only be increased, not by %s"
                                   % (name, format_value(value)))
            new = normalize_value((previous or 0) + value)
        else:
            if mtype == "counter" and value < 0:
                raise MetricsError("counter %s cannot be set to a negative value %s"
                                   % (name, format_value(value)))
            new = value
        fam.samples[key] = new
        applied.append(dict(name=name, type=mtype, labels=dict(key), action=action,
                            previous=previous, value=new, sample=sample_line(name, key, new)))
    return result, applied


def render(families):
    """The exposition text of families: by metric name, samples by sorted labels."""
    lines = []
    for name in sorted(families):
        fam = families[name]
        if fam.help:
            lines.append("# HELP %s %s" % (name, escape_help(fam.help)))
        lines.append("# TYPE %s %s" % (name, fam.type))
        for key in sorted(fam.samples):
            lines.append(sample_line(name, key, fam.samples[key]))
    return ("\n".join(lines) + "\n") if lines else ""


# Pushgateway ----------------------------------------------------------------------------

def _path_pair(name, value):
    """One '/<name>/<value>' pair of a Pushgateway URL path.

    Values containing '/' (and empty values) use the '<name>@base64/<base64url>' form,
    everything else is percent-encoded.
    """
    if value == "" or "/" in value:
        encoded = base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii")
        return "/%s@base64/%s" % (name, encoded or "=")
    return "/%s/%s" % (name, quote(value, safe=""))


def push_url(base_url, job, grouping=None):
    """<base_url>/metrics/job/<job>[/<label>/<value>...], grouping labels sorted by name."""
    if not job:
        raise MetricsError("a Pushgateway job name is required")
    path = "/metrics" + _path_pair("job", job)
    for name, value in label_key("grouping", grouping):
        if name == "job":
            raise MetricsError("grouping must not contain 'job'; use the job option")
        path += _path_pair(name, value)
    return base_url.rstrip("/") + path


def redact_url(url):
    """url without user:password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query,
                       parts.fragment))


def push(url, body, open_url, validate_certs=True, timeout=30, url_username=None,
         url_password=None, force_basic_auth=False):
    """PUT body to url with open_url (ansible.module_utils.urls.open_url).

    Returns the HTTP status. Raises PushError naming the URL and the status (or the
    connection error) when the Pushgateway does not answer 2xx.
    """
    shown = redact_url(url)
    try:
        response = open_url(url, data=body, method="PUT", validate_certs=validate_certs,
                            timeout=timeout, headers={"Content-Type": CONTENT_TYPE},
                            url_username=url_username, url_password=url_password,
                            force_basic_auth=force_basic_auth)
        status = response.getcode()
        response.read()
    except Exception as exc:  # urllib, socket and ssl errors all land here
        status = getattr(exc, "code", None)
        if status is not None:
            detail = ""
            try:
                detail = exc.read().decode("utf-8", "replace").strip()
            except Exception:
                detail = ""
            raise PushError("push to Pushgateway %s failed: HTTP %s %s%s"
                            % (shown, status, getattr(exc, "reason", "") or "",
                               (": " + detail[:500]) if detail else ""), shown, status)
        reason = getattr(exc, "reason", None) or exc
        raise PushError("push to Pushgateway %s failed: no HTTP status, %s" % (shown, reason),
                        shown, None)
    if status is None or not 200 <= status < 300:
        raise PushError("push to Pushgateway %s failed: HTTP %s" % (shown, status), shown, status)
    return status
