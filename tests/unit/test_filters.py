"""The cap_sha3, cap_etag and cap_canonical_json filters, directly and inside a play."""

import hashlib
import json
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from filter_plugins.cap_filters import cap_canonical_json, cap_etag, cap_sha3
from tests.conftest import ROOT, VENV_BIN, ansible_env


def test_filters_directly():
    assert cap_sha3("abc") == "0x" + hashlib.sha3_256(b"abc").hexdigest()
    assert cap_etag("0x0afcb402e74ff6a11601863fc4ae2f2d756124db71bc703f5889ecefcd371ff4") == '"0afcb402e74ff6a1"'
    assert cap_canonical_json({"b": 2, "a": [1, "x"]}) == '{"a":[1,"x"],"b":2}'


@pytest.mark.parametrize("call", [lambda: cap_sha3({"a": 1}), lambda: cap_etag("nothex"),
                                  lambda: cap_canonical_json({"f": 0.5})])
def test_filters_fail_with_a_message(call):
    with pytest.raises(AnsibleFilterError):
        call()


def test_filters_in_a_play(tmp_path):
    play = tmp_path / "play.yml"
    play.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ policy | cap_canonical_json }}|{{ policy | cap_canonical_json | cap_sha3 }}|{{ policy | cap_canonical_json | cap_sha3 | cap_etag }}"
      vars:
        policy: {name: "Lieferkette", rules: [{id: r1, max: 3}], version: "1.0.0"}
""")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    msg = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    text, digest, etag = msg.split("|")
    assert text == '{"name":"Lieferkette","rules":[{"id":"r1","max":3}],"version":"1.0.0"}'
    assert digest == "0x" + hashlib.sha3_256(text.encode()).hexdigest()
    assert etag == '"%s"' % digest[2:18]
