# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The model of an image archive and its plan: what an archive or OCI layout contains, computed
without writing anything.

PRIVATE to the hocker.registry collection: may change at any time.

``Layer`` and ``Image`` describe one platform image (config and manifest bytes, layers in manifest order with
the file that holds each layer); ``plan(images, format, layers, repo_tags, name, origin)`` computes the
members (``(name, bytes or None, path or None, size)``, directories with size None), the manifests written
and the ``index.json``. Formats, layer modes, names and the reproducibility rules: see ``tarwriter``.

``Copy`` is registry content kept byte for byte (the registry's index with every manifest and blob below it,
an OCI artifact): ``plan(copy, ...)`` lays it out in the OCI formats with ``index.json`` naming its top
manifest; the layers mode does not apply.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import compute as _sha256
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError, RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import detect
from ansible_collections.hocker.registry.plugins.module_utils._registry.jsonutil import dumps as _json, loads
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    DOCKER_CONFIG, DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_TAR, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER, OCI_MANIFEST, OCI_NONDIST)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import normalize_name, repo_tag, split_tag

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
LAYER_MODES = ("uncompressed", "compressed")
COMPRESSIONS = ("none", "gzip")

ORIGIN_ANNOTATION = "io.hocker.registry.origin"
NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class ArchiveError(RegistryError):
    """An archive cannot be written from this input."""


def blob_hex(digest):
    algorithm, _sep, encoded = digest.partition(":")
    if algorithm != "sha256" or len(encoded) != 64 or encoded.strip("0123456789abcdef"):
        raise ArchiveError("unsupported digest %r (only sha256 is supported in archives)" % (digest,))
    return encoded


def blob_name(digest):
    return "blobs/sha256/" + blob_hex(digest)


def is_foreign(media_type):
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
        self.manifest_data = loads(self.manifest, "the manifest")
        self.config_data = loads(self.config, "the config")
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


def _name_annotations(repo_tags, name):
    """One annotation dict per index.json entry."""
    result = []
    for ref in repo_tags:
        repo, tag = repo_tag(ref)
        result.append({NAME_ANNOTATION: normalize_name(repo + ":" + tag), REF_NAME_ANNOTATION: tag})
    if not result and name:
        _name, tag, _digest = split_tag(name)
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
    with open(path, "rb") as f:
        return detect(f.read(4))


def _oci_layer_type(layer):
    """OCI media type of a registry layer blob kept as it is (the content decides the compression)."""
    mt = layer.media_type or ""
    if mt.startswith("application/vnd.oci.image.layer."):
        return mt
    kind = _sniff_file(layer.path)
    suffix = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[kind]
    if is_foreign(mt):
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
        return _oci_manifest(image, descs, md), OCI_MANIFEST, files

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
    return _oci_manifest(image, descs, md), OCI_MANIFEST, files


def _oci_manifest(image, layer_descriptors, md):
    """The bytes of an OCI image manifest for ``image`` with these layers (and the annotations of ``md``)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": image.config_digest, "size": len(image.config)},
        "layers": layer_descriptors,
    }
    if md.get("annotations"):
        manifest["annotations"] = md["annotations"]
    return _json(manifest)


def plan(images, format="docker-archive", layers="uncompressed", repo_tags=(), name=None, origin=None):
    """Compute the members of an archive (see the module docstring).

    With ``origin``, the record stored in index.json also lists every other member (``members``: name, size
    and, for metadata that is not named by its digest, the digest), so that an existing archive can be
    checked against it without reading its layers.
    """
    if isinstance(images, Copy):
        return _plan_copy(images, format, repo_tags, name, origin)
    images = _check_plan_args(images, format, layers)
    repo_tags = list(repo_tags or ())
    parts = _plan_images(images, layers, format, repo_tags)
    target, index_digest = _index_target(parts, format)
    head = _docker_members(parts.docker_items, repo_tags) if format == "docker-archive" else []
    return _finish_plan(format, parts, head, target, index_digest, repo_tags, name, origin)


def _finish_plan(fmt, parts, head, target, index_digest, repo_tags, name, origin):
    """The Plan: ``oci-layout``, ``index.json`` (naming ``target`` once per repo tag), the ``head`` members
    (docker-archive's), the blob directories and the blobs."""
    members = [("oci-layout", OCI_LAYOUT, None, len(OCI_LAYOUT))]
    members.extend(head)
    members.append(("blobs/", None, None, None))
    members.append(("blobs/sha256/", None, None, None))
    members.extend(parts.blobs)
    members.extend(parts.layer_blobs)
    if origin is not None:
        origin = dict(origin, members=member_record(members))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": _index_entries(target, repo_tags, name)}
    if origin is not None:
        index["annotations"] = {ORIGIN_ANNOTATION: _json(origin).decode("utf-8")}
    index_bytes = _json(index)
    members.insert(1, ("index.json", index_bytes, None, len(index_bytes)))
    return Plan(fmt, members, parts.manifests, index, index_digest, parts.layer_report)


# ---------------------------------------------------------------------------------------------------------
# registry content kept byte for byte
# ---------------------------------------------------------------------------------------------------------
class Copy(object):
    """Registry content kept byte for byte in an OCI layout (``platform: all`` keeps the registry's index;
    an OCI artifact is kept as it is): ``top``, the descriptor ``index.json`` names (``mediaType``,
    ``digest``, ``size``, optional ``artifactType``); ``metadata``, ``[(digest, bytes)]`` of every manifest
    and config below it, the top one included (checked against their digests); ``layers``, ``[Layer]`` of
    every other blob (``path`` the file that holds it, ``size`` its size), written as they are whatever the
    layers mode."""

    def __init__(self, top, metadata, layers):
        self.top = dict(top)
        self.metadata = [(digest, bytes(data)) for digest, data in metadata]
        self.layers = [Layer.coerce(layer) for layer in layers]
        for digest, data in self.metadata:
            if _sha256(data) != digest:
                raise ArchiveError("content does not match its digest %s" % digest)
        held = dict(self.metadata)
        if self.top.get("digest") not in held or self.top.get("size") != len(held[self.top["digest"]]):
            raise ArchiveError("the top manifest %s is not part of the content" % self.top.get("digest"))


def _plan_copy(copy, fmt, repo_tags, name, origin):
    if fmt == "docker-archive":
        raise ArchiveError("a docker-archive holds one image; registry content kept as it is needs oci-archive or "
                           "oci-dir")
    repo_tags = list(repo_tags or ())
    parts = _Parts()
    for digest, data in copy.metadata:
        parts.add_blob(digest, data)
    for layer in copy.layers:
        _plan_layer(parts, layer, layer.digest, layer.size, "compressed")
    top = copy.top
    parts.manifests.append({"digest": top["digest"], "media_type": top.get("mediaType"), "size": top["size"],
                            "platform": None})
    index_digest = top["digest"] if top.get("mediaType") in (OCI_INDEX, DOCKER_LIST) else None
    return _finish_plan(fmt, parts, [], top, index_digest, repo_tags, name, origin)


def member_record(members):
    """[[name, size, digest or None], ...] of the members (directories: size None); the digest only for
    metadata whose name is not its digest."""
    record = []
    for name, data, _path, size in members:
        digest = _sha256(data) if data is not None and not name.startswith("blobs/") else None
        record.append([name, size, digest])
    return record


def _check_plan_args(images, fmt, layers):
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
    return images


class _Parts(object):
    def __init__(self):
        self.blobs = []          # (name, data, None, size) of configs and manifests
        self.layer_blobs = []    # (name, None, path or (path, offset), size)
        self.manifests = []
        self.docker_items = []
        self.layer_report = []
        self.seen = set()

    def add_blob(self, digest, data):
        if digest not in self.seen:
            self.seen.add(digest)
            self.blobs.append((blob_name(digest), data, None, len(data)))


def _plan_images(images, layers, fmt, repo_tags):
    parts = _Parts()
    for image in images:
        mbytes, mtype, files = _image_manifest(image, layers, fmt)
        mdigest = _sha256(mbytes)
        parts.manifests.append({"digest": mdigest, "media_type": mtype, "size": len(mbytes),
                                "platform": image.platform})
        parts.add_blob(image.config_digest, image.config)
        parts.add_blob(mdigest, mbytes)
        layer_paths = [_plan_layer(parts, layer, digest, size, layers) for layer, digest, size in files]
        sources = dict((layer.diff_id, _layer_source(layer)) for layer, _d, _s in files if is_foreign(layer.media_type))
        # fully qualified like skopeo writes them: docker shows them familiar anyway, and podman would
        # name a familiar "app:1" localhost/app:1
        item = {"Config": blob_name(image.config_digest),
                "RepoTags": [normalize_name(repo_tag(t)[0] + ":" + repo_tag(t)[1]) for t in repo_tags],
                "Layers": layer_paths}
        if sources:
            item["LayerSources"] = sources
        parts.docker_items.append(item)
    return parts


def _plan_layer(parts, layer, digest, size, layers):
    bname = blob_name(digest)
    if digest not in parts.seen:
        parts.seen.add(digest)
        if layers == "compressed" and layer.path is not None and not layer.offset:
            actual = _file_size(layer.path)
            if actual != size:
                raise ArchiveError("layer file %s has %d bytes, the manifest says %d" % (layer.path, actual, size))
        parts.layer_blobs.append((bname, None, (layer.path, layer.offset) if layer.offset else layer.path, size))
    parts.layer_report.append({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size,
                               "media_type": layer.media_type})
    return bname


def _layer_source(layer):
    src = {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
    if layer.urls:
        src["urls"] = layer.urls
    return src


def _index_target(parts, fmt):
    """The descriptor index.json names (the image manifest, or a generated index of several), and the
    generated index's digest (None for one image)."""
    manifests = parts.manifests
    if len(manifests) == 1:
        target = {"mediaType": manifests[0]["media_type"], "digest": manifests[0]["digest"],
                  "size": manifests[0]["size"]}
        if fmt != "docker-archive":
            target["platform"] = manifests[0]["platform"]
        return target, None
    nested = _json({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": m["media_type"], "digest": m["digest"], "size": m["size"],
                       "platform": m["platform"]} for m in manifests],
    })
    index_digest = _sha256(nested)
    parts.add_blob(index_digest, nested)
    return {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(nested)}, index_digest


def _index_entries(target, repo_tags, name):
    entries = []
    for ann in _name_annotations(repo_tags, name):
        entry = dict(target)
        if ann:
            entry["annotations"] = ann
        entries.append(entry)
    return entries


def _docker_members(docker_items, repo_tags):
    manifest_json = _json(docker_items)
    members = [("manifest.json", manifest_json, None, len(manifest_json))]
    repositories = {}
    top = docker_items[0]["Layers"][-1].rsplit("/", 1)[-1] if docker_items[0]["Layers"] else ""
    for ref in repo_tags:
        repo, tag = repo_tag(ref)
        repositories.setdefault(repo, {})[tag] = top
    if repositories:
        data = _json(repositories)
        members.append(("repositories", data, None, len(data)))
    return members
