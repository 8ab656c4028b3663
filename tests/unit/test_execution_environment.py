"""execution-environment.yml, bindep.txt and requirements.yml.

`ansible-builder create` only renders a build context (Containerfile, requirement files,
the project copy); it needs no container engine, so it runs here with a PATH that holds no
tool at all. The image itself is built where podman or docker exists (docs/awx.md).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_builder.ee_schema import validate_schema
from bindep.depends import Depends

from tests.conftest import ROOT, VENV_BIN

EE_FILE = ROOT / "execution-environment.yml"
EE = yaml.safe_load(EE_FILE.read_text())
PROJECT_IN_IMAGE = "/runner/project"


def requirements_txt_pins():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The build context, rendered offline with no container engine reachable."""
    out = tmp_path_factory.mktemp("ee") / "context"
    empty_bin = tmp_path_factory.mktemp("empty-bin")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-builder"), "create", "-f", str(EE_FILE), "--context", str(out),
         "--output-filename", "Containerfile", "-v1"],
        cwd=ROOT, env={"PATH": str(empty_bin), "HOME": str(out.parent), "LANG": "C.UTF-8"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_schema_is_valid_for_ansible_builder_v3():
    definition = yaml.safe_load(EE_FILE.read_text())
    assert definition["version"] == 3
    validate_schema(definition)


def test_create_renders_the_build_context(context):
    build = context / "_build"
    assert (context / "Containerfile").is_file()
    for name in ("requirements.yml", "requirements.txt", "bindep.txt"):
        assert (build / name).is_file(), name
    assert yaml.safe_load((build / "requirements.yml").read_text()) == \
        yaml.safe_load((ROOT / "requirements.yml").read_text())
    assert (build / "requirements.txt").read_text().split() == EE["dependencies"]["python"]


def test_containerfile_has_the_expected_steps(context):
    text = (context / "Containerfile").read_text()
    base = EE["images"]["base_image"]["name"]
    assert 'ARG EE_BASE_IMAGE="%s"' % base in text
    assert "FROM $EE_BASE_IMAGE AS base" in text
    assert 'ARG PYCMD="/usr/bin/python3.11"' in text
    assert 'ARG PKGMGR="/usr/bin/dnf"' in text
    assert "ansible-core==2.19.14" in text and "ansible-runner==" in text
    assert "ansible-galaxy collection install" in text and "-r requirements.yml" in text
    assert "RUN /output/scripts/assemble" in text
    assert "RUN /output/scripts/install-from-bindep" in text
    assert re.search(r"ARG HELM_VERSION=\d+\.\d+\.\d+", text)
    helm = next(line for line in text.splitlines() if "get.helm.sh" in line)
    assert 'sha256sum -c' in helm and "install -m 0755" in helm and "/usr/local/bin/helm" in helm
    assert "kubectl version --client" in helm
    assert "COPY _build/project %s" % PROJECT_IN_IMAGE in text
    final = text[text.index("FROM base AS final"):]
    # The project lands before the image drops to its unprivileged user.
    assert final.index("COPY _build/project") < final.index("USER 1000")
    assert "WORKDIR /runner" in final


def test_the_project_is_copied_without_dev_files(context):
    project = context / "_build" / "project"
    for needed in ("ansible.cfg", "scripts/backup.sh", "playbooks/backup.yml",
                   "roles/cap_backup/tasks/main.yml", "library", "module_utils",
                   "filter_plugins", "inventories"):
        assert (project / needed).exists(), needed
    for unwanted in (".venv", ".git", "tests", "sandbox", ".sandbox", "bench"):
        assert not (project / unwanted).exists(), unwanted


def test_cronjobs_use_the_project_path_of_the_image(context):
    docs = []
    for path in sorted((ROOT / "k8s").glob("cronjob-*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "CronJob"]
    assert docs
    for doc in docs:
        container = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == EE["options"]["tags"][0]
        command = container["command"][0]
        if command.startswith("/"):
            assert command.startswith(PROJECT_IN_IMAGE + "/")
            relative = Path(command).relative_to(PROJECT_IN_IMAGE)
            assert (context / "_build" / "project" / relative).is_file(), command
        else:
            assert container["workingDir"] == PROJECT_IN_IMAGE
            assert (context / "_build" / "project" / container["args"][0]).parent.is_dir()


def test_image_label_matches_the_tag():
    tag = EE["options"]["tags"][0]
    label = next(step for step in EE["additional_build_steps"]["append_final"]
                 if step.startswith("LABEL"))
    version = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', label).group(1)
    assert tag.endswith(":" + version)


def test_python_dependencies_are_pinned_as_in_requirements_txt():
    pins = requirements_txt_pins()
    for requirement in EE["dependencies"]["python"]:
        name, version = requirement.split("==")
        assert pins.get(name.lower().replace("_", "-")) == version, requirement
    core = EE["dependencies"]["ansible_core"]["package_pip"]
    assert core == "ansible-core==" + pins["ansible-core"]


def test_requirements_yml_pins_the_collections_ansible_ships():
    import ansible_collections

    wanted = {"kubernetes.core", "community.hashi_vault", "amazon.aws", "community.aws",
              "ansible.posix", "awx.awx", "community.general"}
    collections = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    assert {c["name"] for c in collections} == wanted
    roots = [Path(p) for p in ansible_collections.__path__]
    for collection in collections:
        namespace, name = collection["name"].split(".")
        manifest = next(r / namespace / name / "MANIFEST.json" for r in roots
                        if (r / namespace / name / "MANIFEST.json").is_file())
        installed = json.loads(manifest.read_text())["collection_info"]["version"]
        assert collection["version"] == installed, collection["name"]


def test_bindep_lists_the_system_packages():
    depends = Depends((ROOT / "bindep.txt").read_text())
    rpm = {rule[0] for rule in depends.active_rules(["platform:rpm"])}
    dpkg = {rule[0] for rule in depends.active_rules(["platform:dpkg"])}
    assert rpm == {"sqlite", "openssl", "curl-minimal", "git-core", "tar", "gzip"}
    assert dpkg == {"sqlite3", "openssl", "curl", "git", "tar", "gzip"}
    assert EE["dependencies"]["system"] == "bindep.txt"
