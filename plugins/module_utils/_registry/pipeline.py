# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Fetch every layer of one or more images, in parallel, into a destination (``imagedest``).

PRIVATE to the hocker.registry collection: may change at any time.

One path per layer: its bytes come from the blob store when it holds them, else from the registry
(resumably: into the store's ingest folder, or into the work directory without a store); uncompressed
layers go through an ``Unpacker`` (decompressed on the fly, checked against the diff_id, bounded against
bombs and full disks) into ``destination.writer(diff_id)``; compressed layers are streamed to
``destination.writer(digest)`` or handed over as complete files with ``destination.add_file``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading

from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import GZIP, NONE, detect
from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import file_digest, hexpart
from ansible_collections.hocker.registry.plugins.module_utils._registry.download import (
    download, fetch_to_store, foreign_urls)
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DiffIdMismatch
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import (
    DEFAULT_INFLATION_RATIO, InflateBounds, Unpacker, copy_into, decompress_stream)


class FetchOptions:
    """How layers are fetched: ``max_workers`` in parallel, gzip ``inflater`` (auto|zlib),
    ``max_inflation_ratio`` (0: no ratio bound)."""

    def __init__(self, max_workers=4, inflater="auto", max_inflation_ratio=DEFAULT_INFLATION_RATIO,
                 compute_diff_ids=False):
        self.max_workers = max(1, int(max_workers or 1))
        self.inflater = inflater
        self.max_inflation_ratio = max_inflation_ratio
        # a layer whose diff_id is None (a schema 1 image's) gets it computed, also when kept compressed
        self.compute_diff_ids = compute_diff_ids


class FetchedLayer:
    """A fetched layer: its ``diff_id`` (computed where it was None and asked for) and blob ``size``."""

    def __init__(self, descriptor, diff_id, from_cache, resumed, size=None):
        self.descriptor = descriptor
        self.diff_id = diff_id
        self.from_cache = from_cache
        self.resumed = resumed
        self.size = size if size is not None else descriptor.get("size")


class LayerFetcher:
    """Fetches one layer into ``destination`` (see the module docstring)."""

    def __init__(self, client, store, destination, work, uncompressed, options, cancel):
        self.client = client
        self.store = store
        self.destination = destination
        self.work = work
        self.uncompressed = uncompressed
        self.options = options
        self.cancel = cancel

    def fetch(self, descriptor, diff_id):
        if self.uncompressed:
            return self._unpacked(descriptor, diff_id)
        return self._raw(descriptor, diff_id)

    def _stored(self, descriptor):
        return self.store is not None and self.store.has(descriptor["digest"], descriptor.get("size"))

    def _partial(self, digest):
        return self.work.path(hexpart(digest) + ".partial")

    def _raw(self, descriptor, diff_id):
        digest = descriptor["digest"]
        target = self.destination
        if self._stored(descriptor):
            self.store.touch(digest)
            path = self.store.blob_path(digest)
            target.add_file(digest, path)
            return self._raw_fetched(descriptor, diff_id, path, True, None)
        sink_factory = (lambda: target.writer(digest)) if target.streams else None
        if self.store is not None:
            path, result = fetch_to_store(self.client, self.store, descriptor, sink_factory, self.cancel)
            if result is None or not target.streams:
                target.add_file(digest, path)
            return self._raw_fetched(descriptor, diff_id, path, result is None, result)
        path = self._partial(digest)
        result = download(self.client, descriptor, path, sink_factory, self.cancel, sync=False)
        if not target.streams:
            target.add_file(digest, path)
        return self._raw_fetched(descriptor, diff_id, path, False, result)

    def _raw_fetched(self, descriptor, diff_id, path, from_cache, result):
        """The FetchedLayer of a blob kept as it is at ``path``; a missing diff_id is computed from it when
        asked for (a second, local read)."""
        if diff_id is None and self.options.compute_diff_ids:
            digest = descriptor["digest"]
            bounds = InflateBounds("layer %s" % digest, None, self.options.max_inflation_ratio)
            diff_id = decompress_stream(path, None, expected_digest=digest, inflater=self.options.inflater,
                                        bounds=bounds).diff_id
        size = result.size if result is not None else os.path.getsize(path)
        return FetchedLayer(descriptor, diff_id, from_cache, bool(result and result.resumed), size)

    def _unpacker(self, descriptor, diff_id, input_verified=True):
        digest = descriptor["digest"]
        bounds = InflateBounds("layer %s" % digest, descriptor.get("size"), self.options.max_inflation_ratio,
                               self.destination.space_path)
        # a layer whose diff_id is not known yet is written under its blob digest (see fetch_layers)
        return Unpacker(self.destination.writer(diff_id or digest), digest, input_verified=input_verified,
                        bounds=bounds, inflater=self.options.inflater)

    def _unpacked(self, descriptor, diff_id):
        digest = descriptor["digest"]
        from_cache = self._stored(descriptor)
        resumed = False
        if from_cache:
            self.store.touch(digest)
            # a stored blob is not re-hashed here: the diff_id check below covers its content
            unpacked = copy_into(self.store.blob_path(digest), self._unpacker(descriptor, diff_id, False))
        else:
            def sink_factory():
                return self._unpacker(descriptor, diff_id)
            if self.store is not None:
                _path, result = fetch_to_store(self.client, self.store, descriptor, sink_factory, self.cancel)
                if result is None:   # another run stored it meanwhile
                    return self._unpacked(descriptor, diff_id)
            else:
                result = download(self.client, descriptor, self._partial(digest), sink_factory, self.cancel,
                                  sync=False)
            unpacked, resumed = result.sink_result, result.resumed
        if diff_id is not None and unpacked.diff_id != diff_id:
            # a stored blob that still hashes to its digest is sound: the image's config is wrong, and other
            # images may use the blob; one that does not is damaged and goes
            if from_cache and file_digest(self.store.blob_path(digest)) != digest:
                self.store.remove_blob(digest)
            raise DiffIdMismatch("layer %s decompresses to %s, but the image config says its diff_id is %s"
                                 % (digest, unpacked.diff_id, diff_id))
        return FetchedLayer(descriptor, unpacked.diff_id, from_cache, resumed, unpacked.size)


def unique_layers(layers, uncompressed):
    """The layers to fetch (one per blob; uncompressed, one per diff_id) and, for the others, the blob whose
    file they share: (``{digest: (descriptor, diff_id)}``, ``{digest: digest of the one fetched}``)."""
    unique = {}
    same = {}
    first_of = {}
    for descriptor, diff_id in layers:
        digest = descriptor["digest"]
        if uncompressed and diff_id is not None and diff_id in first_of and first_of[diff_id] != digest:
            same[digest] = first_of[diff_id]
            continue
        if diff_id is not None:
            first_of.setdefault(diff_id, digest)
        unique.setdefault(digest, (descriptor, diff_id))
    return unique, same


def fetch_layers(client, layers, destination, work, uncompressed, store=None, options=None):
    """Fetch ``layers`` (a list of (descriptor, diff_id)) into ``destination``; returns {digest: FetchedLayer}.

    Identical blobs (and, uncompressed, identical tars) are fetched once; the biggest start first. A failing
    layer stops the others at their next block and its error is raised.

    A diff_id of None (a schema 1 image's layers: no config gives them) is computed while the layer is
    decompressed, or with ``options.compute_diff_ids`` from the blob kept compressed; each FetchedLayer
    returns it with the blob's size. An uncompressed layer without a diff_id is written under its blob
    digest: the caller hands the file over under its diff_id once it knows it.
    """
    options = options or FetchOptions()
    unique, same = unique_layers(layers, uncompressed)
    cancel = threading.Event()
    fetcher = LayerFetcher(client, store, destination, work, uncompressed, options, cancel)
    order = sorted(unique, key=lambda d: -_size(unique[d][0]))
    workers = min(options.max_workers, len(order) or 1)
    if workers == 1:
        results = dict((digest, fetcher.fetch(*unique[digest])) for digest in order)
    else:
        results = _in_parallel(fetcher, unique, order, workers, cancel)
    for digest, first in same.items():
        results[digest] = results[first]
    return results


def _in_parallel(fetcher, unique, order, workers, cancel):
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait   # runs that fetch nothing skip it
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = dict((digest, pool.submit(fetcher.fetch, *unique[digest])) for digest in order)
        wait(list(futures.values()), return_when=FIRST_EXCEPTION)
        failed = [f for f in futures.values() if f.done() and not f.cancelled() and f.exception()]
        if failed:
            cancel.set()
            for future in futures.values():
                future.cancel()
            raise failed[0].exception()
        return dict((digest, futures[digest].result()) for digest in order)


def expected_sizes(client, layers, store=None, max_workers=4):
    """Guess the uncompressed size of each layer's tar before fetching it: {diff_id: size or None}.

    A gzip member ends with its uncompressed length modulo 4 GiB, so four bytes from the end of the blob
    (a ranged request, or a read of the stored blob) give it for single-member gzip; an uncompressed blob
    is its own size. zstd, foreign layers and registries that do not answer ranges give None. A wrong guess
    costs time, never correctness: the placed archive notices it and is written again.
    """
    unique = {}
    for descriptor, diff_id in layers:
        unique.setdefault(diff_id, descriptor)
    items = list(unique.items())
    if not items:
        return {}
    for _diff_id, descriptor in items:
        if "zstd" in (descriptor.get("mediaType") or "") or foreign_urls(descriptor):
            # a size no trailer gives (zstd) or a blob from elsewhere: the archive cannot be laid out, so
            # no request for the others either
            return dict((diff_id, None) for diff_id, _d in items)
    workers = max(1, min(16, 2 * int(max_workers or 1), len(items)))
    if workers == 1:
        return dict((diff_id, _expected_size(client, store, d)) for diff_id, d in items)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = list(pool.map(lambda item: _expected_size(client, store, item[1]), items))
    return dict((diff_id, size) for (diff_id, _d), size in zip(items, sizes))


def _expected_size(client, store, descriptor):
    digest = descriptor["digest"]
    size = descriptor.get("size")
    if not isinstance(size, int) or size < 20:
        return None
    if store is not None and store.has(digest, size):
        with open(store.blob_path(digest), "rb") as blob:
            head = blob.read(4)
            blob.seek(size - 4)
            tail = blob.read(4)
        kind = detect(head)
        if kind == GZIP:
            return int.from_bytes(tail, "little")
        return size if kind == NONE else None
    if (descriptor.get("mediaType") or "").endswith((".tar", "diff.tar")):
        return size
    try:
        tail = client.blob_range(digest, size - 4, size - 1)
    except Exception:  # pylint: disable=broad-except
        return None   # only a guess: the download itself reports what is wrong
    return int.from_bytes(tail, "little") if tail else None


def _size(descriptor):
    size = descriptor.get("size")
    return size if isinstance(size, int) else 0
