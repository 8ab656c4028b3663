"""Conventions every role keeps: documented defaults, complete argument specs, no_log on secrets."""

import glob
import os
import re

import pytest
import yaml

from tests.conftest import ROOT

ROLES = sorted(os.path.basename(p) for p in glob.glob(str(ROOT / "roles" / "*")) if os.path.isdir(p))
SECRET_MODULES = ("community.hashi_vault.", "cap_secret_file")
SECRET_ARGS = ("private_key", "secret_key", "token", "key", "encryption_key", "content_base64", "password")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's !unsafe and !vault tags as plain strings."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
_Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def load(path):
    with open(path) as handle:
        return yaml.load(handle, Loader=_Loader) or {}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_argument_specs(role):
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), (
        "defaults only: %s; specs only: %s" % (sorted(set(defaults) - set(options)),
                                                sorted(set(options) - set(defaults))))
    for name, option in options.items():
        assert option.get("description"), "%s has no description" % name
        assert option.get("type"), "%s has no type" % name


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_prefixed_and_commented(role):
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    lines = open(path).read().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^([a-z_0-9]+):", line)
        if not match:
            continue
        assert match.group(1).startswith(role + "_"), "%s is not prefixed with %s_" % (match.group(1), role)
        above = lines[index - 1] if index else ""
        assert above.startswith("#"), "%s in %s has no comment above it" % (match.group(1), path)


def _tasks(node):
    """Every task dict in a task file, blocks included."""
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            if key in node:
                yield from _tasks(node[key])


def _module_of(task):
    for key in task:
        if key.startswith(("ansible.", "community.", "amazon.", "kubernetes.", "awx.", "cap_")):
            return key
    return None


def test_tasks_that_touch_secrets_have_no_log():
    offenders = []
    for path in glob.glob(str(ROOT / "roles" / "*" / "tasks" / "**" / "*.yml"), recursive=True):
        for task in _tasks(load(path)):
            module = _module_of(task)
            if module is None:
                continue
            args = task.get(module) if isinstance(task.get(module), dict) else {}
            secret = module.startswith(SECRET_MODULES) and not module.endswith(("vault_read",)) or any(
                name in args and name not in ("key_file",) for name in SECRET_ARGS)
            if module == "cap_secret_file" and args.get("state") == "absent":
                secret = False
            if secret and task.get("no_log") is not True:
                offenders.append("%s: %s" % (os.path.relpath(path, ROOT), task.get("name")))
    assert not offenders, "tasks handling secrets without no_log: true:\n" + "\n".join(offenders)


def test_every_role_has_meta_and_a_table_of_contents():
    for role in ROLES:
        base = ROOT / "roles" / role
        assert (base / "meta" / "main.yml").is_file(), role
        assert (base / "tasks" / "main.yml").is_file(), role
        assert (base / "defaults" / "main.yml").is_file(), role
