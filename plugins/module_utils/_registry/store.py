# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The blob store: an OCI image layout on disk used as a cache and as an offline source.

PRIVATE to the hocker.registry collection: may change at any time.

Layout::

    STORE/oci-layout                 {"imageLayoutVersion": "1.0.0"}
    STORE/index.json                 one entry per stored image; org.opencontainers.image.ref.name is the
                                     normalised reference it was fetched as
    STORE/blobs/sha256/<hex>         manifests, configs and layers under their registry digest
    STORE/ingest/<hex>.partial       partial downloads (resumed by the next run)
    STORE/ingest/<hex>.lock          per-blob lock files
    STORE/ingest/index.lock          lock for index.json updates

Every blob is verified before it is renamed into ``blobs/``; writers on one host serialise per blob with
``flock`` so concurrent runs never corrupt the store.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import os
import tempfile
import threading
import time

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, ManifestError, OfflineError, RegistryError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import compute, hash_file, is_digest, split
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import OCI_INDEX

REF_NAME = "org.opencontainers.image.ref.name"
FETCHED_AT = "io.hocker.registry.fetched"
CHUNK = 1024 * 1024
MAX_INDEX_SIZE = 16 * 1024 * 1024


def write_json_atomic(path, data):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".index.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(jsonutil.dumps(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class BlobStore:
    """A content-addressed store of blobs in OCI image layout form."""

    def __init__(self, path, create=True, warn=None):
        self.path = os.path.abspath(path)
        self.warn = warn or (lambda message: None)
        self._held = threading.local()
        self.blobs_dir = os.path.join(self.path, "blobs")
        self.ingest_dir = os.path.join(self.path, "ingest")
        if create:
            self.create()
        elif not os.path.isfile(os.path.join(self.path, "oci-layout")):
            raise OfflineError("%s is not a blob store (no oci-layout file)" % self.path)

    def create(self):
        for directory in (self.path, os.path.join(self.blobs_dir, "sha256"), self.ingest_dir):
            try:
                os.makedirs(directory)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
        layout = os.path.join(self.path, "oci-layout")
        if not os.path.exists(layout):
            write_json_atomic(layout, {"imageLayoutVersion": "1.0.0"})
        index = os.path.join(self.path, "index.json")
        if not os.path.exists(index):
            with self._index_lock():
                if not os.path.exists(index):
                    write_json_atomic(index, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    # ------------------------------------------------------------------ blobs
    def blob_path(self, digest):
        algorithm, hexpart = split(digest)
        return os.path.join(self.blobs_dir, algorithm, hexpart)

    def partial_path(self, digest):
        return os.path.join(self.ingest_dir, "%s.partial" % split(digest)[1])

    def has(self, digest, size=None):
        path = self.blob_path(digest)
        try:
            actual = os.path.getsize(path)
        except OSError:
            return False
        return size is None or size < 0 or actual == size

    @contextlib.contextmanager
    def lock(self, digest):
        """Exclusive per-blob lock (blocks while another process downloads the same blob)."""
        path = os.path.join(self.ingest_dir, "%s.lock" % split(digest)[1])
        with self._flock(path):
            yield

    @contextlib.contextmanager
    def _index_lock(self):
        """Exclusive lock of index.json (re-entrant within this object: a rebuild inside an update)."""
        if getattr(self._held, "index", False):
            yield
            return
        with self._flock(os.path.join(self.ingest_dir, "index.lock")):
            self._held.index = True
            try:
                yield
            finally:
                self._held.index = False

    @contextlib.contextmanager
    def _flock(self, path):
        try:
            os.makedirs(os.path.dirname(path))
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def commit(self, tmp_path, digest, verified=False):
        """Move a downloaded file into blobs/ (verifying it unless the caller already did)."""
        if not verified:
            actual, _size = hash_file(tmp_path, digest.split(":", 1)[0])
            if actual != digest:
                os.unlink(tmp_path)
                raise DigestMismatch("blob %s hashes to %s" % (digest, actual))
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, self.blob_path(digest))
        return self.blob_path(digest)

    def put_bytes(self, data, digest):
        """Store a small blob (manifest, config) that was already verified."""
        if self.has(digest, len(data)):
            return self.blob_path(digest)
        fd, tmp = tempfile.mkstemp(dir=self.ingest_dir, prefix=".put.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return self.commit(tmp, digest, verified=True)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_bytes(self, digest, limit=4 * 1024 * 1024):
        """A small stored blob, verified; None when absent; a corrupt one is removed and None returned."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except (IOError, OSError):
            return None
        algorithm = digest.split(":", 1)[0]
        if len(data) > limit or compute(data, algorithm) != digest:
            self.remove_blob(digest)
            return None
        self.touch(digest)
        return data

    def remove_blob(self, digest):
        try:
            os.unlink(self.blob_path(digest))
        except OSError:
            pass

    def touch(self, digest):
        """Record a use (for least-recently-used eviction)."""
        try:
            os.utime(self.blob_path(digest), None)
        except OSError:
            pass

    # ------------------------------------------------------------------ index.json
    @staticmethod
    def _empty_index():
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

    def read_index(self):
        """index.json as a dict whose ``manifests`` holds only JSON objects; a missing file is an empty
        index, a damaged one is rebuilt from the stored manifests (see ``_rebuild_index``)."""
        path = os.path.join(self.path, "index.json")
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_INDEX_SIZE + 1)
        except (IOError, OSError):
            return self._empty_index()
        try:
            data = jsonutil.loads(raw, "the blob store's index %s" % path, limit=MAX_INDEX_SIZE)
            if not isinstance(data.get("manifests"), list):
                raise ManifestError("the blob store's index %s has no manifests list" % path)
        except ManifestError as exc:
            return self._rebuild_index(str(exc))
        data["manifests"] = [m for m in data["manifests"] if isinstance(m, dict)]
        return data

    def _rebuild_index(self, reason):
        """Replace a damaged index.json: the stored images that nothing else refers to become unnamed
        entries again (their names are lost; the next online run names them again), and the damaged file is
        kept as index.json.damaged."""
        path = os.path.join(self.path, "index.json")
        with self._index_lock():
            entries = self._top_level_manifests()
            index = self._empty_index()
            index["manifests"] = entries
            try:
                os.replace(path, path + ".damaged")
            except OSError:
                pass
            write_json_atomic(path, index)
        self.warn("%s; it was rebuilt from the %d stored image(s) and the damaged file kept as %s.damaged "
                  "(image names are restored by the next run that fetches them)" % (reason, len(entries), path))
        return index

    def _top_level_manifests(self):
        """Descriptors of the stored manifests and indexes no stored index refers to."""
        from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import parse_manifest
        found = {}
        referenced = set()
        directory = os.path.join(self.blobs_dir, "sha256")
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            digest = "sha256:" + name
            if not is_digest(digest) or os.path.getsize(os.path.join(directory, name)) > MAX_INDEX_SIZE:
                continue
            raw = self.read_bytes(digest, MAX_INDEX_SIZE)
            if not raw or raw[:1] != b"{":
                continue
            try:
                manifest = parse_manifest(raw, None, digest, "stored blob %s" % digest)
            except RegistryError:
                continue
            found[digest] = manifest.descriptor()
            referenced.update(m.get("digest") for m in manifest.manifests)
        return [d for digest, d in sorted(found.items()) if digest not in referenced]

    def record_image(self, name, descriptor):
        """Name ``descriptor`` (of a stored manifest) as ``name`` in index.json (replacing an older entry)."""
        entry = {"mediaType": descriptor["mediaType"], "digest": descriptor["digest"], "size": descriptor["size"],
                 "annotations": {REF_NAME: name, FETCHED_AT: str(int(time.time()))}}
        with self._index_lock():
            index = self.read_index()
            manifests = [m for m in index["manifests"] if _ref_name(m) != name]
            manifests.append(entry)
            manifests.sort(key=lambda m: (_ref_name(m) or "", str(m.get("digest", ""))))
            index["manifests"] = manifests
            write_json_atomic(os.path.join(self.path, "index.json"), index)

    def lookup_image(self, name):
        """The stored descriptor named ``name``, or None."""
        for entry in self.read_index()["manifests"]:
            if _ref_name(entry) == name:
                return entry
        return None


def _ref_name(entry):
    value = jsonutil.get_dict(entry, "annotations").get(REF_NAME)
    return value if isinstance(value, str) else None
