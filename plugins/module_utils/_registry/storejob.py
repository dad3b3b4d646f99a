# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The job behind ``docker_registry_store``: option checks, create or remove the store, one upkeep run,
the result with ``changed`` and ``diff``.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass
from typing import Any, List, Optional

from ansible_collections.hocker.registry.plugins.module_utils._registry.upkeep import (
    StoreError, Upkeep, ensure_store, parse_age, parse_size, remove_store)


@dataclass
class StoreRequest:
    path: str
    state: str = "present"
    verify: bool = False
    prune: bool = False
    keep: Optional[List[str]] = None
    max_size: Any = None
    min_age: Any = "1h"
    check_mode: bool = False
    diff: bool = False


def store_job(request, warn=None):
    """The module's result for ``request`` (``changed`` and, when asked, ``diff`` included). It has no
    ``path`` key: exit_json would replace size and state with the directory's stat."""
    if request.state == "absent":
        return _absent(request, warn)
    return _present(request, warn)


def _absent(request, warn):
    extra = [name for name in ("verify", "prune") if getattr(request, name)] + \
        [name for name in ("keep", "max_size") if getattr(request, name) is not None]
    if extra:
        raise StoreError("%s cannot be combined with state=absent" % ", ".join(extra))
    result = {"changed": remove_store(request.path, request.check_mode, warn)}
    if request.diff:
        result["diff"] = {"before": {"path": request.path, "exists": result["changed"]},
                          "after": {"path": request.path, "exists": False}}
    return result


def _limits(request):
    """(max_size in bytes or None, min_age in seconds) of a request for state=present."""
    max_size = parse_size(request.max_size, "max_size") if request.max_size is not None else None
    min_age = parse_age(request.min_age)
    if request.keep is not None and not (request.prune or max_size is not None):
        raise StoreError("keep needs prune=true or max_size")
    return max_size, min_age


def _present(request, warn):
    max_size, min_age = _limits(request)
    created = ensure_store(request.path, request.check_mode)
    if created and request.check_mode:
        return _would_create(request, max_size)
    outcome = Upkeep(request.path, check_mode=request.check_mode, warn=warn).run(
        verify=request.verify, prune=request.prune, keep=request.keep, max_size=max_size, min_age=min_age)
    result = {"changed": bool(created or outcome["removed"] or outcome["removed_images"]
                              or outcome["removed_partials"])}
    result.update(outcome)
    if request.diff:
        result["diff"] = _upkeep_diff(request.path, created, outcome)
    return result


def _would_create(request, max_size):
    """Check mode on a store that does not exist yet: nothing there to check, prune or shrink."""
    result = dict(changed=True, removed=[], removed_images=[], removed_partials=[], corrupt=[], busy=[],
                  freed=0, size=0, size_before=0, blobs=0, images=[])
    if max_size is not None:
        result.update(max_size=max_size, fits=True)
    if request.diff:
        result["diff"] = {"before": {"path": request.path, "exists": False},
                          "after": {"path": request.path, "exists": True, "size": 0, "blobs": 0, "images": []}}
    return result


def _by_name(names):
    return sorted(names, key=lambda n: n or "")


def _upkeep_diff(path, created, outcome):
    """The store's size, blob count and image names before and after an upkeep run."""
    before = {"path": path, "exists": not created, "size": outcome["size_before"],
              "blobs": outcome["blobs"] + len(outcome["removed"]),
              "images": _by_name([i["name"] for i in outcome["images"]]
                                 + [i["name"] for i in outcome["removed_images"]])}
    after = {"size": outcome["size"], "blobs": outcome["blobs"],
             "images": _by_name([i["name"] for i in outcome["images"]]), "path": path, "exists": True}
    return {"before": before, "after": after}
