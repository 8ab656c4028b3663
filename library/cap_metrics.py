#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: CAP Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cap_metrics
short_description: Write backup metrics to a Prometheus textfile and optionally push them
description:
  - Maintains one C(.prom) file in node-exporter's textfile collector directory in the
    Prometheus text exposition format 0.0.4.
  - Reads the existing file, applies O(metrics), keeps every other metric already in the
    file and writes the whole file under a temporary name that is renamed into place, so
    node-exporter never reads a half-written file.
  - C(action=inc) adds to the existing sample with the same name and labels, starting from 0,
    so a counter such as C(cap_backup_attempts_total{status="failure"}) accumulates across
    runs. C(action=set) replaces the value.
  - The output is stable, with metrics sorted by name and samples by their sorted labels.
    Label values are escaped (backslash, double quote, newline), integers are written
    without C(.0) and other floats by repr.
  - A file that cannot be parsed is replaced, with a warning, by the new metrics alone.
  - With O(pushgateway_url), the full content of the file is then sent with HTTP PUT to
    C(<pushgateway_url>/metrics/job/<job>[/<label>/<value>...]), which replaces that group
    on the Pushgateway. The file is always written first; when the push fails the task
    fails with the URL and HTTP status, and the file already holds the new values.
version_added: "1.0.0"
author: CAP Engineering
options:
  path:
    description:
      - The C(.prom) file, for example
        C(/var/lib/prometheus/node-exporter/cap_backup.prom). Its directory must exist.
      - The file belongs to this module; anything in it that is not valid exposition format
        is discarded.
    type: path
    required: true
  metrics:
    description: Samples to set or increment.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Metric name, matching C([a-zA-Z_:][a-zA-Z0-9_:]*).
        type: str
        required: true
      help:
        description:
          - HELP text. Required the first time a metric is written; later the text in the
            file is kept unless given.
        type: str
      type:
        description: Metric type. Counter names should end in C(_total).
        type: str
        required: true
        choices: [counter, gauge]
      labels:
        description:
          - Label names and values of the sample.
          - Names match C([a-zA-Z_][a-zA-Z0-9_]*) and do not start with C(__).
        type: dict
        default: {}
      value:
        description: The number to set or add, or a numeric string such as C("1762776000").
        type: raw
        required: true
      action:
        description:
          - C(set) replaces the sample, C(inc) adds O(metrics[].value) to it (from 0 when new).
          - Counters only go up.
        type: str
        choices: [set, inc]
        default: set
  pushgateway_url:
    description:
      - Base URL of a Pushgateway, for example C(http://pushgateway.monitoring:9091).
      - Unset, nothing is pushed.
    type: str
  job:
    description: Pushgateway job name.
    type: str
    default: cap_backup
  grouping:
    description: Further grouping labels of the push URL, for example C(instance=prod-eu) as a dict.
    type: dict
    default: {}
  url_username:
    description:
      - User name for HTTP basic authentication at the Pushgateway.
      - Requires O(pushgateway_url) and O(url_password).
    type: str
  url_password:
    description:
      - Password for HTTP basic authentication at the Pushgateway.
      - Give credentials here rather than in O(pushgateway_url), so they stay out of logs.
    type: str
  force_basic_auth:
    description:
      - Send the basic authentication header with the first request instead of waiting
        for a 401.
    type: bool
    default: false
  validate_certs:
    description: Verify the Pushgateway's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the Pushgateway.
    type: int
    default: 30
  mode:
    description: File mode of the textfile. node-exporter runs as another user and must read it.
    type: raw
    default: "0644"
notes:
  - Supports check mode; the new content is computed and returned, nothing is written or pushed.
  - RV(changed) is true when the file's content changes, and whenever a push is made.
  - HTTP goes through Ansible's C(open_url), so proxy environment variables and CA settings
    behave as in other modules.
seealso:
  - module: cap_backup_lock
"""

EXAMPLES = r"""
# echo 'cap_backup_attempts_total{status="success"} N+1' > cap_backup.prom, keeping the rest
- name: Count a successful backup and record its size and time
  cap_metrics:
    path: /var/lib/prometheus/node-exporter/cap_backup.prom
    metrics:
      - name: cap_backup_attempts_total
        help: Backup runs by outcome.
        type: counter
        labels: {status: success}
        value: 1
        action: inc
      - name: cap_backup_size_bytes
        help: Size of the newest backup archive in bytes.
        type: gauge
        value: 12582912
      - name: cap_backup_last_success_timestamp
        help: Unix time of the last successful backup.
        type: gauge
        value: "{{ ansible_date_time.epoch }}"

# curl -X PUT --data-binary @cap_backup.prom \
#   http://pushgateway.monitoring:9091/metrics/job/cap_backup/instance/prod-eu
- name: Count a failure and push the file to the Pushgateway
  cap_metrics:
    path: /var/lib/prometheus/node-exporter/cap_backup.prom
    pushgateway_url: http://pushgateway.monitoring:9091
    job: cap_backup
    grouping: {instance: prod-eu}
    metrics:
      - name: cap_backup_attempts_total
        help: Backup runs by outcome.
        type: counter
        labels: {status: failure}
        value: 1
        action: inc
"""

RETURN = r"""
path:
  description: The textfile.
  type: str
  returned: always
  sample: /var/lib/prometheus/node-exporter/cap_backup.prom
samples:
  description: The sample lines of the updated metrics, as written.
  type: list
  elements: str
  returned: always
  sample: ['cap_backup_attempts_total{status="failure"} 3', 'cap_backup_size_bytes 12582912']
updates:
  description: One entry per item of O(metrics), with the value before and after.
  type: list
  elements: dict
  returned: always
  sample:
    - name: cap_backup_attempts_total
      type: counter
      labels: {status: failure}
      action: inc
      previous: 2
      value: 3
      sample: 'cap_backup_attempts_total{status="failure"} 3'
content:
  description: The full text of the file after the update.
  type: str
  returned: always
file_changed:
  description: Whether the file's content changed (or would change in check mode).
  type: bool
  returned: always
  sample: true
push_url:
  description: The Pushgateway URL the file was (or would be) sent to, without credentials.
  type: str
  returned: when O(pushgateway_url) is set
  sample: http://pushgateway.monitoring:9091/metrics/job/cap_backup/instance/prod-eu
push_status:
  description: HTTP status of the push; null in check mode.
  type: int
  returned: when O(pushgateway_url) is set
  sample: 200
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cap_fsutil import atomic_write_bytes, same_content
from ansible.module_utils.cap_metrics import (
    MetricsError,
    PushError,
    apply_updates,
    parse_text,
    push,
    push_url,
    redact_url,
    render,
)
from ansible.module_utils.urls import open_url


def read_existing(module, path):
    """The families in path, or none (with a warning) when it is missing or corrupt."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        module.fail_json(msg="cannot read metrics file %s: %s" % (path, exc.strerror))
    try:
        return parse_text(data.decode("utf-8"))
    except (UnicodeDecodeError, MetricsError) as exc:
        module.warn("metrics file %s is not valid exposition format (%s); it is replaced by "
                    "the new metrics only" % (path, exc))
        return {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            metrics=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                help=dict(type="str"),
                type=dict(type="str", required=True, choices=["counter", "gauge"]),
                labels=dict(type="dict", default={}),
                value=dict(type="raw", required=True),
                action=dict(type="str", choices=["set", "inc"], default="set"),
            )),
            # Not a secret by itself; credentials belong in url_username/url_password.
            pushgateway_url=dict(type="str", no_log=False),
            url_username=dict(type="str"),
            url_password=dict(type="str", no_log=True),
            force_basic_auth=dict(type="bool", default=False),
            job=dict(type="str", default="cap_backup"),
            grouping=dict(type="dict", default={}),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
            mode=dict(type="raw", default="0644"),
        ),
        required_by=dict(url_username="pushgateway_url", url_password="pushgateway_url"),
        required_together=[("url_username", "url_password")],
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        module.fail_json(msg="textfile directory %s of %s does not exist" % (directory, path))
    try:
        mode = int(str(p["mode"]), 8)
    except ValueError:
        module.fail_json(msg="mode must be an octal number such as 0644, got %r" % p["mode"])
    url = None
    if p["pushgateway_url"]:
        try:
            url = push_url(p["pushgateway_url"], p["job"], p["grouping"])
        except MetricsError as exc:
            module.fail_json(msg="cannot build the Pushgateway URL: %s" % exc)
    for item in p["metrics"]:
        if item["type"] == "counter" and not item["name"].endswith("_total"):
            module.warn("counter %s does not end in _total; promtool and OpenMetrics expect it"
                        % item["name"])

    existing = read_existing(module, path)
    try:
        families, applied = apply_updates(existing, p["metrics"])
    except MetricsError as exc:
        module.fail_json(msg="cannot update %s: %s" % (path, exc))
    content = render(families)
    data = content.encode("utf-8")
    file_changed = not same_content(path, data)
    result = dict(path=path, samples=[a["sample"] for a in applied], updates=applied,
                  content=content, file_changed=file_changed, changed=file_changed)
    if file_changed and not module.check_mode:
        try:
            atomic_write_bytes(path, data, mode=mode)
        except OSError as exc:
            module.fail_json(msg="cannot write metrics file %s: %s" % (path, exc.strerror))
    if url:
        result["push_url"] = redact_url(url)
        result["push_status"] = None
        result["changed"] = True
        if not module.check_mode:
            try:
                result["push_status"] = push(url, data, open_url,
                                             validate_certs=p["validate_certs"],
                                             timeout=p["timeout"],
                                             url_username=p["url_username"],
                                             url_password=p["url_password"],
                                             force_basic_auth=p["force_basic_auth"])
            except PushError as exc:
                result.update(push_status=exc.status,
                              msg="%s; the textfile %s was written%s" % (
                                  exc, path, "" if file_changed else " (unchanged)"))
                module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
