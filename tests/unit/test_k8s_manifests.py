"""The Kubernetes manifests in k8s/: schema, runbook form, security and RBAC.

`kubectl apply --dry-run=client` is not an offline check: kubectl still asks the API server
for its resource list (discovery) to map each kind to a resource, with or without a dummy
kubeconfig, so without a cluster it fails with "unable to recognize ... connection refused".
Offline, the manifests are therefore checked in two ways:

* kubectl itself parses every document (`kubectl label --local --dry-run=client -o json`,
  the one kubectl mode documented not to contact a server), with a dummy kubeconfig;
* every document is validated against the Kubernetes 1.37 OpenAPI schema as compiled into
  the `kubernetes` Python client's models (pydantic, unknown fields forbidden, strict types),
  then checked structurally: namespaces, cron schedules, images and commands, mounts versus
  volumes, service accounts versus the RBAC files, and the security context.

With CAP_TEST_KUBECONFIG pointing at a real cluster, the exact client dry run runs as well.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes.client as k8s_models
import pytest
import yaml

from tests.conftest import ROOT, VENV_BIN

K8S = ROOT / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
RUNBOOK = ROOT.parent / "shared" / "seed" / "backup-restore-runbook.md"
EE = yaml.safe_load((ROOT / "execution-environment.yml").read_text())

# The runbook's CronJob command line (Backup Procedure > CronJob Configuration).
RUNBOOK_ARGS = ["--output", "/backup/cap-backup-$(date +%Y%m%d-%H%M%S).tar.gz"]
# The runbook's volumes, by mount path: (volume name, source kind, source name, read-only).
RUNBOOK_MOUNTS = {
    "/backup": ("backup-volume", "persistentVolumeClaim", "cap-backup-pvc", False),
    "/app/build": ("registry-volume", "persistentVolumeClaim", "cap-registry-pvc", False),
    "/app/keys": ("keys-volume", "secret", "cap-keys-public", True),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                  "ValidatingAdmissionPolicyBinding"}
CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def load(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def documents():
    for path in MANIFESTS:
        for doc in load(path):
            yield path, doc


def by_kind(path, kind):
    return [doc for doc in load(path) if doc["kind"] == kind]


def one(path, kind, name=None):
    docs = [d for d in by_kind(path, kind) if name is None or d["metadata"]["name"] == name]
    assert len(docs) == 1, "%s: expected one %s %s" % (path.name, kind, name or "")
    return docs[0]


def pod_spec(cronjob):
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def all_containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def cronjobs():
    return [(path, doc) for path, doc in documents() if doc["kind"] == "CronJob"]


def _ids(items):
    return ["%s:%s/%s" % (path.name, doc["kind"], doc["metadata"]["name"]) for path, doc in items]


def model_for(doc):
    version = doc["apiVersion"].split("/")[-1]
    name = version[0].upper() + version[1:] + doc["kind"]
    model = getattr(k8s_models, name, None)
    assert model is not None, "no Kubernetes 1.37 type %s for %s" % (name, doc["apiVersion"])
    return model


def valid_cron(expr):
    fields = expr.split()
    if len(fields) != 5:
        return False
    for text, (low, high) in zip(fields, CRON_FIELDS):
        for part in text.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            if not match:
                return False
            if match.group(2) is not None:
                first = int(match.group(2))
                last = int(match.group(3)) if match.group(3) is not None else first
                if not (low <= first <= last <= high):
                    return False
            if match.group(4) is not None and int(match.group(4)) < 1:
                return False
    return True


def test_there_are_the_four_manifests():
    assert [p.name for p in MANIFESTS] == ["cronjob-backup.yaml", "cronjob-drill.yaml",
                                           "rbac-backup.yaml", "rbac-drill.yaml"]


@pytest.mark.parametrize("path,doc", list(documents()), ids=_ids(documents()))
def test_document_matches_the_kubernetes_schema(path, doc):
    assert {"apiVersion", "kind", "metadata"} <= set(doc)
    assert doc["metadata"].get("name")
    model_for(doc).model_validate(doc)


@pytest.mark.parametrize("path,doc", list(documents()), ids=_ids(documents()))
def test_namespaced_objects_live_in_cap(path, doc):
    if doc["kind"] in CLUSTER_SCOPED:
        assert "namespace" not in doc["metadata"]
    else:
        assert doc["metadata"].get("namespace") == "cap"


def test_kubectl_parses_every_document_offline(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
        "users": [{"name": "offline", "user": {"token": "unused"}}]}))
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(tmp_path))
    for path in MANIFESTS:
        proc = subprocess.run(
            [str(VENV_BIN / "kubectl"), "label", "--local", "--dry-run=client", "-o", "json",
             "-f", str(path), "cap.example.com/checked=true"],
            env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, "%s: %s" % (path.name, proc.stderr)
        items = _json_stream(proc.stdout)
        assert [(i["kind"], i["metadata"]["name"]) for i in items] == \
            [(d["kind"], d["metadata"]["name"]) for d in load(path)]


def _json_stream(text):
    """kubectl prints one JSON object per document, back to back."""
    decoder, items, pos = json.JSONDecoder(), [], 0
    while text[pos:].strip():
        while text[pos].isspace():
            pos += 1
        item, pos = decoder.raw_decode(text, pos)
        items.extend(item["items"] if item.get("kind") == "List" else [item])
    return items


@pytest.mark.skipif(not os.environ.get("CAP_TEST_KUBECONFIG"),
                    reason="client dry run needs API discovery: set CAP_TEST_KUBECONFIG to a cluster")
@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_kubectl_client_dry_run_against_a_cluster(path):
    proc = subprocess.run(
        [str(VENV_BIN / "kubectl"), "apply", "--dry-run=client", "-f", str(path),
         "--validate=false", "-o", "yaml"],
        env=dict(os.environ, KUBECONFIG=os.environ["CAP_TEST_KUBECONFIG"]),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path,doc", cronjobs(), ids=_ids(cronjobs()))
def test_cronjob_is_production_ready(path, doc):
    spec = doc["spec"]
    assert valid_cron(spec["schedule"]), spec["schedule"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert "backoffLimit" in job and job["activeDeadlineSeconds"] > 0
    pod = pod_spec(doc)
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in all_containers(pod):
        where = "%s/%s" % (doc["metadata"]["name"], container["name"])
        assert container["image"], where
        assert container["command"], where
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert context["seccompProfile"]["type"] == "RuntimeDefault", where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), where


@pytest.mark.parametrize("path,doc", cronjobs(), ids=_ids(cronjobs()))
def test_mounts_and_volumes_match(path, doc):
    pod = pod_spec(doc)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"]), "duplicate volume names"
    mounted = set()
    for container in all_containers(pod):
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), container["name"]
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, "%s mounts unknown volume %s" % (
                container["name"], mount["name"])
            mounted.add(mount["name"])
    assert mounted == set(volumes), "volumes never mounted: %s" % (set(volumes) - mounted)
    # Config and secret volumes are read-only in every container.
    for container in all_containers(pod):
        for mount in container.get("volumeMounts", []):
            source = volumes[mount["name"]]
            if "secret" in source or "configMap" in source:
                assert mount.get("readOnly") is True, mount["name"]


@pytest.mark.parametrize("path,doc", cronjobs(), ids=_ids(cronjobs()))
def test_read_only_root_has_writable_tmp_and_ansible_home(path, doc):
    pod = pod_spec(doc)
    volumes = {v["name"]: v for v in pod["volumes"]}
    main = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in main["env"]}
    home = env["HOME"]
    writable = {m["mountPath"]: volumes[m["name"]] for m in main["volumeMounts"]}
    for needed in ("/tmp", home + "/.ansible"):
        assert "emptyDir" in writable[needed], needed


@pytest.mark.parametrize("path,doc", cronjobs(), ids=_ids(cronjobs()))
def test_secrets_come_from_secrets_only(path, doc):
    pod = pod_spec(doc)
    for container in all_containers(pod):
        for var in container.get("env", []):
            if re.search(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY|VAULT_ADDR", var["name"]):
                assert "value" not in var, "%s is inline" % var["name"]
                assert "secretKeyRef" in var["valueFrom"], var["name"]
        names = {var["name"] for var in container.get("env", [])}
        assert "VAULT_TOKEN" not in names, "the Vault token is a mounted file, not env"
    main = pod["containers"][0]
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"]["name"] for v in main["env"]
            if "valueFrom" in v}
    assert {"VAULT_ADDR", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(refs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    token = volumes["vault-token"]["secret"]
    assert token["secretName"] == refs["VAULT_ADDR"]
    assert [i["path"] for i in token["items"]] == ["token"]
    assert token["defaultMode"] & 0o007 == 0, "the token file is not world-readable"
    # No secret material in the ConfigMaps.
    for configmap in by_kind(path, "ConfigMap"):
        text = json.dumps(configmap["data"])
        assert not re.search(r"(secret_key|access_key|password|token)\"?\s*:\s*\"?[A-Za-z0-9]",
                             text, re.I), configmap["metadata"]["name"]


def _configmap_vars(path, name, key):
    data = one(path, "ConfigMap", name)["data"]
    return yaml.safe_load(data[key])


def test_backup_cronjob_keeps_the_runbook_form():
    path = K8S / "cronjob-backup.yaml"
    doc = one(path, "CronJob", "cap-backup")
    assert doc["metadata"]["namespace"] == "cap"
    assert doc["spec"]["schedule"] == "0 * * * *"
    pod = pod_spec(doc)
    assert pod["serviceAccountName"] == "cap-backup-sa"
    backup = one_container(pod, "backup")
    assert backup["command"] == ["/runner/project/scripts/backup.sh"]
    assert backup["args"] == RUNBOOK_ARGS
    # Kubernetes expands $(NAME) in args when NAME is an env var; "date +..." can never be one.
    assert not any(e["name"].startswith("date") for e in backup["env"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in backup["volumeMounts"]}
    for mount_path, (name, kind, source, read_only) in RUNBOOK_MOUNTS.items():
        assert mounts[mount_path]["name"] == name
        assert bool(mounts[mount_path].get("readOnly")) is read_only
        ref = volumes[name][kind]
        assert ref.get("claimName", ref.get("secretName")) == source


def one_container(pod, name):
    found = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def test_backup_cronjob_matches_the_runbook_text():
    if not RUNBOOK.is_file():
        pytest.skip("the runbook is not beside this checkout")
    block = re.search(r"```yaml\n(apiVersion: batch/v1\nkind: CronJob.*?)```", RUNBOOK.read_text(),
                      re.S)
    assert block, "the runbook's CronJob block was not found"
    runbook = yaml.safe_load(block.group(1))
    ours = one(K8S / "cronjob-backup.yaml", "CronJob", "cap-backup")
    assert ours["metadata"]["name"] == runbook["metadata"]["name"]
    assert ours["metadata"]["namespace"] == runbook["metadata"]["namespace"]
    assert ours["spec"]["schedule"] == runbook["spec"]["schedule"]
    theirs_pod, our_pod = pod_spec(runbook), pod_spec(ours)
    assert our_pod["serviceAccountName"] == theirs_pod["serviceAccountName"]
    theirs, mine = theirs_pod["containers"][0], one_container(our_pod, "backup")
    assert mine["args"] == theirs["args"]
    assert Path(mine["command"][0]).name == Path(theirs["command"][0]).name
    for mount in theirs["volumeMounts"]:
        assert mount in mine["volumeMounts"]
    for volume in theirs_pod["volumes"]:
        assert volume in our_pod["volumes"]


def test_backup_cronjob_settings_are_backup_role_variables():
    role = set(yaml.safe_load((ROOT / "roles/cap_backup/defaults/main.yml").read_text()))
    settings = _configmap_vars(K8S / "cronjob-backup.yaml", "cap-backup-ansible", "backup-vars.yml")
    assert set(settings) <= role
    # Metrics: a CronJob pod has no fixed node, so they go to the Pushgateway.
    assert settings["cap_backup_pushgateway_url"].startswith("http")
    assert all(d["credentials_file"] == "" for d in settings["cap_backup_s3_destinations"])
    pod = pod_spec(one(K8S / "cronjob-backup.yaml", "CronJob", "cap-backup"))
    backup = one_container(pod, "backup")
    env = {e["name"]: e.get("value") for e in backup["env"]}
    mounts = {m["mountPath"] for m in backup["volumeMounts"]}
    assert Path(env["CAP_BACKUP_EXTRA_VARS"]).parent.as_posix() in mounts
    assert Path(env["ANSIBLE_INVENTORY"]).parent.as_posix() in mounts
    assert settings["cap_backup_vault_token_path"] in mounts
    inventory = _configmap_vars(K8S / "cronjob-backup.yaml", "cap-backup-ansible", "inventory.yml")
    assert "localhost" in inventory["all"]["children"]["cap_backup_hosts"]["hosts"]


def test_drill_cronjob_runs_the_drill_playbook():
    path = K8S / "cronjob-drill.yaml"
    doc = one(path, "CronJob", "cap-drill")
    schedule = doc["spec"]["schedule"].split()
    assert valid_cron(" ".join(schedule)) and schedule[4] != "*" and schedule[2] == "*"
    pod = pod_spec(doc)
    assert pod["serviceAccountName"] == "cap-drill-sa"
    assert pod["automountServiceAccountToken"] is True
    drill = one_container(pod, "drill")
    assert drill["command"] == ["ansible-playbook"]
    assert drill["args"][0] == "playbooks/drill.yml"
    assert drill["workingDir"] == "/runner/project"
    assert doc["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {one(path, "PersistentVolumeClaim")["metadata"]["name"]}
    inventory = _configmap_vars(path, "cap-drill-ansible", "inventory.yml")
    settings = inventory["all"]["vars"]
    assert "localhost" in inventory["all"]["children"]["cap_drill_hosts"]["hosts"]
    report_mount = next(m["mountPath"] for m in drill["volumeMounts"] if m["name"] == "reports")
    assert settings["cap_drill_report_dir"] == report_mount
    assert settings["cap_drill_platform"] == "kubernetes"
    assert settings["cap_drill_target_prefix"] + "-" == "cap-drill-"
    known = set()
    for role in ("cap_drill", "cap_restore", "cap_platform"):
        known |= set(yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text()))
    assert set(settings) <= known


def test_backup_rbac_grants_nothing():
    path = K8S / "rbac-backup.yaml"
    account = one(path, "ServiceAccount", "cap-backup-sa")
    assert account["automountServiceAccountToken"] is False
    role = one(path, "Role", "cap-backup")
    assert role["rules"] == []
    binding = one(path, "RoleBinding", "cap-backup")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "cap-backup"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cap-backup-sa",
                                    "namespace": "cap"}]
    pod = pod_spec(one(K8S / "cronjob-backup.yaml", "CronJob", "cap-backup"))
    assert pod["automountServiceAccountToken"] is False


def test_service_accounts_match_the_rbac_files():
    for cronjob, rbac in (("cronjob-backup.yaml", "rbac-backup.yaml"),
                          ("cronjob-drill.yaml", "rbac-drill.yaml")):
        for doc in by_kind(K8S / cronjob, "CronJob"):
            name = pod_spec(doc)["serviceAccountName"]
            one(K8S / rbac, "ServiceAccount", name)
            bindings = by_kind(K8S / rbac, "RoleBinding") + by_kind(K8S / rbac, "ClusterRoleBinding")
            roles = {(d["kind"], d["metadata"]["name"]) for d in
                     by_kind(K8S / rbac, "Role") + by_kind(K8S / rbac, "ClusterRole")}
            assert bindings
            for binding in bindings:
                assert {"kind": "ServiceAccount", "name": name, "namespace": "cap"} in binding["subjects"]
                assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles


def test_drill_rbac_limits_namespaces_and_fences_the_prefix():
    path = K8S / "rbac-drill.yaml"
    namespaces = one(path, "ClusterRole", "cap-drill-namespaces")
    assert namespaces["rules"] == [{"apiGroups": [""], "resources": ["namespaces"],
                                    "verbs": ["get", "create", "delete"]}]
    # The Role template is never bound cluster-wide.
    for binding in by_kind(path, "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] != "cap-drill-workload"
    workload = one(path, "ClusterRole", "cap-drill-workload")
    for rule in workload["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"roles", "rolebindings", "clusterroles", "namespaces"} & set(rule["resources"])
    binder = one(path, "ClusterRole", "cap-drill-rolebinding")
    bind = [r for r in binder["rules"] if "bind" in r["verbs"]]
    assert bind == [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                     "verbs": ["bind"], "resourceNames": ["cap-drill-workload"]}]
    rolebindings = [r for r in binder["rules"] if "rolebindings" in r["resources"]]
    assert rolebindings and "delete" not in rolebindings[0]["verbs"]
    policy = one(path, "ValidatingAdmissionPolicy", "cap-drill-scope")
    conditions = " ".join(c["expression"] for c in policy["spec"]["matchConditions"])
    assert "system:serviceaccount:cap:cap-drill-sa" in conditions
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert {r for rule in rules for r in rule["resources"]} == {"namespaces", "rolebindings"}
    assert all({"CREATE", "DELETE"} <= set(rule["operations"]) for rule in rules)
    checks = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "startsWith('cap-drill-')" in checks and "cap-drill-workload" in checks
    binding = one(path, "ValidatingAdmissionPolicyBinding", "cap-drill-scope")
    assert binding["spec"]["policyName"] == "cap-drill-scope"
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_cronjobs_run_the_execution_environment_image():
    tag = EE["options"]["tags"][0]
    for _, doc in cronjobs():
        main = pod_spec(doc)["containers"][0]
        assert main["image"] == tag
