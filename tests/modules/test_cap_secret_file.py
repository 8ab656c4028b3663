"""cap_secret_file run through Ansible: raw bytes, owner-only modes, honest changed, no leaks."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess

import pytest

from tests.conftest import ROOT, VENV_BIN, ansible_env

# Raw key bytes that are not text: NUL, high bytes, a newline, as a decoded Vault value can be.
SECRET = bytes([0x00, 0xff, 0x0a, 0x80]) + bytes(range(0x20, 0x3c))
SECRET_B64 = base64.b64encode(SECRET).decode("ascii")


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def leaked(run, *values):
    """Values that appear in the raw ansible output of a run."""
    text = run.proc.stdout + run.proc.stderr
    return [v for v in values if v in text]


def test_writes_the_exact_bytes_0600_and_is_idempotent(module, tmp_path):
    dest = tmp_path / "company.ed25519"
    first = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64))
    assert not first.failed, first.msg
    assert first.changed
    assert dest.read_bytes() == SECRET
    assert mode_of(dest) == 0o600
    assert first["size_bytes"] == len(SECRET) and first["dest"] == str(dest) and first["mode"] == "0600"
    again = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64))
    assert not again.failed and not again.changed
    assert leaked(first, SECRET_B64, SECRET.hex()) == []
    assert leaked(again, SECRET_B64, SECRET.hex()) == []
    assert [n for n in os.listdir(str(tmp_path)) if n != "company.ed25519"] == []


def test_wrapped_base64_as_vault_prints_it(module, tmp_path):
    dest = tmp_path / "key"
    wrapped = "\n".join(SECRET_B64[i:i + 8] for i in range(0, len(SECRET_B64), 8)) + "\n"
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=wrapped))
    assert not res.failed, res.msg
    assert dest.read_bytes() == SECRET


def test_changed_content_and_mode(module, tmp_path):
    dest = tmp_path / "key"
    dest.write_bytes(b"old key bytes")
    dest.chmod(0o600)
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64))
    assert res.changed and dest.read_bytes() == SECRET
    ro = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64, mode="0400"))
    assert ro.changed and mode_of(dest) == 0o400 and dest.read_bytes() == SECRET
    assert not module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64, mode="0400")).changed
    # A YAML octal number arrives as an int.
    back = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64, mode=0o600))
    assert back.changed and mode_of(dest) == 0o600
    other = base64.b64encode(b"a different key, same length!!!!").decode("ascii")
    replaced = module("cap_secret_file", dict(dest=str(dest), content_base64=other))
    assert replaced.changed and dest.read_bytes() == b"a different key, same length!!!!"


def test_a_readable_file_is_tightened(module, tmp_path):
    dest = tmp_path / "key"
    dest.write_bytes(SECRET)
    dest.chmod(0o644)
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64))
    assert res.changed and mode_of(dest) == 0o600


def test_absent_removes_and_is_idempotent(module, tmp_path):
    dest = tmp_path / "key"
    dest.write_bytes(SECRET)
    res = module("cap_secret_file", dict(dest=str(dest), state="absent"))
    assert not res.failed and res.changed and not dest.exists()
    assert res["size_bytes"] == 0
    again = module("cap_secret_file", dict(dest=str(dest), state="absent"))
    assert not again.failed and not again.changed


def test_check_mode_changes_nothing(module, tmp_path):
    dest = tmp_path / "key"
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64), check=True)
    assert not res.failed and res.changed
    assert not dest.exists() and os.listdir(str(tmp_path)) == []
    dest.write_bytes(SECRET)
    dest.chmod(0o600)
    assert not module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64), check=True).changed
    gone = module("cap_secret_file", dict(dest=str(dest), state="absent"), check=True)
    assert gone.changed and dest.read_bytes() == SECRET
    tighter = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64, mode="0400"), check=True)
    assert tighter.changed and mode_of(dest) == 0o600


def test_a_symlink_is_replaced_not_followed(module, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"must stay")
    dest = tmp_path / "key"
    dest.symlink_to(target)
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64))
    assert res.changed
    assert not dest.is_symlink() and dest.read_bytes() == SECRET
    assert target.read_bytes() == b"must stay"


@pytest.mark.parametrize("mode", ["0644", "0640", "0700", "0666", "rw", 0o644])
def test_modes_other_than_owner_only_are_refused(module, tmp_path, mode):
    dest = tmp_path / "key"
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=SECRET_B64, mode=mode))
    assert res.failed
    assert "use 0600 or 0400" in res.msg and str(dest) in res.msg
    assert not dest.exists()


def test_bad_input_fails_without_echoing_it(module, tmp_path):
    dest = tmp_path / "key"
    bad = "this-is-not*base64=="
    res = module("cap_secret_file", dict(dest=str(dest), content_base64=bad))
    assert res.failed and "not valid base64" in res.msg and str(dest) in res.msg
    assert leaked(res, bad) == []
    assert "content_base64" in module("cap_secret_file", dict(dest=str(dest))).msg
    nodir = module("cap_secret_file", dict(dest=str(tmp_path / "missing" / "key"), content_base64=SECRET_B64))
    assert nodir.failed and "does not exist" in nodir.msg
    assert module("cap_secret_file", dict(dest=str(tmp_path), content_base64=SECRET_B64)).failed


def test_verbose_playbook_output_never_shows_the_secret(tmp_path):
    dest = tmp_path / "company.ed25519"
    playbook = tmp_path / "write.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"vault_value": SECRET_B64},
        "tasks": [
            {"name": "Write", "cap_secret_file": {"dest": str(dest), "content_base64": "{{ vault_value }}"}},
            {"name": "Write again", "cap_secret_file": {"dest": str(dest), "content_base64": "{{ vault_value }}"},
             "register": "again"},
            {"name": "Remove", "cap_secret_file": {"dest": str(dest), "state": "absent"}},
        ],
    }]))
    # The human-readable output an operator sees, at -vvv.
    env = ansible_env(ANSIBLE_STDOUT_CALLBACK="default")
    env.pop("ANSIBLE_CALLBACKS_ENABLED")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-vvv",
                           str(playbook)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "changed=2" in output
    for value in (SECRET_B64, SECRET.hex(), SECRET[4:].decode("ascii")):
        assert value not in output
    assert not dest.exists()


def test_ansible_doc_renders():
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "cap_secret_file"], cwd=ROOT,
                          env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "content_base64" in proc.stdout
