# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Where a whole image is written: the three destinations of ``docker_registry_image``.

PRIVATE to the hocker.registry collection: may change at any time.

Every destination takes the layer files of an image by key (the file's digest in the output: the diff_id
for uncompressed layers, the blob digest for compressed ones) and speaks one protocol:

- ``writer(key) -> Sink``: a sink for the layer file's bytes (a new writer for the same key starts the
  file again);
- ``add_file(key, path)``: the layer file exists complete at ``path`` (a blob in the store, a finished
  download in the work directory);
- ``streams``: whether bytes that go elsewhere anyway (into the blob store) should also be streamed to
  ``writer`` while they arrive, rather than handed over with ``add_file`` afterwards;
- ``commit() -> dict``: make ``dest`` (atomically: a rename, or two for a directory) and return what was
  written; ``abort()``: drop what was prepared, leaving ``dest`` as it was.

``open_destination`` picks the destination and decides whether an archive is laid out before the fetch
(placed: each layer written once, straight into its place) or assembled after it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading

from ansible_collections.hocker.registry.plugins.module_utils._registry import readback
from ansible_collections.hocker.registry.plugins.module_utils._registry.destination import RETIRED, fsync_dir, install
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import NoSpace
from ansible_collections.hocker.registry.plugins.module_utils._registry.layout import (
    ArchiveError, Copy, Image, Layer, blob_hex)
from ansible_collections.hocker.registry.plugins.module_utils._registry.placed import can_place, open_placed
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import FileSink, copy_into
from ansible_collections.hocker.registry.plugins.module_utils._registry.tarwriter import write_archive

PLACEMENTS = ("auto", "always", "never")
PLACE_MIN_AVERAGE = 4 * 1024 * 1024   # average blob size from which uncompressed layers are placed (auto)


class ImageSpec:
    """What is written: the images (``(manifest, config bytes, [(descriptor, diff_id)])`` per platform) and
    the writer options (format, layers, compression, repo_tags, name, origin)."""

    def __init__(self, images, fmt, layers, compression, repo_tags, name, origin):
        self.images = images
        self.format = fmt
        self.layers = layers
        self.compression = compression
        self.write_args = dict(format=fmt, layers=layers, repo_tags=repo_tags, name=name, origin=origin)

    @property
    def uncompressed(self):
        return self.layers == "uncompressed"

    def key(self, descriptor, diff_id):
        return diff_id if self.uncompressed else descriptor["digest"]

    def archive_images(self, path_of=None, size_of=None):
        """layout.Image objects; ``path_of(key)`` names each layer file, ``size_of(key)`` its size."""
        result = []
        for manifest, config_bytes, pairs in self.images:
            layers = []
            for descriptor, diff_id in pairs:
                key = self.key(descriptor, diff_id)
                layers.append(Layer(descriptor["digest"], diff_id, descriptor.get("size"), descriptor.get("mediaType"),
                                    path_of(key) if path_of else None,
                                    uncompressed_size=size_of(key) if size_of else None, urls=descriptor.get("urls")))
            result.append(Image(config_bytes, manifest.raw, layers, config_digest=manifest.config.get("digest"),
                                manifest_digest=manifest.digest, manifest_media_type=manifest.media_type))
        return result


class CopySpec(ImageSpec):
    """Registry content kept byte for byte (see ``layout.Copy``): ``top`` the descriptor index.json names,
    ``metadata`` ``[(digest, bytes)]`` of the manifests and configs, ``blobs`` the descriptors of every other
    blob, fetched as they are (the layers mode does not apply)."""

    def __init__(self, top, metadata, blobs, fmt, compression, repo_tags, name, origin):
        ImageSpec.__init__(self, [], fmt, "compressed", compression, repo_tags, name, origin)
        self.top = top
        self.metadata = metadata
        self.blobs = blobs

    def archive_images(self, path_of=None, size_of=None):
        layers = [Layer(d["digest"], None, d["size"], d.get("mediaType"), path_of(d["digest"]) if path_of else None)
                  for d in self.blobs]
        return Copy(self.top, self.metadata, layers)


class _Files:
    """Layer files by key, written into the work directory or handed over complete."""

    def __init__(self, work, sync=False):
        self.work = work
        self.sync = sync
        self.paths = {}
        self._lock = threading.Lock()

    def writer(self, key):
        path = self.work.path(blob_hex(key) + ".layer")
        with self._lock:
            self.paths[key] = path
        return FileSink(path, sync=self.sync)

    def add_file(self, key, path):
        with self._lock:
            self.paths[key] = path

    def path_of(self, key):
        return self.paths[key]


class AssembledArchive(_Files):
    """A docker-archive or oci-archive written after the fetch from the layer files."""

    streams = False

    def __init__(self, dest, spec, work):
        _Files.__init__(self, work)
        self.dest = dest
        self.spec = spec
        self.space_path = work.dir

    def commit(self):
        staged = self.work.scratch("archive")
        result = write_archive(staged, self.spec.archive_images(self.path_of), compression=self.spec.compression,
                               **self.spec.write_args)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        install(staged, self.dest)
        readback.stamp([self.dest])
        return result

    def abort(self):
        pass


class PlacedDestination:
    """An archive laid out before the fetch; every layer goes straight into its place."""

    streams = True

    def __init__(self, dest, placed, work):
        self.dest = dest
        self.placed = placed
        self.staged = placed.path
        self.space_path = work.dir

    def writer(self, key):
        return self.placed.writer(key)

    def add_file(self, key, path):
        copy_into(path, self.placed.writer(key))

    def commit(self):
        result = self.placed.finish()
        self.placed = None
        with open(self.staged, "rb") as handle:
            os.fsync(handle.fileno())
        install(self.staged, self.dest)
        readback.stamp([self.dest])
        return result

    def abort(self):
        if self.placed is not None:
            self.placed.abort()
            self.placed = None


class OciDirectory(_Files):
    """An OCI image layout directory: staged in the work directory, then swapped in with two renames."""

    streams = False

    def __init__(self, dest, spec, work):
        _Files.__init__(self, work, sync=True)
        self.dest = dest
        self.spec = spec
        self.space_path = work.dir

    def commit(self):
        staged = self.work.scratch("out")
        result = write_archive(staged, self.spec.archive_images(self.path_of), move_from=self.work.dir,
                               **self.spec.write_args)
        _swap_dir(staged, self.dest, self.work.scratch(RETIRED))
        readback.stamp(_dir_files(self.dest))
        return result

    def abort(self):
        pass


def _dir_files(path):
    files = []
    for root, _dirs, names in os.walk(path):
        files.extend(os.path.join(root, name) for name in names)
    return files


def _swap_dir(staged, dest, retired):
    """Replace the directory ``dest`` by ``staged`` with two renames (the old one goes to ``retired``, which
    the work directory's clean-up removes)."""
    os.chmod(staged, 0o755)
    if os.path.isdir(dest):
        os.rename(dest, retired)
        try:
            os.rename(staged, dest)
        except OSError:
            os.rename(retired, dest)
            raise
    else:
        os.rename(staged, dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)) or ".")


def free_bytes(path):
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def check_space(path, needed, what):
    """LimitExceeded when the file system of ``path`` has less than ``needed`` bytes free."""
    free = free_bytes(path)
    if free is not None and needed > free:
        raise NoSpace("%s needs about %d bytes in %s, but only %d are free" % (what, needed, path, free))


def open_destination(dest, spec, work, placement="auto", size_probe=None, stored=None):
    """The destination for ``spec`` at ``dest``.

    ``placement``: ``never`` assembles archives after the fetch; ``always`` lays them out before whenever
    the sizes are known; ``auto`` does so for compressed layers, and for uncompressed ones when the layers
    are big enough on average (a ranged request per layer to learn its size costs more than copying a small
    layer) or all in the store. ``size_probe()`` returns the expected uncompressed sizes by diff_id (None
    where unknown); ``stored(digest, size)`` tells whether the store holds a blob.
    """
    if spec.format == "oci-dir":
        return OciDirectory(dest, spec, work)
    if placement == "never" or spec.compression != "none":
        return AssembledArchive(dest, spec, work)
    if isinstance(spec, CopySpec):
        content = spec.archive_images()
        return _open_placed(dest, spec, work, content, sum(layer.size for layer in content.layers))
    sizes = None
    if spec.uncompressed:
        sizes = _probed_sizes(spec, placement, size_probe, stored)
        if sizes is None:
            return AssembledArchive(dest, spec, work)
    images = spec.archive_images(size_of=sizes.get if sizes else None)
    if not can_place(images, spec.format, spec.layers):
        return AssembledArchive(dest, spec, work)
    expected = sum(layer.uncompressed_size if spec.uncompressed else layer.size
                   for image in images for layer in image.layers)
    return _open_placed(dest, spec, work, images, expected)


def _open_placed(dest, spec, work, images, expected):
    """A placed archive of ``images`` (``expected`` bytes of layers), or an assembled one when it cannot be."""
    free = free_bytes(work.dir)
    if free is not None and expected > free:
        return AssembledArchive(dest, spec, work)   # a manifest that lies, or a full disk: no huge sparse file
    try:
        placed = open_placed(work.scratch("archive"), images, workdir=work.dir, **spec.write_args)
    except (ArchiveError, OSError):
        return AssembledArchive(dest, spec, work)
    return PlacedDestination(dest, placed, work)


def _probed_sizes(spec, placement, size_probe, stored):
    """The uncompressed sizes of the layers by diff_id, or None when probing them is not worth it or some
    size stays unknown."""
    if size_probe is None or not _worth_probing(spec, placement, stored):
        return None
    sizes = size_probe()
    if not sizes or any(size is None for size in sizes.values()):
        return None
    return sizes


def _worth_probing(spec, placement, stored):
    if placement == "always":
        return True
    blobs = dict((d["digest"], d.get("size")) for _m, _c, pairs in spec.images for d, _diff_id in pairs)
    if stored is not None and all(stored(digest, size) for digest, size in blobs.items()):
        return True
    total = sum(size for size in blobs.values() if isinstance(size, int))
    return total >= PLACE_MIN_AVERAGE * len(blobs)
