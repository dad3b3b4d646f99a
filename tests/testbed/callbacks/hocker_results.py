# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""A callback for the tests: every task result of a playbook run as one JSON line in $HOCKER_RESULTS_FILE.

Enabled by tests/testbed/sshd.py's ``run_playbook`` (ANSIBLE_CALLBACK_PLUGINS points at this folder).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: hocker_results
type: aggregate
short_description: Write every task result as a JSON line (test bed only)
description:
  - Appends C({host, task, action, status, result}) for every task result to the file named by the
    environment variable C(HOCKER_RESULTS_FILE).
requirements:
  - the environment variable C(HOCKER_RESULTS_FILE)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hocker_results"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        path = os.environ.get("HOCKER_RESULTS_FILE")
        if not path:
            return
        record = {"host": result._host.get_name(), "task": result._task.get_name(),
                  "action": result._task.action, "status": status,
                  "result": self._clean(result._result)}
        with open(path, "a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def _clean(self, value):
        try:
            return json.loads(json.dumps(value, default=str))
        except (TypeError, ValueError):
            return {"unserialisable": str(value)}

    def v2_runner_on_ok(self, result):
        self._write(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._write(result, "unreachable")

    def v2_runner_item_on_ok(self, result):
        self._write(result, "item_ok")

    def v2_runner_item_on_failed(self, result):
        self._write(result, "item_failed")
