# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Deterministic writers of whole images: docker-archive, oci-archive and oci-dir.

PRIVATE to the hocker.registry collection: may change at any time.

Nothing here talks to a registry: the caller has already fetched and verified every blob and hands over
files on disk. The writers stream: layer files are copied with large buffers (``copy_file_range`` when
writing a plain file), nothing bigger than a manifest is held in memory.

API
---
``Layer(digest, diff_id, size, media_type, path, uncompressed_size=None, urls=None)``
    One layer of an image, in manifest order. ``digest``/``size``/``media_type``/``urls`` describe the
    registry blob. ``path`` is the file to put in the archive: the registry blob for ``layers='compressed'``,
    the decompressed tar (already checked against ``diff_id``) for ``layers='uncompressed'``.
    ``uncompressed_size`` defaults to the size of ``path`` in uncompressed mode.

``Image(config, manifest, layers, config_digest=None, manifest_digest=None, manifest_media_type=None)``
    One platform image: the config bytes, the registry image manifest bytes (never an index) and its layers.
    Digests are computed when not given (and checked when given). Mappings with the same keys are accepted
    wherever an ``Image`` or ``Layer`` is expected.

``write_archive(dest, images, format='docker-archive', layers='uncompressed', repo_tags=(), name=None,
                origin=None, compression='none', compresslevel=6) -> dict``
    ``format``: ``docker-archive`` | ``oci-archive`` | ``oci-dir``. ``dest`` is a path or a writable binary
    file object (for ``oci-dir`` a directory path, created if missing). ``images`` is one ``Image`` or a
    list; several images (``platform: all``) are only allowed in the OCI formats and are listed in a
    generated OCI image index. ``repo_tags`` (e.g. ``['hello-world:latest']``) name the image; every tag
    gets one ``index.json`` entry annotated with ``io.containerd.image.name`` (full name, e.g.
    ``docker.io/library/hello-world:latest``) and ``org.opencontainers.image.ref.name`` (the tag). Without
    repo_tags, ``name`` (a reference) is used for the annotations. ``origin`` (a JSON-able dict) is stored
    compactly in the ``index.json`` annotation ``io.hocker.registry.origin``. ``compression='gzip'`` gzips
    the whole tar (deterministic header, mtime 0). ``move_from`` (oci-dir only): layer files inside this
    directory are the caller's work files and are renamed into the layout instead of copied. Every file of
    an oci-dir and its directories are fsynced. Returns ``{'format', 'layers', 'manifests',
    'index_digest', 'bytes_written', 'members'}`` where ``manifests`` lists ``{digest, media_type, size,
    platform}`` of the image manifests written (``index_digest`` is the digest of the generated nested
    index, or None) and ``bytes_written`` the size of the output (for oci-dir: the sum of its files).

    docker-archive members, in this order: ``oci-layout``, ``index.json``, ``manifest.json`` (Config,
    RepoTags (fully qualified, as skopeo writes them), Layers, LayerSources for foreign layers),
    ``repositories`` (familiar names as given), ``blobs/``, ``blobs/sha256/``,
    the config, the manifest, then each layer blob once. oci-archive: the same without ``manifest.json`` and
    ``repositories``. Layers ``uncompressed``: layer files are named by diff_id and a generated OCI manifest
    (``application/vnd.oci.image.layer.v1.tar``, uncompressed sizes) describes them. Layers
    ``compressed``: the registry blobs; an OCI registry manifest is kept byte for byte; a docker
    manifest is kept as it is in docker-archive and converted to an OCI manifest (config and layer blobs
    unchanged, new manifest digest) in the OCI formats.

    Reproducible: tar headers USTAR (GNU only for a member of 8 GiB or more), mtime 0, uid/gid 0, empty
    uname/gname, modes 0644/0755, JSON with sorted keys and compact separators; the same input gives the
    same bytes.

``plan(images, format='docker-archive', layers='uncompressed', repo_tags=(), name=None, origin=None)``
    The same without writing: returns a ``Plan`` with ``members`` (list of ``(name, bytes_or_None,
    path_or_None, size)``; directories have size None), ``manifests``, ``index_digest`` and ``index``.

``can_place(images, format, layers, compression='none')`` and ``open_placed(dest, images, format, layers,
repo_tags, name, origin, workdir) -> PlacedArchive``
    Lay out a docker-archive or oci-archive (no compression) before its layer files exist, from their sizes
    (``Layer.size`` for compressed layers, ``Layer.uncompressed_size``, a guess, for uncompressed ones;
    ``path`` None). Headers, metadata and the end of the archive are written at once; ``writer(key)`` (key:
    the layer file's digest in the archive) returns a sink that writes the layer into its place from any
    thread (a new writer for the same key starts the layer again); ``finish()`` returns what
    ``write_archive`` returns, byte-identical output included. When a layer turned out bigger or smaller than
    its place (it then went to a spill file in ``workdir``), ``finish()`` writes the archive again from the
    places and spill files (``rewritten`` is True). ``abort()`` deletes everything. ``Layer.offset`` lets a
    layer file be a region of a bigger file.

``read_index(path) -> dict | None`` and ``read_origin(path) -> dict | None``
    Read ``index.json`` of an existing archive (plain or gzip; only its first members are read) or of an
    oci-dir, and return it / the recorded origin. ``None`` when the path is missing, unreadable or not
    written by us.

``normalize_name(reference) -> str``
    ``hello-world:latest`` -> ``docker.io/library/hello-world:latest`` (the name containerd shows).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import hashlib
import json
import os
import tarfile
import zlib

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError, RegistryError

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
LAYER_MODES = ("uncompressed", "compressed")
COMPRESSIONS = ("none", "gzip")

ORIGIN_ANNOTATION = "io.hocker.registry.origin"
NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

COPY_SIZE = 1024 * 1024
FLUSH_AFTER = 32 * 1024 * 1024   # start the write-back of an archive once this much more was copied
MAX_INDEX_SIZE = 4 * 1024 * 1024
_USTAR_MAX_SIZE = 0o77777777777
_BLOCK = 512


class ArchiveError(RegistryError):
    """An archive cannot be written from this input."""


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest):
    algorithm, _sep, encoded = digest.partition(":")
    if algorithm != "sha256" or len(encoded) != 64 or encoded.strip("0123456789abcdef"):
        raise ArchiveError("unsupported digest %r (only sha256 is supported in archives)" % (digest,))
    return encoded


def _blob_name(digest):
    return "blobs/sha256/" + _hex(digest)


def _is_foreign(media_type):
    return media_type in (DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_TAR) or \
        (media_type or "").startswith(OCI_NONDIST)


# ---------------------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------------------
class Layer(object):
    """A layer of an image (see the module docstring)."""

    __slots__ = ("digest", "diff_id", "size", "media_type", "path", "uncompressed_size", "urls", "offset")

    def __init__(self, digest, diff_id, size, media_type, path, uncompressed_size=None, urls=None, offset=0):
        self.digest = digest
        self.diff_id = diff_id
        self.size = size
        self.media_type = media_type
        self.path = path
        self.uncompressed_size = uncompressed_size
        self.urls = list(urls) if urls else None
        self.offset = offset

    @classmethod
    def coerce(cls, obj):
        if isinstance(obj, cls):
            return obj
        keys = cls.__slots__
        return cls(**dict((k, obj[k]) for k in keys if k in obj))


class Image(object):
    """One platform image (see the module docstring)."""

    def __init__(self, config, manifest, layers, config_digest=None, manifest_digest=None,
                 manifest_media_type=None):
        self.config = bytes(config)
        self.manifest = bytes(manifest)
        self.layers = [Layer.coerce(layer) for layer in layers]
        computed = _sha256(self.config)
        if config_digest is not None and config_digest != computed:
            raise ArchiveError("config does not match its digest %s" % config_digest)
        self.config_digest = computed
        computed = _sha256(self.manifest)
        if manifest_digest is not None and manifest_digest != computed:
            raise ArchiveError("manifest does not match its digest %s" % manifest_digest)
        self.manifest_digest = computed
        try:
            self.manifest_data = json.loads(self.manifest.decode("utf-8"))
            self.config_data = json.loads(self.config.decode("utf-8"))
        except ValueError as exc:
            raise ManifestError("invalid manifest or config JSON: %s" % exc)
        if not isinstance(self.manifest_data, dict) or not isinstance(self.config_data, dict):
            raise ManifestError("manifest and config must be JSON objects")
        mt = manifest_media_type or self.manifest_data.get("mediaType")
        if not mt:
            cfg_mt = (self.manifest_data.get("config") or {}).get("mediaType")
            mt = DOCKER_MANIFEST if cfg_mt == DOCKER_CONFIG else OCI_MANIFEST
        if mt not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise ManifestError("not an image manifest: %s" % mt)
        self.manifest_media_type = mt
        self._check()

    @classmethod
    def coerce(cls, obj):
        if isinstance(obj, cls):
            return obj
        keys = ("config", "manifest", "layers", "config_digest", "manifest_digest", "manifest_media_type")
        return cls(**dict((k, obj[k]) for k in keys if k in obj))

    def _check(self):
        diff_ids = (self.config_data.get("rootfs") or {}).get("diff_ids") or []
        if list(diff_ids) != [layer.diff_id for layer in self.layers]:
            raise ManifestError("the layers do not match the config's rootfs.diff_ids")
        descriptors = self.manifest_data.get("layers") or []
        if [d.get("digest") for d in descriptors] != [layer.digest for layer in self.layers]:
            raise ManifestError("the layers do not match the manifest's layers")
        if (self.manifest_data.get("config") or {}).get("digest") != self.config_digest:
            raise ManifestError("the config does not match the manifest's config")

    @property
    def platform(self):
        cfg = self.config_data
        platform = {"architecture": cfg.get("architecture") or "", "os": cfg.get("os") or ""}
        for key, name in (("variant", "variant"), ("os.version", "os.version"), ("os.features", "os.features")):
            if cfg.get(key):
                platform[name] = cfg[key]
        return platform


# ---------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------
def _split_tag(reference):
    """Return (name, tag, digest) of a docker reference (no validation beyond splitting)."""
    digest = None
    if "@" in reference:
        reference, digest = reference.split("@", 1)
    name, tag = reference, None
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        name, tag = reference[:colon], reference[colon + 1:]
    return name, tag, digest


def normalize_name(reference):
    """``hello-world:latest`` -> ``docker.io/library/hello-world:latest`` (see the module docstring)."""
    name, tag, digest = _split_tag(reference)
    first, sep, rest = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    result = domain + "/" + path
    if tag:
        result += ":" + tag
    if digest:
        result += "@" + digest
    if not tag and not digest:
        result += ":latest"
    return result


def _repo_tag(reference):
    """Return (repository, tag) of a repo tag as docker writes it in ``repositories``."""
    name, tag, _digest = _split_tag(reference)
    return name, tag or "latest"


def _name_annotations(repo_tags, name):
    """One annotation dict per index.json entry."""
    result = []
    for ref in repo_tags:
        repo, tag = _repo_tag(ref)
        result.append({NAME_ANNOTATION: normalize_name(repo + ":" + tag), REF_NAME_ANNOTATION: tag})
    if not result and name:
        _name, tag, _digest = _split_tag(name)
        ann = {NAME_ANNOTATION: normalize_name(name)}
        if tag:
            ann[REF_NAME_ANNOTATION] = tag
        result.append(ann)
    if not result:
        result.append(None)
    return result


# ---------------------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------------------
class Plan(object):
    """What an archive contains (see ``plan``)."""

    def __init__(self, fmt, members, manifests, index, index_digest, layers):
        self.format = fmt
        self.members = members
        self.manifests = manifests
        self.index = index
        self.index_digest = index_digest
        self.layers = layers


def _sniff_file(path):
    from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import detect
    with open(path, "rb") as f:
        return detect(f.read(4))


def _oci_layer_type(layer):
    """OCI media type of a registry layer blob kept as it is (the content decides the compression)."""
    mt = layer.media_type or ""
    if mt.startswith("application/vnd.oci.image.layer."):
        return mt
    kind = _sniff_file(layer.path)
    suffix = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[kind]
    if _is_foreign(mt):
        return OCI_NONDIST + suffix
    return OCI_LAYER + suffix


def _file_size(path):
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ArchiveError("cannot read layer file %s: %s" % (path, exc.strerror))


def _image_manifest(image, layers_mode, fmt):
    """Return (manifest bytes, media type, [(layer, blob digest, size)]) as written to the archive."""
    md = image.manifest_data
    if layers_mode == "uncompressed":
        files = []
        descs = []
        for layer in image.layers:
            size = layer.uncompressed_size
            if size is None:
                size = _file_size(layer.path)
            files.append((layer, layer.diff_id, size))
            descs.append({"mediaType": OCI_LAYER, "digest": layer.diff_id, "size": size})
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": image.config_digest, "size": len(image.config)},
            "layers": descs,
        }
        if md.get("annotations"):
            manifest["annotations"] = md["annotations"]
        return _json(manifest), OCI_MANIFEST, files

    files = []
    for layer in image.layers:
        files.append((layer, layer.digest, layer.size))
    if image.manifest_media_type == OCI_MANIFEST or fmt == "docker-archive":
        return image.manifest, image.manifest_media_type, files
    # docker schema2 -> OCI: config and layer blobs unchanged
    descs = []
    for layer, original in zip(image.layers, md.get("layers") or []):
        desc = {"mediaType": _oci_layer_type(layer), "digest": layer.digest, "size": layer.size}
        if original.get("urls"):
            desc["urls"] = original["urls"]
        if original.get("annotations"):
            desc["annotations"] = original["annotations"]
        descs.append(desc)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": image.config_digest, "size": len(image.config)},
        "layers": descs,
    }
    if md.get("annotations"):
        manifest["annotations"] = md["annotations"]
    return _json(manifest), OCI_MANIFEST, files


def plan(images, format="docker-archive", layers="uncompressed", repo_tags=(), name=None, origin=None):
    """Compute the members of an archive (see the module docstring)."""
    fmt = format
    if fmt not in FORMATS:
        raise ArchiveError("unknown format %r (expected one of %s)" % (fmt, ", ".join(FORMATS)))
    if layers not in LAYER_MODES:
        raise ArchiveError("unknown layers mode %r (expected one of %s)" % (layers, ", ".join(LAYER_MODES)))
    if isinstance(images, (Image, dict)):
        images = [images]
    images = [Image.coerce(i) for i in images]
    if not images:
        raise ArchiveError("no image to write")
    if len(images) > 1 and fmt == "docker-archive":
        raise ArchiveError("docker-archive holds one platform; use oci-archive or oci-dir for several")
    repo_tags = list(repo_tags or ())

    blobs = []          # (name, data or None, path or None, size)
    seen = set()
    layer_blobs = []
    manifests = []
    docker_items = []
    layer_report = []
    for image in images:
        mbytes, mtype, files = _image_manifest(image, layers, fmt)
        mdigest = _sha256(mbytes)
        manifests.append({"digest": mdigest, "media_type": mtype, "size": len(mbytes),
                          "platform": image.platform})
        for digest, data in ((image.config_digest, image.config), (mdigest, mbytes)):
            if digest not in seen:
                seen.add(digest)
                blobs.append((_blob_name(digest), data, None, len(data)))
        layer_paths = []
        sources = {}
        for layer, digest, size in files:
            bname = _blob_name(digest)
            layer_paths.append(bname)
            if digest not in seen:
                seen.add(digest)
                if layers == "compressed" and layer.path is not None and not layer.offset:
                    actual = _file_size(layer.path)
                    if actual != size:
                        raise ArchiveError("layer file %s has %d bytes, the manifest says %d"
                                           % (layer.path, actual, size))
                layer_blobs.append((bname, None, (layer.path, layer.offset) if layer.offset else layer.path, size))
            if _is_foreign(layer.media_type):
                src = {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                if layer.urls:
                    src["urls"] = layer.urls
                sources[layer.diff_id] = src
            layer_report.append({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size,
                                 "media_type": layer.media_type})
        # fully qualified like skopeo writes them: docker shows them familiar anyway, and podman would
        # name a familiar "app:1" localhost/app:1
        item = {"Config": _blob_name(image.config_digest),
                "RepoTags": [normalize_name(_repo_tag(t)[0] + ":" + _repo_tag(t)[1]) for t in repo_tags],
                "Layers": layer_paths}
        if sources:
            item["LayerSources"] = sources
        docker_items.append(item)

    index_digest = None
    if len(images) == 1:
        target = {"mediaType": manifests[0]["media_type"], "digest": manifests[0]["digest"],
                  "size": manifests[0]["size"]}
        if fmt != "docker-archive":
            target["platform"] = manifests[0]["platform"]
    else:
        nested = _json({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": m["media_type"], "digest": m["digest"], "size": m["size"],
                           "platform": m["platform"]} for m in manifests],
        })
        index_digest = _sha256(nested)
        blobs.append((_blob_name(index_digest), nested, None, len(nested)))
        target = {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(nested)}

    entries = []
    for ann in _name_annotations(repo_tags, name):
        entry = dict(target)
        if ann:
            entry["annotations"] = ann
        entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    if origin is not None:
        index["annotations"] = {ORIGIN_ANNOTATION: _json(origin).decode("utf-8")}
    index_bytes = _json(index)

    members = [("oci-layout", OCI_LAYOUT, None, len(OCI_LAYOUT)), ("index.json", index_bytes, None, len(index_bytes))]
    if fmt == "docker-archive":
        manifest_json = _json(docker_items)
        members.append(("manifest.json", manifest_json, None, len(manifest_json)))
        repositories = {}
        top = docker_items[0]["Layers"][-1].rsplit("/", 1)[-1] if docker_items[0]["Layers"] else ""
        for ref in repo_tags:
            repo, tag = _repo_tag(ref)
            repositories.setdefault(repo, {})[tag] = top
        if repositories:
            data = _json(repositories)
            members.append(("repositories", data, None, len(data)))
    members.append(("blobs/", None, None, None))
    members.append(("blobs/sha256/", None, None, None))
    members.extend(blobs)
    members.extend(layer_blobs)
    return Plan(fmt, members, manifests, index, index_digest, layer_report)


# ---------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------
def _tar_header(name, size):
    info = tarfile.TarInfo(name.rstrip("/") if size is None else name)
    if size is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.size = 0
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    fmt = tarfile.USTAR_FORMAT if info.size <= _USTAR_MAX_SIZE and len(name) < 100 else tarfile.GNU_FORMAT
    return info.tobuf(fmt, "utf-8", "strict")


class _Counter(object):
    """Counts what goes to the output file object."""

    def __init__(self, f):
        self.f = f
        self.written = 0

    def write(self, data):
        n = self.f.write(data)
        if n is None:
            n = len(data)
        while n < len(data):
            # raw (unbuffered) files may write less
            data = memoryview(data)[n:]
            self.written += n
            n = self.f.write(data)
        self.written += n
        return len(data)

    def flush(self):
        if hasattr(self.f, "flush"):
            self.f.flush()


class _Flusher(object):
    """Starts the write-back of a big archive while it is still being written.

    The module fsyncs the finished archive before renaming it into place; when the disk has been writing
    since the first layers were copied, that fsync has little left to wait for. A failed background flush
    is raised by ``finish()`` (a later fsync on another descriptor would not report it again).
    """

    def __init__(self, fd):
        self.fd = fd
        self.thread = None
        self.error = None
        self.copied = 0

    def _run(self):
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            self.error = exc

    def copied_bytes(self, n, lock=None):
        if lock is not None:
            with lock:
                self._count(n)
        else:
            self._count(n)

    def _count(self, n):
        self.copied += n
        if self.copied >= FLUSH_AFTER and (self.thread is None or not self.thread.is_alive()):
            import threading
            self.copied = 0
            self.thread = threading.Thread(target=self._run, name="archive-flush")
            self.thread.daemon = True
            self.thread.start()

    def finish(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise ArchiveError("writing the archive failed: %s" % self.error)


class _Sink(object):
    """Sequential writer; copies files with copy_file_range when ``fd`` is an unbuffered plain file."""

    def __init__(self, out, fd=None, flusher=None):
        self.out = out
        self.fd = fd
        self.flusher = flusher
        self._buf = None

    def write(self, data):
        self.out.write(data)

    def copy_file(self, path, size):
        """Copy ``size`` bytes of ``path`` (or of a ``(path, offset)`` pair: a region of a bigger file)."""
        start = 0
        if isinstance(path, tuple):
            path, start = path
        with open(path, "rb", buffering=0) as src:
            if start:
                src.seek(start)
            remaining = size
            if self.fd is not None and hasattr(os, "copy_file_range"):
                try:
                    while remaining:
                        n = os.copy_file_range(src.fileno(), self.fd, min(remaining, 1 << 30))
                        if not n:
                            break
                        remaining -= n
                        if isinstance(self.out, _Counter):
                            self.out.written += n
                except OSError:
                    # e.g. EXDEV or ENOSYS: continue with plain copying from where we are
                    src.seek(start + size - remaining)
            if remaining:
                if self._buf is None:
                    self._buf = bytearray(COPY_SIZE)
                view = memoryview(self._buf)
                while remaining:
                    n = src.readinto(view[:min(remaining, COPY_SIZE)])
                    if not n:
                        break
                    self.write(view[:n])
                    remaining -= n
            if remaining or (not start and src.read(1)):
                raise ArchiveError("layer file %s changed size while it was copied" % path)
        if self.flusher is not None:
            self.flusher.copied_bytes(size)


def _write_tar(sink, members):
    for name, data, path, size in members:
        sink.write(_tar_header(name, size))
        if size is None:
            continue
        if data is not None:
            sink.write(data)
        else:
            sink.copy_file(path, size)
        pad = -size % _BLOCK
        if pad:
            sink.write(b"\0" * pad)
    sink.write(b"\0" * (2 * _BLOCK))


def _inside(path, directory):
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == os.path.abspath(directory)
    except ValueError:
        return False


def _fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_dir(dest, members, move_from=None):
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
            continue
        if data is None and move_from and isinstance(path, str) and _inside(path, move_from):
            # a work file of the caller's: renamed into place instead of copied
            if _file_size(path) != size:
                raise ArchiveError("layer file %s has %d bytes, %d expected" % (path, _file_size(path), size))
            os.chmod(path, 0o644)
            _fsync_path(path)
            os.rename(path, target)
            written += size
            continue
        tmp = target + ".tmp"
        with open(tmp, "wb", buffering=0) as out:
            counter = _Counter(out)
            sink = _Sink(counter, out.fileno())
            if data is not None:
                sink.write(data)
            else:
                sink.copy_file(path, size)
            written += counter.written
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, target)
    for directory in reversed(directories):
        _fsync_path(directory, directory=True)
    return written


def write_archive(dest, images, format="docker-archive", layers="uncompressed", repo_tags=(), name=None,
                  origin=None, compression="none", compresslevel=6, move_from=None):
    """Write an archive or an oci-dir (see the module docstring)."""
    if compression not in COMPRESSIONS:
        raise ArchiveError("unknown compression %r (expected none or gzip)" % (compression,))
    p = plan(images, format=format, layers=layers, repo_tags=repo_tags, name=name, origin=origin)
    if format == "oci-dir":
        if compression != "none":
            raise ArchiveError("compression applies to archives, not to oci-dir")
        if not isinstance(dest, str):
            raise ArchiveError("oci-dir needs a directory path")
        written = _write_dir(dest, p.members, move_from)
    else:
        own = isinstance(dest, str)
        raw = open(dest, "wb", buffering=0) if own else dest
        try:
            counter = _Counter(raw)
            if compression == "gzip":
                gz = gzip.GzipFile(filename="", mode="wb", fileobj=counter, mtime=0, compresslevel=compresslevel)
                _write_tar(_Sink(gz), p.members)
                gz.close()
            else:
                # copy_file_range only when we own an unbuffered plain file
                flusher = _Flusher(raw.fileno()) if own else None
                try:
                    _write_tar(_Sink(counter, raw.fileno() if own else None, flusher), p.members)
                finally:
                    if flusher is not None:
                        flusher.finish()
            if hasattr(raw, "flush"):
                raw.flush()
            written = counter.written
        finally:
            if own:
                raw.close()
    return {
        "format": format,
        "layers": p.layers,
        "manifests": p.manifests,
        "index_digest": p.index_digest,
        "bytes_written": written,
        "members": [m[0] for m in p.members],
    }


# ---------------------------------------------------------------------------------------------------------
# writing layers in place
# ---------------------------------------------------------------------------------------------------------
def can_place(images, format="docker-archive", layers="uncompressed", compression="none"):
    """Whether ``open_placed`` can lay out this archive before the layer files exist."""
    if format == "oci-dir" or compression != "none":
        return False
    if isinstance(images, (Image, dict)):
        images = [images]
    if layers == "compressed" and format != "docker-archive":
        # a docker manifest converted to OCI takes each layer's media type from its content
        return all(Image.coerce(i).manifest_media_type == OCI_MANIFEST for i in images)
    return True


class _Region(object):
    """Writes one layer into its place in a placed archive; what does not fit goes to a spill file."""

    def __init__(self, owner, name, offset, capacity, spill_path):
        self.owner = owner
        self.name = name
        self.offset = offset
        self.capacity = capacity
        self.spill_path = spill_path
        self.spill = None
        self.size = 0
        self.closed = False
        self.abandoned = False

    def write(self, data):
        n = len(data)
        if self.closed:
            raise ValueError("write to a closed layer region")
        if self.spill is None and self.size + n > self.capacity:
            # bigger than its place: from now on the whole layer lives in a spill file
            self.spill = open(self.spill_path, "wb")
            if self.size:
                self.owner.copy_out(self.offset, self.size, self.spill)
        if self.spill is not None:
            self.spill.write(data)
        else:
            self.owner.pwrite(data, self.offset + self.size)
        self.size += n
        return n

    def close(self):
        if not self.closed:
            self.closed = True
            if self.spill is not None:
                self.spill.close()

    def abandon(self):
        # a finished layer stays finished (the fetch abandons every sink it opened when it ends)
        if not self.closed:
            self.abandoned = True
            self.close()

    @property
    def fits(self):
        return self.closed and self.spill is None and self.size == self.capacity


class PlacedArchive(object):
    """An archive laid out before its layers exist: see ``open_placed``."""

    def __init__(self, path, images, plan_, options, workdir):
        import threading
        self.path = path
        self.images = images
        self.plan = plan_
        self.options = options
        self.workdir = workdir
        self.regions = {}          # member name -> (offset, capacity)
        self.writers = {}          # member name -> the latest _Region
        self._lock = threading.Lock()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.flusher = _Flusher(self.fd)
        try:
            self.total = self._lay_out()
        except (ValueError, OverflowError, OSError) as exc:
            # sizes no file system or tar header can hold (a manifest that lies): nothing was fetched yet
            self.abort()
            raise ArchiveError("cannot lay out the archive: %s" % exc)
        except BaseException:
            self.abort()
            raise

    def _lay_out(self):
        offset = 0
        for name, data, _path, size in self.plan.members:
            header = _tar_header(name, size)
            self.pwrite(header, offset)
            offset += len(header)
            if size is None:
                continue
            if data is not None:
                self.pwrite(data, offset)
            else:
                self.regions[name] = (offset, size)
            offset += size + (-size % _BLOCK)
        offset += 2 * _BLOCK
        os.ftruncate(self.fd, offset)   # padding and the end-of-archive blocks are zeros
        return offset

    def pwrite(self, data, offset):
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n
        self.flusher.copied_bytes(len(data), self._lock)

    def copy_out(self, offset, size, handle):
        while size:
            block = os.pread(self.fd, min(size, COPY_SIZE), offset)
            if not block:
                raise ArchiveError("the archive %s is shorter than expected" % self.path)
            handle.write(block)
            offset += len(block)
            size -= len(block)

    def writer(self, key):
        """A sink (``write``/``close``/``abandon``) for the layer file named by ``key`` (its digest in the
        archive: the diff_id for uncompressed layers, the blob digest for compressed ones). A new writer for
        the same key starts the layer again from its first byte."""
        name = _blob_name(key)
        if name not in self.regions:
            raise ArchiveError("no layer %s in this archive" % key)
        offset, capacity = self.regions[name]
        with self._lock:
            old = self.writers.get(name)
            region = _Region(self, name, offset, capacity, os.path.join(self.workdir, _hex(key) + ".spill"))
            self.writers[name] = region
        if old is not None:
            old.abandon()
            if old.spill is not None and os.path.exists(old.spill_path):
                os.unlink(old.spill_path)
        return region

    def finish(self):
        """Check that every layer filled its place exactly; returns what ``write_archive`` returns. When a
        size was guessed wrong, the archive is written again from the places and spill files."""
        self.flusher.finish()
        missing = [name for name in self.regions
                   if name not in self.writers or not self.writers[name].closed or self.writers[name].abandoned]
        if missing:
            raise ArchiveError("layer %s was never written" % missing[0])
        if self.options["layers"] == "compressed":
            # blob sizes come from the manifest: another size is an error, never a reason to rewrite
            for name, region in self.writers.items():
                if not region.fits:
                    raise ArchiveError("layer %s has %d bytes, the manifest says %d"
                                       % (name.rsplit("/", 1)[-1], region.size, region.capacity))
        if all(w.fits for w in self.writers.values()):
            os.close(self.fd)
            self.fd = None
            return {"format": self.options["format"], "layers": self.plan.layers, "manifests": self.plan.manifests,
                    "index_digest": self.plan.index_digest, "bytes_written": self.total,
                    "members": [m[0] for m in self.plan.members], "rewritten": False}
        result = self._rewrite()
        result["rewritten"] = True
        return result

    def _rewrite(self):
        sources = {}
        for name, region in self.writers.items():
            if region.spill is not None:
                sources[name] = (region.spill_path, 0, region.size)
            else:
                sources[name] = (self.path, region.offset, region.size)
        layers_mode = self.options["layers"]
        images = []
        for image in self.images:
            layers = []
            for layer in image.layers:
                key = layer.diff_id if layers_mode == "uncompressed" else layer.digest
                path, offset, size = sources[_blob_name(key)]
                layers.append(Layer(layer.digest, layer.diff_id, layer.size, layer.media_type, path,
                                    uncompressed_size=size, urls=layer.urls, offset=offset))
            images.append(Image(image.config, image.manifest, layers, manifest_media_type=image.manifest_media_type))
        second = self.path + ".rewrite"
        try:
            result = write_archive(second, images, **self.options)
            os.close(self.fd)
            self.fd = None
            os.rename(second, self.path)
        except BaseException:
            if os.path.exists(second):
                os.unlink(second)
            raise
        for path, _offset, _size in sources.values():
            if path != self.path:
                os.unlink(path)
        return result

    def abort(self):
        """Close and delete the partial archive (after a failed fetch)."""
        try:
            self.flusher.finish()
        except ArchiveError:
            pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        for region in list(self.writers.values()):
            region.close()
            if region.spill is not None and os.path.exists(region.spill_path):
                os.unlink(region.spill_path)
        if os.path.exists(self.path):
            os.unlink(self.path)


def open_placed(dest, images, format="docker-archive", layers="uncompressed", repo_tags=(), name=None,
                origin=None, workdir=None):
    """Lay out an uncompressed-tar archive at ``dest`` before its layers exist (see the module docstring)."""
    if isinstance(images, (Image, dict)):
        images = [images]
    images = [Image.coerce(i) for i in images]
    if not can_place(images, format, layers):
        raise ArchiveError("this archive cannot be laid out before its layers are fetched")
    for image in images:
        for layer in image.layers:
            if layers == "uncompressed" and not isinstance(layer.uncompressed_size, int):
                raise ArchiveError("placing uncompressed layers needs their (expected) sizes")
    options = {"format": format, "layers": layers, "repo_tags": list(repo_tags or ()), "name": name,
               "origin": origin, "compression": "none"}
    p = plan(images, format=format, layers=layers, repo_tags=repo_tags, name=name, origin=origin)
    return PlacedArchive(dest, images, p, options, workdir or os.path.dirname(os.path.abspath(dest)))


# ---------------------------------------------------------------------------------------------------------
# reading back
# ---------------------------------------------------------------------------------------------------------
def _parse_index(data):
    try:
        index = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return index if isinstance(index, dict) else None


def read_index(path):
    """Return the parsed index.json of an archive or oci-dir, or None (see the module docstring)."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "index.json"), "rb") as f:
                data = f.read(MAX_INDEX_SIZE + 1)
            return _parse_index(data) if len(data) <= MAX_INDEX_SIZE else None
        with open(path, "rb") as raw:
            head = raw.read(2)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for count, member in enumerate(tar):
                        if member.name == "index.json" and member.isfile():
                            if member.size > MAX_INDEX_SIZE:
                                return None
                            f = tar.extractfile(member)
                            return _parse_index(f.read())
                        if member.name.startswith("blobs/") or count > 8:
                            return None
            finally:
                if stream is not raw:
                    stream.close()
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return None
    return None


def read_origin(path):
    """Return the origin dict recorded in an archive or oci-dir, or None (see the module docstring)."""
    index = read_index(path)
    if not index:
        return None
    value = (index.get("annotations") or {}).get(ORIGIN_ANNOTATION)
    if not isinstance(value, str):
        return None
    try:
        origin = json.loads(value)
    except ValueError:
        return None
    return origin if isinstance(origin, dict) else None


__all__ = ["Layer", "Image", "Plan", "plan", "write_archive", "read_index", "read_origin", "normalize_name",
           "ArchiveError", "FORMATS", "LAYER_MODES", "COMPRESSIONS", "ORIGIN_ANNOTATION"]
