# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The OCI image layout directory writer.

PRIVATE to the hocker.registry collection: may change at any time.

``write_dir(dest, members, move_from=None)``: the members of a plan as files: blobs first, ``oci-layout`` and
``index.json`` last (a half-written directory has no index.json). Files inside ``move_from`` (the caller's
work files) are renamed into place instead of copied. Every file and directory is fsynced.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hocker.registry.plugins.module_utils._registry.destination import fsync_dir
from ansible_collections.hocker.registry.plugins.module_utils._registry.layout import ArchiveError
from ansible_collections.hocker.registry.plugins.module_utils._registry.tarwriter import Counter, CopySink


def _inside(path, directory):
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == os.path.abspath(directory)
    except ValueError:
        return False


def write_dir(dest, members, move_from=None):
    """Write the plan's ``members`` into the directory ``dest`` (see the module docstring); returns the
    bytes written. ``dest`` is private to the caller (a staged directory swapped into place afterwards), so
    files are written in place and fsynced, not renamed."""
    written = 0
    if not os.path.isdir(dest):
        os.makedirs(dest)
    # blobs first, index.json last: a half-written directory has no index.json
    ordered = [m for m in members if m[0].startswith("blobs/")] + \
        [m for m in members if m[0] == "oci-layout"] + [m for m in members if m[0] == "index.json"]
    directories = [dest]
    for name, data, path, size in ordered:
        target = os.path.join(dest, name)
        if size is None:
            if not os.path.isdir(target):
                os.mkdir(target)
            os.chmod(target, 0o755)
            directories.append(target)
        elif data is None and move_from and isinstance(path, str) and _inside(path, move_from):
            written += _move_into(path, target, size)
        else:
            written += _write_file(target, data, path, size)
    for directory in reversed(directories):
        fsync_dir(directory)
    return written


def _move_into(path, target, size):
    """A work file of the caller's, renamed into place instead of copied."""
    if _size_of(path) != size:
        raise ArchiveError("layer file %s has %d bytes, %d expected" % (path, _size_of(path), size))
    os.chmod(path, 0o644)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    os.rename(path, target)
    return size


def _write_file(target, data, path, size):
    with open(target, "wb", buffering=0) as out:
        counter = Counter(out)
        sink = CopySink(counter, out.fileno())
        if data is not None:
            sink.write(data)
        else:
            sink.copy_file(path, size)
        os.fsync(out.fileno())
    os.chmod(target, 0o644)
    return counter.written


def _size_of(path):
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ArchiveError("cannot read layer file %s: %s" % (path, exc.strerror))
