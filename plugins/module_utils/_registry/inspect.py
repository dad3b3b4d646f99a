# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Read-only inspection of an image on a registry: existence, digests, platforms, sizes, configs, tags.

PRIVATE to the hocker.registry collection: may change at any time.

Request cost (what ``inspect_image`` sends, for a tag reference):

- ``manifests=False``: one HEAD of the manifest (a GET only when the registry's HEAD answer has no
  ``Docker-Content-Digest``).
- ``manifests=True``: a GET of the manifest; for an index one GET per platform manifest (and per nested
  index); for a single-platform image one GET of its config (its platform is only written there). With a
  blob store, the manifest is looked up by the digest a HEAD answers, and every manifest or config the store
  holds is read from it instead of the registry.
- ``config=True``: one config GET per platform (store first).
- ``tags=True``: the tag list, one GET per page.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    ManifestError, NotFound, OfflineError, PlatformError, RegistryError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    IMAGE_TYPES, INDEX_TYPES, MAX_CONFIG_SIZE, parse_config)
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import (
    Platform, is_attestation, select)
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import REF_NAME, BlobStore


class ReadOnlyStore(BlobStore):
    """A blob store that is only read: nothing is stored, recorded, removed or touched.

    The inspecting module uses an existing store as a source of manifests and configs by digest; the client
    calls that would change it are no-ops here.
    """

    def __init__(self, path):
        BlobStore.__init__(self, path, create=False)

    def put_bytes(self, data, digest):
        return None

    def record_image(self, name, descriptor):
        return None

    def commit(self, tmp_path, digest, verified=False):
        raise RegistryError("the blob store %s is opened read-only" % self.path)

    def remove_blob(self, digest):
        return None

    def touch(self, digest):
        return None


def _platform_text(plat):
    if not isinstance(plat, dict) or not plat.get("os") or not plat.get("architecture"):
        return None
    text = "%s/%s" % (plat["os"], plat["architecture"])
    if plat.get("variant"):
        text += "/" + plat["variant"]
    return text


def config_summary(config):
    """The fields of an image config users ask about most (None where the config has none)."""
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    labels = inner.get("Labels")
    return {
        "created": config.get("created") if isinstance(config.get("created"), str) else None,
        "labels": labels if isinstance(labels, dict) else {},
        "entrypoint": inner.get("Entrypoint") if isinstance(inner.get("Entrypoint"), list) else None,
        "cmd": inner.get("Cmd") if isinstance(inner.get("Cmd"), list) else None,
        "env": inner.get("Env") if isinstance(inner.get("Env"), list) else [],
        "user": inner.get("User") if isinstance(inner.get("User"), str) else None,
        "working_dir": inner.get("WorkingDir") if isinstance(inner.get("WorkingDir"), str) else None,
    }


CONFIG_FIELDS = ("created", "labels", "entrypoint", "cmd", "env", "user", "working_dir")


def _image_entry(manifest, platform):
    layers = manifest.layers
    return {
        "platform": platform,
        "manifest_digest": manifest.digest,
        "media_type": manifest.media_type,
        "config_digest": manifest.config.get("digest"),
        "size": sum(layer.get("size", 0) for layer in layers),
        "layers": len(layers),
    }


class Inspection:
    """What ``inspect_image`` found (``result()`` is the module's result fields)."""

    def __init__(self):
        self.exists = False
        self.top = None             # the Manifest the reference names (None after a HEAD-only look)
        self.digest = None
        self.media_type = None
        self.entries = []           # one dict per platform image, index order
        self.attestations = []
        self.selected = None        # the entry for the wanted platform, or None

    def result(self):
        out = {
            "exists": self.exists,
            "digest": self.digest,
            "media_type": self.media_type,
            "platforms": [e["platform"] for e in self.entries if e.get("platform")],
            "manifests": self.entries,
            "manifest_digest": None,
            "config_digest": None,
            "platform": None,
        }
        if self.attestations:
            out["attestations"] = self.attestations
        if self.selected is not None:
            out["manifest_digest"] = self.selected.get("manifest_digest")
            out["config_digest"] = self.selected.get("config_digest")
            out["platform"] = self.selected.get("platform")
            for key in CONFIG_FIELDS:
                if key in self.selected:
                    out[key] = self.selected[key]
        return out


def _top_manifest(client, need_body):
    """(Manifest or None, digest, media_type) of what the reference names; raises NotFound when missing.

    Without a blob store a body is fetched with one GET; with one, a HEAD tells the digest (and that the
    registry still has it) and the bytes come from the store when it holds them, else from a GET by digest
    (not by tag: the tag may have moved since the HEAD). Offline, the store alone answers.
    """
    reference = client.reference
    if client.offline:
        try:
            top = client.get_manifest()
        except OfflineError:
            raise NotFound("%s is not in the blob store" % reference)
        return top, top.digest, top.media_type
    if not need_body or client.store is not None:
        head = client.head_manifest()
        if head is not None:
            digest, media_type = head[0], head[1] or None
            if not need_body:
                return None, digest, media_type
            top = client.get_manifest(digest, "manifest %s (%s)" % (digest, reference))
            return top, top.digest, top.media_type
    top = client.get_manifest()
    return top, top.digest, top.media_type


def inspect_image(client, want=None, manifests=True, config=False):
    """Look ``client.reference`` up. ``want``: the Platform to select (None: no selection).

    A missing tag, manifest or repository is ``exists: False``; every other error (authentication, transport,
    an invalid manifest) is raised.
    """
    found = Inspection()
    need_body = manifests or config
    try:
        top, digest, media_type = _top_manifest(client, need_body)
    except NotFound:
        return found
    found.exists = True
    found.top = top
    found.digest = digest
    found.media_type = media_type
    if top is None:
        return found
    if top.is_index:
        _inspect_index(client, top, found, want, config)
    else:
        _inspect_single(client, top, found, want, config)
    return found


def _attestation(descriptor):
    annotations = descriptor.get("annotations") or {}
    return {
        "digest": descriptor.get("digest"),
        "media_type": descriptor.get("mediaType"),
        "size": descriptor.get("size"),
        "subject": annotations.get("vnd.docker.reference.digest"),
    }


def _inspect_index(client, top, found, want, config):
    """An index: its attestations, one entry per platform image, the platform ``want`` selects."""
    found.attestations.extend(_attestation(d) for d in top.manifests if isinstance(d, dict) and is_attestation(d))
    candidates = []
    for plat, descriptor in client.leaves(top):
        entry, present = _platform_entry(client, descriptor)
        found.entries.append(entry)
        if present:
            candidates.append((plat, entry))
    if config:
        _add_config_fields(client, found.entries)
    if want is not None and candidates:
        try:
            found.selected = select(candidates, want)[1]
        except PlatformError:
            found.selected = None


def _add_config_fields(client, entries):
    for entry in entries:
        if entry.get("config_digest"):
            entry.update(_config_fields(client, entry))


def _platform_entry(client, descriptor):
    """(entry, whether the registry has the manifest) of one platform image an index lists; a manifest the
    registry lacks gets an entry with no config, size nor layer count (and a warning)."""
    text = _platform_text(descriptor.get("platform"))
    try:
        image = client.get_manifest(descriptor["digest"], "manifest %s (%s)" % (descriptor["digest"], text))
    except NotFound:
        client.warn("the index lists %s for %s, but the registry does not have that manifest"
                    % (descriptor["digest"], text))
        return {"platform": text, "manifest_digest": descriptor["digest"], "media_type": descriptor.get("mediaType"),
                "config_digest": None, "size": None, "layers": None}, False
    if image.media_type not in IMAGE_TYPES:
        raise ManifestError("index entry %s is not an image manifest" % descriptor["digest"])
    return _image_entry(image, text), True


def _inspect_single(client, top, found, want, config):
    """A single image manifest: its platform comes from its config."""
    if top.media_type not in IMAGE_TYPES and top.media_type not in INDEX_TYPES:
        raise ManifestError("%s is a %s, not an image" % (client.reference, top.media_type))
    entry = _image_entry(top, None)
    cfg = _config(client, entry)
    plat = Platform.from_dict(cfg)
    if plat.os and plat.architecture:
        entry["platform"] = str(plat)
    if config:
        entry.update(config_summary(cfg))
    found.entries.append(entry)
    if want is not None and (entry["platform"] is None or want.rank(plat) is not None):
        found.selected = entry


def _config(client, entry):
    descriptor = {"digest": entry["config_digest"]}
    data = client.get_blob_bytes(descriptor, MAX_CONFIG_SIZE, "config")
    return parse_config(data, "config %s" % entry["config_digest"])


def _config_fields(client, entry):
    return config_summary(_config(client, entry))


def list_tags(client, limit=None):
    """The repository's tags (sorted, at most ``limit``); [] when the repository does not exist.

    Offline, the tags the blob store holds for the repository.
    """
    if client.offline:
        prefix = client.reference.name + ":"
        tags = set()
        for entry in client.store.read_index()["manifests"]:
            name = (entry.get("annotations") or {}).get(REF_NAME, "") if isinstance(entry, dict) else ""
            if name.startswith(prefix) and "@" not in name:
                tags.add(name[len(prefix):])
        tags = sorted(tags)
        return tags[:limit] if limit else tags
    try:
        return client.list_tags(limit)
    except NotFound:
        return []
