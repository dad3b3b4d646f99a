# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Manifest media types, parsing and digests.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import compute as compute_digest
from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import is_digest
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch, ManifestError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_TYPES = INDEX_TYPES + IMAGE_TYPES
# schema 1 last: a registry that can convert (distribution up to 2.x) serves schema 2 to a client that asks for it
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST) + DOCKER_SCHEMA1)
IMAGE_CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
SCHEMA1_WARNING = ("%s is a Docker schema 1 manifest, a deprecated format (docker 26 and containerd 2.1 no longer pull "
                   "it); it is read, but the image should be pushed again with a current client")

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_CONFIG_SIZE = 4 * 1024 * 1024


def check_descriptor(descriptor, what):
    """Validate a content descriptor from a registry (untrusted input); return it."""
    if not isinstance(descriptor, dict):
        raise ManifestError("%s is not a JSON object" % what)
    if not is_digest(descriptor.get("digest")):
        raise ManifestError("%s has an invalid digest %r" % (what, descriptor.get("digest")))
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError("%s (%s) has an invalid size %r" % (what, descriptor["digest"], size))
    media_type = descriptor.get("mediaType")
    if media_type is not None and not isinstance(media_type, str):
        raise ManifestError("%s (%s) has an invalid mediaType" % (what, descriptor["digest"]))
    for key in ("platform", "annotations"):
        if key in descriptor and not isinstance(descriptor[key], dict):
            raise ManifestError("%s (%s) has an invalid %s" % (what, descriptor["digest"], key))
    urls = descriptor.get("urls")
    if urls is not None and not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
        raise ManifestError("%s (%s) has invalid urls" % (what, descriptor["digest"]))
    return descriptor


def config_diff_ids(config, layer_count, what="the image config"):
    """The validated rootfs.diff_ids of a parsed config, one per layer."""
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(is_digest(d) for d in diff_ids):
        raise ManifestError("%s has no valid rootfs.diff_ids list" % what)
    if len(diff_ids) != layer_count:
        raise ManifestError("%s lists %d diff_ids for %d layers" % (what, len(diff_ids), layer_count))
    return diff_ids


def parse_config(raw, what="the image config"):
    """Parse config bytes into a dict (ManifestError otherwise)."""
    return jsonutil.loads(raw, what, limit=MAX_CONFIG_SIZE)


def _shape_media_type(data):
    if data.get("schemaVersion") == 1 or "signatures" in data or "fsLayers" in data:
        return DOCKER_SCHEMA1[0]
    if isinstance(data.get("manifests"), list):
        return OCI_INDEX
    config = data.get("config")
    if isinstance(config, dict):
        if config.get("mediaType") == DOCKER_CONFIG:
            return DOCKER_MANIFEST
        return OCI_MANIFEST
    return None


class Manifest:
    """A manifest as received: the exact bytes, their digest, the media type and the parsed JSON."""

    schema1 = None   # the schema1.Schema1 of a Docker schema 1 manifest

    def __init__(self, raw, media_type, digest, data):
        self.raw = raw
        self.media_type = media_type
        self.digest = digest
        self.data = data

    @property
    def size(self):
        return len(self.raw)

    @property
    def is_index(self):
        return self.media_type in INDEX_TYPES

    @property
    def config(self):
        return self.data.get("config") or {}

    @property
    def layers(self):
        if self.schema1 is not None:
            return self.schema1.layers
        return list(self.data.get("layers") or [])

    @property
    def manifests(self):
        return list(self.data.get("manifests") or [])

    def descriptor(self):
        """The descriptor of the bytes kept in a blob store (for schema 1: the payload, unsigned)."""
        if self.schema1 is not None:
            return {"mediaType": DOCKER_SCHEMA1[0], "digest": self.digest, "size": len(self.schema1.payload)}
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @property
    def stored_bytes(self):
        """What a blob store keeps under ``digest``: the bytes, or a signed schema 1 manifest's payload."""
        return self.schema1.payload if self.schema1 is not None else self.raw

    @property
    def is_schema1(self):
        return self.schema1 is not None

    @property
    def is_image(self):
        return self.media_type in IMAGE_TYPES

    @property
    def is_artifact(self):
        """An OCI manifest whose config is not an image config (containers/image's rule): an SBOM, a signature,
        a Helm chart. A config without a media type counts as an image config."""
        if self.media_type != OCI_MANIFEST:
            return False
        config_type = self.config.get("mediaType")
        return config_type is not None and config_type not in IMAGE_CONFIG_TYPES

    @property
    def artifact_type(self):
        """The artifactType field, else the config's media type (OCI 1.1's rule)."""
        value = self.data.get("artifactType")
        return value if isinstance(value, str) and value else self.config.get("mediaType")


def _digest_of(raw, expected_digest, what):
    """(the digest of ``raw``, the DigestMismatch to raise unless it turns out to be a signed schema 1
    manifest, or None); a mismatch that cannot be one is raised at once."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError("%s is larger than the 4 MiB limit" % what)
    if expected_digest and not is_digest(expected_digest):
        raise ManifestError("cannot verify %s against %r: not a sha256/sha512 digest" % (what, expected_digest))
    algorithm = expected_digest.split(":", 1)[0] if expected_digest else "sha256"
    digest = compute_digest(raw, algorithm)
    if not expected_digest or digest == expected_digest:
        return digest, None
    mismatch = DigestMismatch("%s does not match the requested digest: expected %s, got %s"
                              % (what, expected_digest, digest))
    if b'"signatures"' not in raw:   # only a signed schema 1 manifest has another digest than its bytes'
        raise mismatch
    return digest, mismatch


def parse_manifest(raw, content_type=None, expected_digest=None, what="manifest"):
    """Parse manifest bytes; decide the media type (Content-Type, then mediaType, then shape)."""
    digest, mismatch = _digest_of(raw, expected_digest, what)
    data = jsonutil.loads(raw, what, limit=MAX_MANIFEST_SIZE)
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    field = data.get("mediaType")
    if ctype in DOCKER_SCHEMA1 or field in DOCKER_SCHEMA1 or _shape_media_type(data) == DOCKER_SCHEMA1[0]:
        # the digest of a signed schema 1 manifest is its payload's, not the served bytes'
        return _schema1_manifest(raw, data, ctype, expected_digest, what)
    if mismatch is not None:
        raise mismatch
    if ctype in MANIFEST_TYPES:
        media_type = ctype
        if field and field != ctype:
            raise ManifestError("%s: Content-Type %s does not match its mediaType %s" % (what, ctype, field))
    elif field in MANIFEST_TYPES:
        media_type = field
    else:
        media_type = _shape_media_type(data)
        if media_type is None:
            raise ManifestError("%s has an unsupported media type %r" % (what, field or ctype or "unknown"))
    if media_type in IMAGE_TYPES:
        check_descriptor(data.get("config"), "the config descriptor of %s" % what)
        layers = data.get("layers", [])
        if not isinstance(layers, list):
            raise ManifestError("%s has an invalid layers list" % what)
        for position, layer in enumerate(layers):
            check_descriptor(layer, "layer %d of %s" % (position, what))
    if media_type in INDEX_TYPES:
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("%s has no manifests list" % what)
        for position, entry in enumerate(entries):
            check_descriptor(entry, "entry %d of %s" % (position, what))
    return Manifest(raw, media_type, digest, data)


def _schema1_manifest(raw, data, content_type, expected_digest, what):
    """A Docker schema 1 manifest as a Manifest: ``raw`` and ``data`` as served (signatures included),
    ``digest`` the payload's, ``schema1`` the parsed form (``layers`` are its schema 2 layers, base first,
    without sizes; no config)."""
    try:
        # imported here: schema 1 is rare and its parser is large (every module run compiles what it imports)
        from ansible_collections.hocker.registry.plugins.module_utils._registry.schema1 import parse_schema1
        parsed = parse_schema1(raw, content_type or None, expected_digest, what)
    except DigestMismatch:
        raise
    except ManifestError as exc:
        raise ManifestError("%s is a Docker schema 1 manifest that cannot be read: %s" % (what, exc))
    manifest = Manifest(raw, parsed.media_type, parsed.digest, data)
    manifest.schema1 = parsed
    return manifest
