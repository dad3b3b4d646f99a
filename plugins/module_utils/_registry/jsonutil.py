# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The one way this collection reads JSON: size and depth caps, type checks, one error class per caller.

PRIVATE to the hocker.registry collection: may change at any time.

Everything parsed here may be hostile (registry answers, token answers, files a user or another run left
behind), so ``loads`` never lets ``RecursionError``, ``UnicodeDecodeError`` or a wrong top-level type through:
it raises the caller's error class with a message naming ``what`` was read.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError

MAX_SIZE = 4 * 1024 * 1024
MAX_DEPTH = 64

_TYPE_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}


def depth(value, limit=MAX_DEPTH):
    """Nesting depth of a parsed JSON value (containers only), counted without recursion; stops past
    ``limit``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def loads(raw, what, error=ManifestError, limit=MAX_SIZE, max_depth=MAX_DEPTH, expect=dict):
    """Parse ``raw`` (bytes or str) as JSON; raise ``error`` with a clear message otherwise.

    ``expect``: the type the top-level value must have (None: any). ``limit``: bytes at most.
    """
    if raw is None:
        raise error("%s is empty" % what)
    if len(raw) > limit:
        raise error("%s is larger than the %d byte limit" % (what, limit))
    try:
        text = bytes(raw).decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    except UnicodeDecodeError:
        raise error("%s is not UTF-8 text" % what)
    try:
        value = json.loads(text)
    except RecursionError:
        raise error("%s is nested too deeply (more than %d levels)" % (what, max_depth))
    except ValueError as exc:
        raise error("%s is not valid JSON: %s" % (what, _short(exc)))
    if expect is not None and not isinstance(value, expect):
        raise error("%s is not %s" % (what, _TYPE_NAMES.get(expect, expect.__name__)))
    if isinstance(value, (dict, list)) and depth(value, max_depth) > max_depth:
        raise error("%s is nested too deeply (more than %d levels)" % (what, max_depth))
    return value


def get_dict(container, key):
    """``container[key]`` when both are JSON objects, else an empty dict (annotations, platform, ...)."""
    if not isinstance(container, dict):
        return {}
    value = container.get(key)
    return value if isinstance(value, dict) else {}


def get_list(container, key):
    """``container[key]`` when it is a JSON array, else an empty list."""
    if not isinstance(container, dict):
        return []
    value = container.get(key)
    return value if isinstance(value, list) else []


def dumps(obj):
    """Canonical bytes: sorted keys, compact separators, UTF-8 (deterministic output files)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _short(exc):
    return str(exc)[:200]
