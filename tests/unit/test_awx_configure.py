"""playbooks/awx_configure.yml and role cap_awx, checked without a controller.

awx.awx modules talk to the controller even in check mode, so the playbook runs here against
a stand-in awx.awx collection: one module per real module, built from the real module's own
argument spec (read from the installed awx.awx 24.6.1 by running its main() up to the point
where it constructs ControllerAPIModule). Each stand-in validates its arguments exactly as
AnsibleModule does for the real module and records them. The recorded arguments, i.e. what
the role would send, are then checked against the controller's rules: playbooks that exist,
survey variables that are real role variables, valid surveys and rrules, injector templates
that render in the controller's sandbox, and an approval node in front of the restore.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from dateutil.rrule import rrulestr
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.conftest import ROOT, VENV_BIN, ansible_env

# Each stand-in run of the playbook takes a few seconds.
pytestmark = pytest.mark.slow

ROLE = ROOT / "roles" / "cap_awx"
PLAYBOOK = "playbooks/awx_configure.yml"

# Dummy site values for the runs that must pass preflight; none is a real secret.
SITE_VARS = {
    "cap_awx_ee_image": "registry.example.com/cap/cap-dr-ee:1.0.0",
    "cap_awx_project_scm_url": "https://git.example.com/cap/cap-dr.git",
    "cap_awx_vault_addr": "https://vault.example.com:8200",
    "cap_awx_vault_token": "hvs.test-vault-token-4f1d9a",
    "cap_awx_s3_access_key": "AKIATESTACCESSKEY7Q2",
    "cap_awx_s3_secret_key": "test-s3-secret-9c3e51b7",
    "cap_awx_s3_endpoint_url": "https://s3.us-east-1.amazonaws.com",
    "cap_awx_k8s_host": "https://api.cluster.example.com:6443",
    "cap_awx_k8s_bearer_token": "test-k8s-bearer-token-e8a0c2",
}
SECRET_VARS = ("cap_awx_vault_token", "cap_awx_s3_access_key", "cap_awx_s3_secret_key",
               "cap_awx_k8s_bearer_token")

# Controller rules for surveys (awx/main/models/mixins.py, awx/api/views survey_spec).
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


class _Captured(Exception):
    """Raised from the patched constructor once the argument spec is in hand."""


def real_module(name):
    """Import awx.awx's module `name` from the installed collection."""
    return importlib.import_module("ansible_collections.awx.awx.plugins.modules." + name)


def module_spec(name):
    """The argument spec the real module passes to AnsibleModule, and its constraints."""
    from ansible_collections.awx.awx.plugins.module_utils import controller_api

    mod = real_module(name)
    captured = {}

    def capture(self, argument_spec=None, **kwargs):
        spec = dict(controller_api.ControllerModule.AUTH_ARGSPEC)
        spec.update(argument_spec or {})
        captured["spec"] = spec
        captured["kwargs"] = {key: value for key, value in kwargs.items()
                              if key in ("mutually_exclusive", "required_together",
                                         "required_one_of", "required_if") and value}
        raise _Captured()

    original = controller_api.ControllerModule.__init__
    controller_api.ControllerModule.__init__ = capture
    try:
        mod.main()
    except _Captured:
        pass
    finally:
        controller_api.ControllerModule.__init__ = original
    assert "spec" in captured, "awx.awx.%s did not construct ControllerAPIModule" % name
    return captured["spec"], captured["kwargs"]


def _jsonable_spec(spec):
    out = {}
    for key, option in spec.items():
        option = dict(option)
        if "fallback" in option:
            option["fallback"] = list(option["fallback"][1])
        if "options" in option:
            option["options"] = _jsonable_spec(option["options"])
        out[key] = option
    return out


STAND_IN = '''#!/usr/bin/python
# Stand-in for awx.awx.%(name)s: the real argument spec, validated by AnsibleModule, recorded.
import json
from ansible.module_utils.basic import AnsibleModule, env_fallback

SPEC = json.loads(%(spec)r)
KWARGS = json.loads(%(kwargs)r)


def _fallbacks(spec):
    for option in spec.values():
        if "fallback" in option:
            option["fallback"] = (env_fallback, option["fallback"])
        if "options" in option:
            _fallbacks(option["options"])


def main():
    _fallbacks(SPEC)
    module = AnsibleModule(argument_spec=SPEC, supports_check_mode=True, **KWARGS)
    with open(%(record)r, "a") as handle:
        handle.write(json.dumps({"module": %(name)r, "params": module.params,
                                 "check_mode": module.check_mode}) + "\\n")
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
'''


def role_task_files():
    return sorted((ROLE / "tasks").glob("*.yml"))


def iter_tasks(tasks):
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from iter_tasks(task.get(key))


def task_module(task):
    for key in task:
        if "." in key and key.count(".") >= 2:
            return key
    return None


def awx_modules_used():
    names = set()
    for path in role_task_files():
        for task in iter_tasks(yaml.safe_load(path.read_text())):
            module = task_module(task)
            if module and module.startswith("awx.awx."):
                names.add(module.split(".")[-1])
    return sorted(names)


def build_stand_in(root, record):
    """A collection tree awx/awx with a stand-in for every awx.awx module the role uses."""
    coll = root / "ansible_collections" / "awx" / "awx"
    (coll / "plugins" / "modules").mkdir(parents=True)
    (coll / "meta").mkdir()
    real_root = Path(list(importlib.import_module("ansible_collections.awx.awx").__path__)[0])
    # The controller action group (module_defaults: group/awx.awx.controller) lives here.
    shutil.copy(real_root / "meta" / "runtime.yml", coll / "meta" / "runtime.yml")
    for name in awx_modules_used():
        spec, kwargs = module_spec(name)
        kwargs = {key: [list(item) for item in value] for key, value in kwargs.items()}
        (coll / "plugins" / "modules" / (name + ".py")).write_text(STAND_IN % {
            "name": name, "spec": json.dumps(_jsonable_spec(spec)),
            "kwargs": json.dumps(kwargs), "record": str(record)})
    return root


class Run:
    """One ansible-playbook run of awx_configure.yml against the stand-in collection."""

    def __init__(self, proc, record):
        self.proc = proc
        self.output = proc.stdout + proc.stderr
        self.calls = ([json.loads(line) for line in record.read_text().splitlines()]
                      if record.exists() else [])
        try:
            self.doc = json.loads(proc.stdout)
        except ValueError:
            self.doc = None

    def params(self, module):
        return [call["params"] for call in self.calls if call["module"] == module]

    def failed_task(self):
        for play in (self.doc or {}).get("plays", []):
            for task in play["tasks"]:
                result = task["hosts"].get("localhost", {})
                if result.get("failed"):
                    return task["task"]["name"].split(" : ", 1)[-1], result.get("msg", "")
        return None, ""


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    base = tmp_path_factory.mktemp("awx")

    def run(check, extra_vars=None, env=None):
        record = base / ("calls-%d.jsonl" % len(list(base.glob("calls-*"))))
        collections = build_stand_in(base / record.stem, record)
        cmd = [str(VENV_BIN / "ansible-playbook"), PLAYBOOK]
        if check:
            cmd.append("--check")
        if extra_vars:
            vars_file = base / (record.stem + "-vars.json")
            vars_file.write_text(json.dumps(extra_vars))
            cmd += ["-e", "@%s" % vars_file]
        run_env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(collections))
        for name in ("CONTROLLER_HOST", "TOWER_HOST", "CONTROLLER_OAUTH_TOKEN"):
            run_env.pop(name, None)
        run_env.update(env or {})
        proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True,
                              timeout=600)
        return Run(proc, record)

    return run


@pytest.fixture(scope="module")
def check_run(stand_in):
    """The shipped defaults, check mode, no controller: what the tests inspect."""
    run = stand_in(check=True)
    assert run.proc.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def defaults():
    return yaml.load((ROLE / "defaults" / "main.yml").read_text(), Loader=_UnsafeLoader)


class _UnsafeLoader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's !unsafe tag as a plain string."""


_UnsafeLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def all_role_variables():
    names = set()
    for path in (ROOT / "roles").glob("*/defaults/main.yml"):
        names.update(yaml.load(path.read_text(), Loader=_UnsafeLoader) or {})
    return names


def surveys(run):
    for module in ("job_template", "workflow_job_template"):
        for params in run.params(module):
            if params.get("survey_spec"):
                yield params["name"], params["survey_spec"]


# --- the role's own contract -------------------------------------------------------------

def test_argument_specs_match_defaults(defaults):
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults)


def test_every_default_has_a_comment():
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^(cap_awx_\w+):", line)
        if match:
            previous = lines[number - 1] if number else ""
            assert previous.startswith("#"), "%s has no comment above it" % match.group(1)


def test_role_uses_fqcn_modules_only():
    for path in role_task_files():
        for task in iter_tasks(yaml.safe_load(path.read_text())):
            if "block" in task:
                continue
            module = task_module(task)
            assert module and module.split(".")[0] in ("awx", "ansible"), \
                "%s: task %r has no fully qualified module" % (path.name, task.get("name"))


def _expressions(node, prose=("name", "msg", "fail_msg", "success_msg")):
    """Every string of a task that Ansible evaluates (not its name or messages)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in prose:
                yield from _expressions(value, prose)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value, prose)
    elif isinstance(node, str):
        yield node


def test_secrets_are_only_seen_by_no_log_tasks():
    secret = re.compile(r"\b(%s)\b" % "|".join(SECRET_VARS + ("cap_awx_credentials",)))
    for path in role_task_files():
        for task in iter_tasks(yaml.safe_load(path.read_text())):
            if "block" in task:
                continue
            if any(secret.search(text) for text in _expressions(task)):
                assert task.get("no_log") is True, \
                    "%s: task %r sees a secret without no_log" % (path.name, task.get("name"))


def test_syntax_check():
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", PLAYBOOK],
                          cwd=ROOT, env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default",
                                                    ANSIBLE_CALLBACKS_ENABLED=""),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the check-mode run -------------------------------------------------------------------

def test_check_mode_runs_every_step_without_a_controller(check_run):
    assert check_run.calls, "no awx.awx module was called"
    assert all(call["check_mode"] for call in check_run.calls)
    called = {call["module"] for call in check_run.calls}
    assert called == set(awx_modules_used())


def test_every_call_uses_valid_options_and_choices(check_run):
    specs = {}
    for call in check_run.calls:
        name = call["module"]
        if name not in specs:
            specs[name] = module_spec(name)
        spec, kwargs = specs[name]
        params = {key: value for key, value in call["params"].items() if value is not None}
        result = ArgumentSpecValidator(spec, **kwargs).validate(params)
        assert not result.error_messages, "awx.awx.%s %s: %s" % (
            name, params.get("name", ""), result.error_messages)


def _doc_to_spec(options):
    """Module DOCUMENTATION options -> argument spec (type, required, choices, suboptions)."""
    spec = {}
    for name, doc in options.items():
        option = {"type": doc.get("type", "str")}
        for key in ("required", "choices", "elements", "aliases"):
            if key in doc:
                option[key] = doc[key]
        if "suboptions" in doc:
            option["options"] = _doc_to_spec(doc["suboptions"])
        spec[name] = option
    return spec


def test_workflow_nodes_match_the_module_documentation(check_run):
    doc = yaml.safe_load(real_module("workflow_job_template").DOCUMENTATION)
    node_spec = _doc_to_spec(doc["options"]["workflow_nodes"]["suboptions"])
    workflows = check_run.params("workflow_job_template")
    assert workflows
    for workflow in workflows:
        for node in workflow["workflow_nodes"]:
            result = ArgumentSpecValidator(node_spec).validate(node)
            assert not result.error_messages, "%s node %s: %s" % (
                workflow["name"], node.get("identifier"), result.error_messages)


def test_job_template_playbooks_exist(check_run):
    templates = check_run.params("job_template")
    expected = {"backup", "verify", "restore", "restore_registry", "restore_policy_store",
                "prune", "drill"}
    assert {Path(t["playbook"]).stem for t in templates} == expected
    for template in templates:
        assert (ROOT / template["playbook"]).is_file(), \
            "%s: %s is not in playbooks/" % (template["name"], template["playbook"])


def test_survey_variables_are_role_variables(check_run):
    known = all_role_variables()
    for name, survey in surveys(check_run):
        for question in survey["spec"]:
            assert question["variable"] in known, \
                "%s asks for %s, which no role's defaults define" % (name, question["variable"])


def test_surveys_cover_the_runbook_options(check_run):
    asked = {name: {q["variable"] for q in survey["spec"]} for name, survey in surveys(check_run)}
    assert {"cap_backup_output", "cap_backup_encrypt",
            "cap_backup_encryption_key_source"} <= asked["CAP backup"]
    assert {"cap_verify_archive", "cap_verify_backup_id"} <= asked["CAP verify"]
    assert {"cap_restore_backup_id", "cap_restore_source", "cap_restore_target",
            "cap_restore_registry_first", "cap_restore_skip_smoke",
            "cap_restore_verify_only"} <= asked["CAP restore"]
    assert {"cap_drill_backup_id", "cap_drill_rto_seconds",
            "cap_drill_rpo_seconds"} <= asked["CAP DR drill"]


def test_surveys_are_valid_controller_surveys(check_run):
    for name, survey in surveys(check_run):
        assert {"name", "description", "spec"} <= set(survey), name
        variables = [question["variable"] for question in survey["spec"]]
        assert len(variables) == len(set(variables)), "%s asks a variable twice" % name
        for question in survey["spec"]:
            where = "%s/%s" % (name, question.get("variable"))
            assert {"question_name", "variable", "type", "required"} <= set(question), where
            assert question["type"] in SURVEY_TYPES, where
            assert isinstance(question["required"], bool), where
            assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", question["variable"]), where
            default = question.get("default", "")
            if question["type"] in ("multiplechoice", "multiselect"):
                assert isinstance(question["choices"], list) and question["choices"], where
                assert all(isinstance(choice, str) for choice in question["choices"]), where
                assert default in question["choices"], where
            elif question["type"] == "integer":
                assert isinstance(question["min"], int) and isinstance(question["max"], int), where
                assert question["min"] <= default <= question["max"], where
            elif question["type"] in ("text", "textarea"):
                assert isinstance(default, str), where
                assert len(default) <= question.get("max", 1024), where
                if default:
                    assert len(default) >= question.get("min", 0), where


def _rrule_occurrences(rule, count=3):
    assert rule.count("DTSTART") == 1, rule
    match = re.match(r"^DTSTART(;TZID=[^:]+)?:\d{8}T\d{6}Z? RRULE:(\S+)$", rule)
    assert match, "not the controller's rrule form: %s" % rule
    parts = dict(item.split("=", 1) for item in match.group(2).split(";"))
    # The controller refuses rules without INTERVAL, SECONDLY rules and COUNT over 999.
    assert "INTERVAL" in parts and parts["FREQ"] != "SECONDLY", rule
    assert int(parts.get("COUNT", 1)) <= 999, rule
    parsed = rrulestr(rule.replace(" RRULE:", "\nRRULE:"))
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    occurrences = []
    for _ in range(count):
        start = parsed.after(start)
        occurrences.append(start)
    return parts, occurrences


def test_schedules_have_valid_rrules(check_run):
    schedules = {params["name"]: params for params in check_run.params("schedule")}
    targets = ({t["name"] for t in check_run.params("job_template")}
               | {w["name"] for w in check_run.params("workflow_job_template")})
    for schedule in schedules.values():
        assert schedule["unified_job_template"] in targets
        _rrule_occurrences(schedule["rrule"])
    backup = [s for s in schedules.values() if s["unified_job_template"] == "CAP backup"]
    drill = [s for s in schedules.values() if s["unified_job_template"] == "CAP DR drill"]
    assert len(backup) == 1 and len(drill) == 1
    parts, times = _rrule_occurrences(backup[0]["rrule"])
    assert parts["FREQ"] == "HOURLY"
    assert all(t.minute == 0 for t in times)
    assert times[1] - times[0] == times[2] - times[1] and (times[1] - times[0]).seconds == 3600
    parts, times = _rrule_occurrences(drill[0]["rrule"])
    assert parts["FREQ"] == "WEEKLY"
    assert all(t.weekday() == 0 and (t.hour, t.minute) == (3, 0) for t in times)


def _restore_nodes(nodes):
    return [node for node in nodes
            if node["unified_job_template"].get("type") == "job_template"
            and node["unified_job_template"]["name"] == "CAP restore"
            and str(node.get("extra_data", {}).get("cap_restore_verify_only")).lower() != "true"]


def test_restore_workflow_has_its_approval_node_before_the_restore(check_run):
    workflows = {w["name"]: w for w in check_run.params("workflow_job_template")}
    workflow = workflows["CAP production restore"]
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    children = {ident: [child["identifier"] for kind in ("success_nodes", "failure_nodes",
                                                         "always_nodes")
                        for child in node.get("related", {}).get(kind, [])]
                for ident, node in nodes.items()}
    for targets in children.values():
        assert set(targets) <= set(nodes), "a link points at a node that does not exist"
    approvals = [ident for ident, node in nodes.items()
                 if node["unified_job_template"].get("type") == "workflow_approval"]
    assert len(approvals) == 1
    approval = nodes[approvals[0]]
    assert approval["unified_job_template"]["name"] == "SRE + Engineering Manager approval"
    # Only success of the approval leads on: a denial or time-out must not reach the restore.
    assert not approval.get("related", {}).get("failure_nodes")
    assert not approval.get("related", {}).get("always_nodes")
    restores = _restore_nodes(workflow["workflow_nodes"])
    assert restores, "the workflow never restores"
    roots = set(nodes) - {child for targets in children.values() for child in targets}
    assert roots and approvals[0] not in roots

    # Every path from a root to a restoring node passes through the approval node.
    def reaches_restore_unapproved(ident, seen):
        if ident == approvals[0] or ident in seen:
            return False
        if nodes[ident] in restores:
            return True
        return any(reaches_restore_unapproved(child, seen | {ident})
                   for child in children[ident])

    for root in roots:
        assert not reaches_restore_unapproved(root, frozenset()), \
            "a path from %s reaches the restore without approval" % root
    for restore in restores:
        assert approvals[0] in [ident for ident, targets in children.items()
                                if restore["identifier"] in targets]


def test_workflow_verifies_before_it_asks_for_approval(check_run):
    workflow = check_run.params("workflow_job_template")[0]
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    approval = next(i for i, n in nodes.items()
                    if n["unified_job_template"]["type"] == "workflow_approval")
    parents = [n for n in nodes.values()
               if approval in [c["identifier"] for c in n.get("related", {}).get("success_nodes", [])]]
    assert parents and all(p["extra_data"]["cap_restore_verify_only"] == "true" for p in parents)


def test_access_control_keeps_restore_behind_the_workflow(check_run):
    grants = check_run.params("role")
    sre_templates = {t for g in grants if g["team"] == "CAP SRE" for t in g["job_templates"] or []}
    assert "CAP restore" not in sre_templates
    approvers = [g for g in grants if g["role"] == "approval"]
    assert approvers and all("CAP production restore" in g["workflows"] for g in approvers)
    assert {g["team"] for g in approvers}.isdisjoint(
        {g["team"] for g in grants if g["role"] == "execute" and g["workflows"]})


def test_job_template_credentials_exist(check_run):
    credentials = {c["name"] for c in check_run.params("credential")}
    for template in check_run.params("job_template"):
        assert set(template["credentials"]) <= credentials, template["name"]


def test_kubernetes_credential_uses_the_builtin_type(check_run):
    kube = [c for c in check_run.params("credential") if c["name"] == "CAP Kubernetes"]
    assert kube and kube[0]["credential_type"] == "OpenShift or Kubernetes API Bearer Token"
    assert {"host", "bearer_token", "verify_ssl"} <= set(kube[0]["inputs"])


def test_inventory_sources_read_the_project(check_run):
    sources = {s["inventory"]: s for s in check_run.params("inventory_source")}
    assert sources["CAP production"]["source_path"] == "inventories/production"
    for source in sources.values():
        assert source["source"] == "scm"
        assert source["source_project"] == check_run.params("project")[0]["name"]


def test_credential_type_injectors_render_in_the_controller_sandbox(check_run):
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    types = {t["name"]: t for t in check_run.params("credential_type")}
    known = all_role_variables()

    def render(injectors, inputs, filenames):
        ns = dict(inputs, tower={"filename": filenames})
        return {section: {key: env.from_string(value).render(ns) for key, value in body.items()}
                for section, body in injectors.items() if section != "file"}

    vault = types["CAP Vault token"]
    fields = {f["id"]: f for f in vault["inputs"]["fields"]}
    assert fields["vault_token"].get("secret") is True
    out = render(vault["injectors"], {"vault_addr": "https://vault:8200", "vault_token": "t"},
                 {"vault_token": "/runner/env/tmpk3j2"})
    assert out["env"]["VAULT_ADDR"] == "https://vault:8200"
    assert "VAULT_TOKEN" not in out["env"], "the token goes in a file, never in env"
    for role in ("backup", "verify", "restore"):
        assert out["extra_vars"]["cap_%s_vault_token_path" % role] == "/runner/env"
        assert out["extra_vars"]["cap_%s_vault_token_file" % role] == "tmpk3j2"
    assert set(out["extra_vars"]) <= known
    assert env.from_string(vault["injectors"]["file"]["template.vault_token"]).render(
        vault_token="t") == "t"

    s3 = types["CAP S3"]
    fields = {f["id"]: f for f in s3["inputs"]["fields"]}
    assert fields["secret_key"].get("secret") is True
    out = render(s3["injectors"], {"access_key": "a", "secret_key": "s",
                                   "endpoint_url": "https://s3", "region": "eu-central-1"}, {})
    assert out["env"]["AWS_ACCESS_KEY_ID"] == "a"
    assert out["env"]["AWS_SECRET_ACCESS_KEY"] == "s"
    assert out["env"]["AWS_ENDPOINT_URL_S3"] == "https://s3"
    assert out["extra_vars"]["cap_s3_endpoint_url"] == "https://s3"
    assert "s" not in out["extra_vars"].values(), "no secret in extra vars"
    for ctype in types.values():
        required = set(ctype["inputs"].get("required", []))
        assert required <= {f["id"] for f in ctype["inputs"]["fields"]}


# --- placeholders and secrets -------------------------------------------------------------

def test_placeholders_stop_a_real_run_before_the_controller_is_touched(stand_in):
    run = stand_in(check=False, env={"CONTROLLER_HOST": "https://controller.invalid"})
    assert run.proc.returncode != 0
    assert run.calls == []
    task, msg = run.failed_task()
    assert task == "Require the site values"
    for name in SITE_VARS:
        assert name in msg


def test_a_real_run_passes_secrets_but_never_shows_them(stand_in):
    run = stand_in(check=False, extra_vars=SITE_VARS,
                   env={"CONTROLLER_HOST": "https://controller.invalid"})
    assert run.proc.returncode == 0, run.output[-4000:]
    assert not any(call["check_mode"] for call in run.calls)
    inputs = {c["name"]: c["inputs"] for c in run.params("credential")}
    assert inputs["CAP Vault"]["vault_token"] == SITE_VARS["cap_awx_vault_token"]
    assert inputs["CAP S3"]["secret_key"] == SITE_VARS["cap_awx_s3_secret_key"]
    assert inputs["CAP Kubernetes"]["bearer_token"] == SITE_VARS["cap_awx_k8s_bearer_token"]
    for name in SECRET_VARS:
        assert SITE_VARS[name] not in run.output, "%s shows in the playbook output" % name


def test_a_real_run_needs_a_controller(stand_in):
    run = stand_in(check=False, extra_vars=SITE_VARS)
    assert run.proc.returncode != 0
    assert run.calls == []
    assert run.failed_task()[0] == "Require a controller to talk to"
