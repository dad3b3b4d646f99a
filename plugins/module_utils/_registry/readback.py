# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Reading back what was written: the index.json and origin record of an archive or OCI layout.

PRIVATE to the hocker.registry collection: may change at any time.

``read_index(path)`` / ``read_origin(path)``: the parsed ``index.json`` of an archive (plain or gzip; only its
first members are read) or of an oci-dir, and the origin record in it; None when the path is missing,
unreadable or not written by this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import gzip
import os
import tarfile
import zlib

from ansible_collections.hocker.registry.plugins.module_utils._registry import digest as digests
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError
from ansible_collections.hocker.registry.plugins.module_utils._registry.jsonutil import get_dict, loads
from ansible_collections.hocker.registry.plugins.module_utils._registry.layout import ORIGIN_ANNOTATION

MAX_INDEX_SIZE = 4 * 1024 * 1024


def parse_index(data):
    try:
        return loads(data, "index.json", limit=MAX_INDEX_SIZE)
    except ManifestError:
        return None


def read_index_bytes(path):
    """The bytes of index.json of an archive (plain or gzip; only its first members are read) or of an
    oci-dir, or None when there is none that fits in MAX_INDEX_SIZE."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "index.json"), "rb") as f:
                data = f.read(MAX_INDEX_SIZE + 1)
            return data if len(data) <= MAX_INDEX_SIZE else None
        with open(path, "rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
            try:
                return _index_member(stream)
            finally:
                if stream is not raw:
                    stream.close()
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return None


def _index_member(stream):
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for count, member in enumerate(tar):
            if member.name == "index.json" and member.isfile():
                if member.size > MAX_INDEX_SIZE:
                    return None
                return tar.extractfile(member).read()
            if member.name.startswith("blobs/") or count > 8:
                return None
    return None


def read_index(path):
    """Return the parsed index.json of an archive or oci-dir, or None (see the module docstring)."""
    data = read_index_bytes(path)
    return parse_index(data) if data is not None else None


def origin_of(index):
    """The origin record in a parsed index.json, or None."""
    value = get_dict(index, "annotations").get(ORIGIN_ANNOTATION)
    if not isinstance(value, str):
        return None
    try:
        return loads(value, "the origin record")
    except ManifestError:
        return None


def read_origin(path):
    """Return the origin dict recorded in an archive or oci-dir, or None (see the module docstring)."""
    index = read_index(path)
    return origin_of(index) if index else None


# ---------------------------------------------------------------------------------------------------------
# integrity of an existing output
# ---------------------------------------------------------------------------------------------------------
STAMP_ATTR = "user.hocker.registry"
_BLOCK = 512


def _stamp_value(path):
    info = os.stat(path)
    return ("v1 %d %d" % (info.st_size, info.st_mtime_ns)).encode("ascii")


def stamp(paths):
    """Record the size and mtime of each file in an extended attribute (skipped where the file system has
    none): a later run that finds them unchanged knows the file was not written since."""
    for path in paths:
        try:
            os.setxattr(path, STAMP_ATTR, _stamp_value(path))
        except (OSError, AttributeError):
            return


def stamps_state(paths):
    """``ok`` (every file carries its stamp), ``unsupported`` (the file system keeps no extended attributes:
    only the structure can be checked) or ``changed`` (a file was written since, or has no stamp)."""
    for path in paths:
        try:
            if os.getxattr(path, STAMP_ATTR) != _stamp_value(path):
                return "changed"
        except AttributeError:
            return "unsupported"
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
                return "unsupported"
            return "changed"
    return "ok"


def _record_members(record):
    members = record.get("members") if isinstance(record, dict) else None
    if not isinstance(members, list) or not all(
            isinstance(m, list) and len(m) == 3 and isinstance(m[0], str) for m in members):
        return None
    return members


def _padded(size):
    return size + (-size % _BLOCK)


def tar_size(members, index_size):
    """The size of the tar written for ``members`` (index.json of ``index_size`` bytes second)."""
    total = _BLOCK + _padded(index_size) + 2 * _BLOCK
    for _name, size, _digest in members:
        total += _BLOCK + (_padded(size) if size is not None else 0)
    return total


def check_output(path, fmt, compression, index_bytes, record, full=False, restamp=True):
    """None when the archive or OCI directory at ``path`` is intact against ``record`` (its origin record),
    else the reason. The cheap check compares the structure (every member's name and size, the total size)
    and the stamps; a file changed since it was stamped, or ``full``, re-hashes everything (and, ``restamp``,
    stamps the files found intact once more)."""
    members = _record_members(record)
    if members is None:
        return "it carries no member list (written by an older version)"
    try:
        if fmt == "oci-dir":
            files = [os.path.join(path, "index.json")] + [os.path.join(path, m[0]) for m in members if m[1] is not None]
            reason = _check_dir(path, members)
        else:
            files = [path]
            reason = _check_archive(path, compression, members, len(index_bytes))
        if reason is None and (full or stamps_state(files) == "changed"):
            reason = _verify(path, fmt, compression, members)
            if reason is None and restamp:
                stamp(files)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        return "it cannot be read (%s)" % (getattr(exc, "strerror", None) or exc)
    return reason


def _check_dir(path, members):
    for name, size, _digest in members:
        target = os.path.join(path, name)
        if size is None:
            if not os.path.isdir(target):
                return "the directory %s is missing" % name
        elif not os.path.isfile(target) or os.path.islink(target):
            return "%s is missing" % name
        elif os.path.getsize(target) != size:
            return "%s has %d bytes instead of %d" % (name, os.path.getsize(target), size)
    return None


def _check_archive(path, compression, members, index_size):
    expected = tar_size(members, index_size)
    actual = os.path.getsize(path)
    if compression == "gzip":
        if actual < 18:
            return "it is truncated"
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            isize = int.from_bytes(handle.read(4), "little")
        return None if isize == expected % (1 << 32) else "it is truncated or damaged (gzip trailer)"
    if actual != expected:
        return "it has %d bytes instead of %d (truncated or damaged)" % (actual, expected)
    with tarfile.open(path, "r:") as tar:
        found = [(m.name, m.size if m.isfile() else None) for m in tar.getmembers() if m.name != "index.json"]
    wanted = [(name.rstrip("/"), size) for name, size, _digest in members]
    if found != wanted:
        return "its members differ from those it was written with"
    return None


def _verify(path, fmt, compression, members):
    """Re-hash every member: blobs must hash to their names, metadata to the recorded digests."""
    if fmt == "oci-dir":
        for name, size, digest in members:
            if size is not None:
                reason = _verify_member(name, digest, _hash_file(os.path.join(path, name), name))
                if reason:
                    return reason
        return None
    wanted = list(members)
    opened = gzip.open(path, "rb") if compression == "gzip" else open(path, "rb")
    with opened as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name == "index.json":
                continue
            if not wanted or wanted[0][0].rstrip("/") != member.name:
                return "its members differ from those it was written with"
            name, _size, digest = wanted.pop(0)
            if member.isfile():
                reason = _verify_member(name, digest, _hash_stream(tar.extractfile(member), name))
                if reason:
                    return reason
    return "it ends early" if wanted else None


def _verify_member(name, recorded, actual):
    expected = recorded or ("sha256:" + name.rsplit("/", 1)[-1] if name.startswith("blobs/sha256/") else None)
    if expected is not None and actual != expected:
        return "%s does not match its digest" % name
    return None


def _hash_file(path, name):
    with open(path, "rb") as handle:
        return _hash_stream(handle, name)


def _hash_stream(handle, _name):
    return digests.hash_stream(handle)[0]
