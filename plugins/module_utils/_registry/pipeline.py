# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Fetch every layer of one or more images, in parallel, ready for an archive writer.

PRIVATE to the hocker.registry collection: may change at any time.

Each worker streams one blob and, for ``uncompressed`` layers, decompresses it on the fly into a temporary
tar (hashed as it is written, checked against the diff_id), so the network bytes are read once and both cores
work. With a blob store the raw blob also lands in the store (resumable across runs); blobs already in the
store are not downloaded again.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import shutil
import threading

from ansible_collections.hocker.registry.plugins.module_utils._registry.blobs import (
    download, fetch_to_store, foreign_urls)
from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import (
    GZIP, NONE, DecompressionError, Decompressor, detect)
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch

READ_SIZE = 1024 * 1024


class _Unpacker:
    """Decompress written bytes into ``path`` and hash the output.

    Corrupt compressed data stops the decompression but not the download, so that a blob damaged in transit
    is reported by its digest check; the decompression error is raised by close() only for a blob that is
    intact yet does not decompress.
    """

    def __init__(self, out, digest, digest_verified=True):
        self.digest = digest
        self.error = None
        self.handle = out       # a file opened for writing, or a placed archive's layer writer
        self.decompressor = Decompressor()
        self.hasher = hashlib.sha256()
        self.size = 0
        # an uncompressed blob is its own tar: when the download verifies the blob digest, hashing the same
        # bytes again for the diff_id is wasted work
        self.digest_verified = digest_verified
        self._hash = True

    def _emit(self, chunks):
        write = self.handle.write
        if self._hash and self.digest_verified and self.decompressor.kind == NONE:
            self._hash = False
        if self._hash:
            update = self.hasher.update
            for chunk in chunks:
                update(chunk)
                write(chunk)
        else:
            for chunk in chunks:
                write(chunk)

    def write(self, block):
        if self.error is None:
            try:
                self._emit(self.decompressor.feed(block))
            except DecompressionError as exc:
                self.error = exc

    def _finish(self):
        try:
            if self.error is None:
                self._emit(self.decompressor.finish())
        except DecompressionError as exc:
            self.error = exc
        finally:
            self.handle.close()

    def close(self):
        self._finish()
        if self.error is not None:
            raise DecompressionError("layer %s cannot be decompressed: %s" % (self.digest, self.error))
        if not self._hash:
            return self.digest
        return "sha256:" + self.hasher.hexdigest()

    def abandon(self):
        getattr(self.handle, "abandon", self.handle.close)()


class _Rewound:
    """One attempt's view of an output file: it starts at byte 0 (a restarted download writes the tar
    again); ``close`` only flushes, the file belongs to the caller."""

    def __init__(self, handle):
        self.handle = handle
        handle.seek(0)
        handle.truncate()
        self.write = handle.write

    def close(self):
        self.handle.flush()

    def abandon(self):
        pass


def download_unpacked(client, descriptor, diff_id, partial_path, out):
    """Download one layer blob into ``partial_path`` (resumable, see ``blobs.download``) and, in the same pass,
    its decompressed tar into ``out`` (a seekable binary file, rewound when the download starts again).
    The blob is verified against its digest and the tar against ``diff_id``; returns the DownloadResult.
    ``partial_path`` is not fsynced: the caller deletes it once ``out`` is safe."""
    digest = descriptor["digest"]
    current = []

    def sink_factory():
        if current:
            current.pop().abandon()
        sink = _Unpacker(_Rewound(out), digest)
        current.append(sink)
        return sink

    result = download(client, descriptor, partial_path, foreign_urls(descriptor), sink_factory, sync=False)
    actual = result.sink.close()
    if actual != diff_id:
        raise DigestMismatch("uncompressed layer does not match its diff_id: expected %s, got %s" % (diff_id, actual))
    return result


class _FileSink:
    """A file of the work directory. Copied into an archive and deleted, it is not fsynced; with ``sync``
    (it becomes part of an oci-dir as it is) it is fsynced when complete, by the worker that wrote it."""

    def __init__(self, path, sync=False):
        self.handle = open(path, "wb")
        self.write = self.handle.write
        self.sync = sync

    def close(self):
        if self.sync and not self.handle.closed:
            self.handle.flush()
            os.fdatasync(self.handle.fileno())
        self.handle.close()

    def abandon(self):
        self.handle.close()


class FetchedLayer:
    def __init__(self, descriptor, diff_id, path, from_cache, resumed):
        self.descriptor = descriptor
        self.diff_id = diff_id
        self.path = path
        self.from_cache = from_cache
        self.resumed = resumed


def fetch_layers(client, layers, workdir, uncompressed, store=None, max_workers=4, placement=None, sync=False):
    """Fetch ``layers`` (a list of (descriptor, diff_id)); returns {digest: FetchedLayer}.

    Identical blobs are fetched once. Files are created in ``workdir`` (removed by the caller) unless they
    are the store's own blobs (compressed mode with a store). With ``placement`` (an
    ``archive.PlacedArchive``) every layer is written straight into its place in the archive instead (the
    FetchedLayer's ``path`` is None), keyed by diff_id (uncompressed) or blob digest (compressed). ``sync``:
    each work file is fsynced by its worker once complete (for files that are moved into place as they are).
    """
    unique = {}
    same_tar = {}    # blob digest -> the blob whose tar it shares (uncompressed: one file per diff_id)
    first_of = {}
    for descriptor, diff_id in layers:
        digest = descriptor["digest"]
        if uncompressed and diff_id in first_of and first_of[diff_id] != digest:
            same_tar[digest] = first_of[diff_id]
            continue
        first_of.setdefault(diff_id, digest)
        unique.setdefault(digest, (descriptor, diff_id))
    lock = threading.Lock()
    open_sinks = []
    cancel = threading.Event()

    def one(item):
        descriptor, diff_id = item
        digest = descriptor["digest"]
        hexpart = digest.split(":", 1)[1]
        if not uncompressed and placement is not None:
            return _fetch_placed(client, store, descriptor, diff_id, placement, lock, open_sinks, cancel)
        if not uncompressed:
            if store is not None:
                path, result = fetch_to_store(client, store, descriptor, cancel=cancel)
                return FetchedLayer(descriptor, diff_id, path, result is None, bool(result and result.resumed))
            path = os.path.join(workdir, hexpart + ".blob")

            def file_sink():
                sink = _FileSink(path, sync)
                with lock:
                    open_sinks.append(sink)
                return sink
            result = download(client, descriptor, None, foreign_urls(descriptor), file_sink, cancel)
            result.sink.close()
            return FetchedLayer(descriptor, diff_id, path, False, result.resumed)
        out_path = None if placement is not None else os.path.join(workdir, diff_id.split(":", 1)[1] + ".tar")

        def output():
            return placement.writer(diff_id) if placement is not None else _FileSink(out_path, sync)

        current = []

        def sink_factory():
            # called again when a download restarts from zero: the previous sink must stop writing first
            if current:
                current.pop().abandon()
            sink = _Unpacker(output(), digest)
            current.append(sink)
            with lock:
                open_sinks.append(sink)
            return sink

        from_cache = False
        resumed = False
        if store is not None and store.has(digest, descriptor.get("size")):
            sink = _Unpacker(output(), digest, digest_verified=False)   # a stored blob is not re-hashed here
            with lock:
                open_sinks.append(sink)
            with open(store.blob_path(digest), "rb") as blob:
                shutil.copyfileobj(blob, sink, READ_SIZE)
            store.touch(digest)
            from_cache = True
        elif store is not None:
            _path, result = fetch_to_store(client, store, descriptor, sink_factory, cancel)
            if result is None:  # another process stored it meanwhile
                return one(item)
            sink, resumed = result.sink, result.resumed
        else:
            result = download(client, descriptor, None, foreign_urls(descriptor), sink_factory, cancel)
            sink, resumed = result.sink, result.resumed
        actual = sink.close()
        if actual != diff_id:
            if from_cache:
                store.remove_blob(digest)
            raise DigestMismatch("layer %s decompresses to %s, but the image config says its diff_id is %s"
                                 % (digest, actual, diff_id))
        return FetchedLayer(descriptor, diff_id, out_path, from_cache, resumed)

    results = {}
    workers = max(1, min(int(max_workers or 1), len(unique) or 1))
    # biggest first: the last layer to start is a small one, so the cores stay busy until the end
    order = sorted(unique, key=lambda d: -_size(unique[d][0]))
    try:
        if workers == 1:
            for digest in order:
                results[digest] = one(unique[digest])
        else:
            from concurrent.futures import ThreadPoolExecutor   # not needed by runs that fetch nothing
            from concurrent.futures import FIRST_EXCEPTION, wait
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = dict((digest, pool.submit(one, unique[digest])) for digest in order)
                wait(list(futures.values()), return_when=FIRST_EXCEPTION)
                failed = [f for f in futures.values() if f.done() and not f.cancelled() and f.exception()]
                if failed:
                    # stop the other downloads at their next block instead of finishing them for nothing
                    cancel.set()
                    for future in futures.values():
                        future.cancel()
                    raise failed[0].exception()
                for digest in order:
                    results[digest] = futures[digest].result()
    finally:
        for sink in open_sinks:
            try:
                sink.abandon()
            except Exception:  # pylint: disable=broad-except
                pass
    fetched = dict((digest, results[digest]) for digest in unique)
    for digest, first in same_tar.items():
        fetched[digest] = fetched[first]
    return fetched


def _fetch_placed(client, store, descriptor, diff_id, placement, lock, open_sinks, cancel):
    """Compressed mode into a placed archive: the raw blob goes straight to its place (and to the store)."""
    digest = descriptor["digest"]

    def sink_factory():
        sink = placement.writer(digest)
        with lock:
            open_sinks.append(sink)
        return sink

    if store is not None:
        path, result = fetch_to_store(client, store, descriptor, sink_factory, cancel)
        if result is None:
            # already stored: copied from the store
            sink = sink_factory()
            with open(path, "rb") as blob:
                shutil.copyfileobj(blob, sink, READ_SIZE)
            sink.close()
            return FetchedLayer(descriptor, diff_id, None, True, False)
    else:
        result = download(client, descriptor, None, foreign_urls(descriptor), sink_factory, cancel)
    result.sink.close()
    return FetchedLayer(descriptor, diff_id, None, False, result.resumed)


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

    def one(descriptor):
        digest = descriptor["digest"]
        size = descriptor.get("size")
        media_type = descriptor.get("mediaType") or ""
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
        if media_type.endswith((".tar", "diff.tar")):
            return size
        try:
            tail = client.blob_range(digest, size - 4, size - 1)
        except Exception:  # pylint: disable=broad-except
            return None   # only a guess: the download itself reports what is wrong
        return int.from_bytes(tail, "little") if tail else None

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
        return dict((diff_id, one(d)) for diff_id, d in items)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = list(pool.map(lambda item: one(item[1]), items))
    return dict((diff_id, size) for (diff_id, _d), size in zip(items, sizes))


def _size(descriptor):
    size = descriptor.get("size")
    return size if isinstance(size, int) else 0
