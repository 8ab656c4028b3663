"""Alert rules and the Grafana dashboard: promtool, the runbook's alerts, metric names."""

import json
import re
import subprocess

import pytest
import yaml

from ansible.module_utils.cap_report import METRIC_LABELS, METRICS
from tests.conftest import ROOT

PROMTOOL = "/usr/bin/promtool"
ALERTS = ROOT / "monitoring" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "monitoring" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "cap-restore.json"
# The CAP repository's copy of the runbook, which runbook_url annotations point into.
RUNBOOK = ROOT / "sandbox" / "content" / "runbooks" / "backup-restore.md"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"

REQUIRED_ALERTS = {"BackupFailed", "BackupStale", "RestoreFailed", "DrillFailed", "DrillStale"}
# Labels Prometheus or the Pushgateway add to every series.
TARGET_LABELS = {"instance", "job"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC_RE = re.compile(r"\bcap_[a-z0-9_]+")
_SELECTOR_RE = re.compile(r"\b(cap_[a-z0-9_]+)\s*\{([^}]*)\}")
_LABEL_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")


def promtool(*args):
    proc = subprocess.run([PROMTOOL] + list(args), capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def metric_names(expr):
    """Metric names in a PromQL expression, with string literals (label values) removed."""
    names = set()
    for token in _METRIC_RE.findall(_STRING_RE.sub('""', expr)):
        for suffix in HISTOGRAM_SUFFIXES:
            base = token[:-len(suffix)]
            if token.endswith(suffix) and METRICS.get(base, ("",))[0] == "histogram":
                token = base
        names.add(token)
    return names


def selector_labels(expr):
    """(metric, label, value) of every label matcher on a cap_ metric in expr."""
    found = []
    for metric, body in _SELECTOR_RE.findall(expr):
        for label, _op, value in _LABEL_RE.findall(body):
            found.append((metric, label, value))
    return found


def load_rules():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries(node, path="dashboard"):
    """(path, PromQL) of every query in the dashboard: panel targets, annotations, variables."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(("%s.%s" % (path, key), value))
            elif (key == "query" and isinstance(value, str)
                  and path.startswith("dashboard.templating")):
                found.append(("%s.%s" % (path, key), value))
            else:
                found += dashboard_queries(value, "%s.%s" % (path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += dashboard_queries(value, "%s[%d]" % (path, index))
    return found


def github_anchor(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def panels(dashboard):
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


# Alert rules --------------------------------------------------------------------------

def test_promtool_check_rules_passes():
    code, output = promtool("check", "rules", str(ALERTS))
    assert code == 0, output
    assert "SUCCESS" in output


def test_promtool_rule_unit_tests_pass():
    code, output = promtool("test", "rules", str(ALERTS_TEST))
    assert code == 0, output


def test_runbook_alerts_are_taken_unchanged():
    text = RUNBOOK.read_text()
    block = re.search(r"\*\*Alerts:\*\*\n```yaml\n(.*?)```", text, re.S).group(1)
    runbook = dict((rule["alert"], rule) for rule in yaml.safe_load(block))
    assert set(runbook) == {"BackupFailed", "BackupStale"}
    ours = dict((rule["alert"], rule) for rule in load_rules())
    for name, rule in runbook.items():
        assert ours[name]["expr"] == rule["expr"]
        assert ours[name]["for"] == rule["for"]
        assert ours[name]["labels"] == rule["labels"]
        for key, value in rule["annotations"].items():
            assert ours[name]["annotations"][key] == value


def test_every_alert_is_complete_and_points_into_the_runbook():
    anchors = set(github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines()
                  if re.match(r"^#{1,6} ", line))
    rules = load_rules()
    assert REQUIRED_ALERTS <= set(rule["alert"] for rule in rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        url = annotations["runbook_url"]
        assert url.startswith("https://") and "/runbooks/backup-restore.md#" in url, rule["alert"]
        assert url.split("#", 1)[1] in anchors, (rule["alert"], url)


def test_alerts_use_only_project_metrics_and_labels():
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= set(METRICS), (rule["alert"], names - set(METRICS))
        for metric, label, value in selector_labels(rule["expr"]):
            assert label in METRIC_LABELS.get(metric, {}) or label in TARGET_LABELS
            if label in METRIC_LABELS.get(metric, {}):
                assert value in METRIC_LABELS[metric][label]


def test_unit_tests_cover_firing_and_silence_of_every_alert():
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    fires, silent = set(), set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (fires if case["exp_alerts"] else silent).add(case["alertname"])
    names = set(rule["alert"] for rule in load_rules())
    assert fires == names
    assert silent == names


# Dashboard ----------------------------------------------------------------------------

def test_dashboard_is_valid_json_with_a_prometheus_datasource_variable(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "cap-restore"
    variables = dict((v["name"], v) for v in dashboard["templating"]["list"])
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def test_panels_have_unique_ids_and_a_grid_position_without_overlap(panels):
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) >= {"h", "w", "x", "y"}, panel["title"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in ("h", "w", "x", "y"))
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_dashboard_queries_use_only_project_metrics(dashboard):
    queries = dashboard_queries(dashboard)
    assert len(queries) > 20
    for path, query in queries:
        assert metric_names(query) <= set(METRICS), (path, metric_names(query) - set(METRICS))
        for metric, label, value in selector_labels(query):
            assert label in METRIC_LABELS.get(metric, {}) or label in TARGET_LABELS, (path, label)


def test_every_project_metric_is_shown_or_alerted_on(dashboard):
    used = set()
    for _path, query in dashboard_queries(dashboard):
        used |= metric_names(query)
    for rule in load_rules():
        used |= metric_names(rule["expr"])
    assert set(METRICS) - used == set()


def test_dashboard_queries_parse_as_promql(dashboard, tmp_path):
    rules = []
    for index, (_path, query) in enumerate(q for q in dashboard_queries(dashboard)
                                           if not q[1].startswith("label_values(")):
        expr = (query.replace("$instance", ".*").replace("$__range", "7d")
                .replace("$__interval", "5m").replace("$__rate_interval", "5m"))
        rules.append({"record": "dashboard:query_%d" % index, "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    code, output = promtool("check", "rules", "--lint=none", str(path))
    assert code == 0, output


def test_runbook_restore_monitoring_panels(panels):
    by_title = dict((panel["title"], panel) for panel in panels)
    assert by_title["Restore Duration"]["type"] == "histogram"
    assert "cap_restore_duration_seconds" in by_title["Restore Duration"]["targets"][0]["expr"]
    for title in ("Hash Verification Success Rate", "Smoke Test Pass Rate"):
        defaults = by_title[title]["fieldConfig"]["defaults"]
        assert defaults["unit"] == "percentunit" and defaults["max"] == 1, title
    assert "cap_restore_registry_entries_restored" in \
        by_title["Restored Registry Entry Count"]["targets"][0]["expr"]


def test_drill_objective_panels_have_the_runbook_thresholds(panels):
    by_title = dict((panel["title"], panel) for panel in panels)

    def steps(panel):
        return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    assert steps(by_title["RTO of the last drill"]) == [None, 1800]
    assert steps(by_title["RPO of the last drill"]) == [None, 3600]
    assert steps(by_title["Time since last successful drill"])[-1] == 8 * 86400
    overrides = by_title["Drill RTO and RPO against the objectives"]["fieldConfig"]["overrides"]
    values = [prop["value"]["steps"][-1]["value"] for o in overrides for prop in o["properties"]
              if prop["id"] == "thresholds"]
    assert values == [1800, 3600]
    assert "cap_drill_last_result" in by_title["Last drill result"]["targets"][0]["expr"]


def test_docs_list_every_metric():
    text = MONITORING_DOC.read_text()
    for name, (mtype, _help) in METRICS.items():
        assert re.search(r"\| `%s` \| %s \|" % (name, mtype), text), name
