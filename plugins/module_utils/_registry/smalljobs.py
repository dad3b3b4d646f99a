# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The jobs behind the modules whose output is small: the manifest, the config, the Nix expression.

PRIVATE to the hocker.registry collection: may change at any time.

Each takes a context ``ctx`` with ``client`` (built when first used), ``reference``, ``options``, ``check_mode``
and ``warn`` (the adapter's RegistryModule is one) and returns the module's results, ``changed`` and ``diff``
included; the module only applies file attributes.

An unchanged ``dest`` is answered from itself: the record kept on it (``destination.remember_output``)
names the manifest the reference resolved to, so a re-run asks the registry one HEAD request (none for a
digest reference) and reads the content back from ``dest``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

from ansible_collections.hocker.registry.plugins.module_utils._registry import digest as digests
from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil, nix, schema1image
from ansible_collections.hocker.registry.plugins.module_utils._registry.client import Resolved
from ansible_collections.hocker.registry.plugins.module_utils._registry.destination import (
    check_dest, known_output, put_bytes, remember_output)
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, ManifestError, PlatformError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import OCI_MANIFEST, parse_manifest

MAX_FILE = 4 * 1024 * 1024
IMAGE_FIELDS = ("digest", "manifest_digest", "config_digest", "platform")


def describe(resolved, reference):
    return {"image": str(reference), "digest": resolved.digest, "manifest_digest": resolved.manifest_digest,
            "config_digest": resolved.config_digest, "platform": resolved.platform}


def current_top(ctx):
    """A function giving the digest the reference names now (one HEAD request), for ``known_output``."""
    def head():
        if ctx.options.offline:
            return None
        found = ctx.client.head_manifest()
        return found[0] if found else None
    return head


def _read_small(path):
    with open(path, "rb") as handle:
        return handle.read(MAX_FILE + 1)


class SmallOutput:
    """A small output file at ``dest`` (or none) for one request."""

    def __init__(self, ctx, dest, follow, request):
        self.ctx = ctx
        self.dest = dest
        self.target = check_dest(dest, "file", follow) if dest is not None else None
        self.request = request

    def known(self):
        """(record, bytes of dest) when dest provably holds what is asked, else None."""
        if self.target is None or not os.path.isfile(self.target):
            return None
        record = known_output(self.target, self.ctx.reference, self.request, current_top(self.ctx))
        return (record, _read_small(self.target)) if record is not None else None

    def write(self, data, top, fields, result):
        """Put ``data`` at dest (unless it holds it) and remember what it was made from."""
        if self.target is None:
            return
        new, old = put_bytes(self.target, data, dry_run=self.ctx.check_mode)
        result.update(dest=self.dest, changed=new != old,
                      diff={"before": {"dest": self.dest, "digest": old}, "after": {"dest": self.dest, "digest": new}})
        if not self.ctx.check_mode:
            remember_output(self.target, self.ctx.reference, self.request, top, fields)

    def unchanged(self, record, result):
        result.update(jsonutil.get_dict(record, "result"))
        same = {"dest": self.dest, "digest": record.get("output")}
        result.update(image=str(self.ctx.reference), dest=self.dest, changed=False,
                      diff={"before": dict(same), "after": dict(same)})
        return result


def manifest_job(ctx, dest=None, index=False, follow=False, referrers=False):
    """docker_registry_manifest: the selected platform's manifest (or the index) and, with dest, its bytes;
    with ``referrers`` also the descriptors of the manifests whose subject is the resolved digest."""
    result = _manifest_result(ctx, dest, index, follow)
    if referrers:
        result["referrers"] = ctx.client.referrers(result["digest"])
    return result


def _manifest_result(ctx, dest, index, follow):
    out = SmallOutput(ctx, dest, follow, {"platform": str(ctx.options.wanted_platform()), "index": index,
                                          "asked": bool(ctx.options.platform)})
    known = out.known()
    if known is not None:
        record, raw = known
        result = out.unchanged(record, {})
        result["manifest"] = jsonutil.loads(raw, "dest %s" % dest)
        if index and result.get("media_type", "").endswith(("index.v1+json", "list.v2+json")):
            result["index"] = result["manifest"]
        return result
    pinned = _pinned_locally(ctx, out, index)
    if pinned is not None:
        return pinned
    resolved = _resolve_for_manifest(ctx, index)
    chosen = resolved.top if index else resolved.image
    result = describe(resolved, ctx.reference)
    result.update(manifest=chosen.data, media_type=chosen.media_type, changed=False)
    if resolved.top.is_index:
        result["index"] = resolved.top.data
        result["platforms"] = resolved.platforms
    fields = dict((k, result.get(k)) for k in IMAGE_FIELDS + ("media_type", "platforms"))
    out.write(chosen.raw, resolved.digest, fields, result)
    return result


def _pinned_locally(ctx, out, index):
    """A digest reference whose manifest ``dest`` already holds (an image manifest, or the index asked for):
    answered from ``dest`` without the registry, so a converged host does not need it."""
    ref = ctx.reference
    if out.target is None or not ref.digest or digests.file_digest(out.target) != ref.digest:
        return None
    raw = _read_small(out.target)
    manifest = parse_manifest(raw, None, ref.digest, "dest %s" % out.dest)
    if manifest.is_index and not index:
        return None
    same = {"dest": out.dest, "digest": ref.digest}
    result = {"image": str(ref), "digest": ref.digest, "manifest": manifest.data, "media_type": manifest.media_type,
              "dest": out.dest, "changed": False, "diff": {"before": dict(same), "after": dict(same)}}
    if manifest.is_index:
        result["index"] = manifest.data
    else:
        result.update(manifest_digest=ref.digest, config_digest=manifest.config.get("digest"))
    return result


def _resolve_for_manifest(ctx, index):
    client = ctx.client
    try:
        return client.resolve(ctx.options.wanted_platform(), check_config=not ctx.check_mode, list_platforms=True)
    except PlatformError:
        if not index or ctx.options.platform:
            raise
        # index=true without an explicit platform: the index is what was asked for, even when it has
        # nothing for this host
        top = client.get_manifest()
        return Resolved(top, top, None, client.leaves(top) if top.is_index else [])


def config_job(ctx, dest=None, follow=False):
    """docker_registry_config: the selected platform's config and, with dest, its exact bytes."""
    out = SmallOutput(ctx, dest, follow, {"platform": str(ctx.options.wanted_platform())})
    known = out.known()
    if known is not None:
        record, raw = known
        result = out.unchanged(record, {})
        result["config"] = jsonutil.loads(raw, "dest %s" % dest)
        return result
    client = ctx.client
    resolved = client.resolve(ctx.options.wanted_platform())
    result = describe(resolved, ctx.reference)
    if resolved.image.is_schema1:
        if ctx.check_mode:
            return _schema1_config_unknown(ctx, out, result)
        converted = schema1image.converted(resolved.image, schema1image.layer_facts(
            client, resolved.image, client.store))
        resolved.config_bytes = converted.config
        result["config_digest"] = converted.config_digest
    result.update(config=client.get_config(resolved), changed=False)
    out.write(resolved.config_bytes, resolved.digest, dict((k, result.get(k)) for k in IMAGE_FIELDS), result)
    return result


def _schema1_config_unknown(ctx, out, result):
    """Check mode on a schema 1 image: its config is made from the diff_ids of its layers, which check mode
    does not fetch."""
    ctx.warn("the config of a Docker schema 1 image is computed from its layers, which check mode does not fetch: "
             "config is not returned and changed assumes dest differs")
    result.update(config=None, changed=out.target is not None)
    if out.target is not None:
        result["dest"] = out.dest
    return result


# ------------------------------------------------------------------------------------------------ Nix
def read_manifest_file(path):
    """A saved image manifest: (bytes, parsed); an index is refused (choosing a platform needs the registry)."""
    raw = _read_small(path)
    if len(raw) > MAX_FILE:
        raise ManifestError("the manifest file %s is larger than 4 MiB" % path)
    data = jsonutil.loads(raw, "the manifest file %s" % path)
    if "manifests" in data:
        raise ManifestError("the manifest file %s is an index (multi-platform); choosing a platform needs the "
                            "registry: save the platform's image manifest instead, or leave out manifest" % path)
    return raw, data


def nix_job(ctx, fmt="fetchdocker", manifest=None, dest=None, name=None, repo_tags=None, follow=False):
    """docker_registry_nix: the expression for the image (see the module)."""
    ref = ctx.reference
    if repo_tags is not None and fmt != "fetchurl":
        ctx.warn("repo_tags is only used with format fetchurl")
    request = {"platform": str(ctx.options.wanted_platform()), "format": fmt, "name": name,
               "repo_tags": repo_tags, "manifest": manifest}
    out = SmallOutput(ctx, dest, follow, request)
    known = out.known() if manifest is None else None
    if known is not None:
        record, raw = known
        result = out.unchanged(record, {"format": fmt})
        result["expression"] = raw.decode("utf-8")
        return result
    if manifest:
        source = _from_manifest_file(ref, manifest)
    else:
        source = _from_registry(ctx)
    result = dict(source["fields"], image=str(ref), format=fmt, registry_url=source["registry_url"], changed=False)
    expression = _expression(ctx, fmt, source, name, repo_tags, result.get("platform"))
    result["expression"] = expression
    out.write(expression.encode("utf-8"), source["top"],
              dict((k, result.get(k)) for k in IMAGE_FIELDS + ("registry_url",)), result)
    return result


def _from_manifest_file(ref, path):
    raw, data = read_manifest_file(path)
    refuse_for_nix(parse_manifest(raw, None, None, "the manifest file %s" % path), "the manifest file %s" % path)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if ref.digest and ref.digest != digest:
        raise DigestMismatch("the manifest file %s has the digest %s, not %s as the image reference says"
                             % (path, digest, ref.digest))
    return {"data": data, "digest": digest, "top": digest, "top_is_index": False, "media_type": data.get("mediaType"),
            "registry_url": ref.base_urls()[0],
            "fields": {"digest": digest, "manifest_digest": digest,
                       "config_digest": jsonutil.get_dict(data, "config").get("digest")}}


def refuse_for_nix(manifest, what):
    """A Nix expression pins every blob by its registry digest and builds an image: refuse what has no
    config blob (schema 1) and what is no image (an artifact)."""
    if manifest.is_schema1:
        raise ManifestError("%s is a Docker schema 1 image: a Nix expression pins the image config blob by its "
                            "registry digest, and schema 1 has no config blob (it is computed while converting); "
                            "use docker_registry_image, which converts it" % what)
    if manifest.is_artifact:
        raise ManifestError("%s is an OCI artifact (artifactType %s), not an image: there is nothing for Nix to "
                            "build; fetch its blobs with docker_registry_layer" % (what, manifest.artifact_type))


def _from_registry(ctx):
    resolved = ctx.client.resolve(ctx.options.wanted_platform(), check_config=not ctx.check_mode)
    refuse_for_nix(resolved.image, str(ctx.reference))
    fields = describe(resolved, ctx.reference)
    return {"data": resolved.image.data, "digest": resolved.manifest_digest, "top": resolved.digest,
            "top_is_index": resolved.top.is_index, "media_type": resolved.image.media_type,
            "registry_url": ctx.client.base_url, "fields": fields}


def _expression(ctx, fmt, source, name, repo_tags, platform):
    ref = ctx.reference
    if fmt == "fetchdocker":
        if source["media_type"] == OCI_MANIFEST:
            ctx.warn("the image manifest is OCI; hocker-config (run by fetchDockerConfig) asks registries for "
                     "Docker schema 2 manifests only and may fail on it: format fetchurl does not have this limit")
        if source["top_is_index"]:
            ctx.warn("the tag names a multi-platform index; fetchDockerConfig resolves the tag again at build "
                     "time without choosing a platform, so its hash only matches if the registry serves the "
                     "%s image to it: format fetchurl addresses everything by digest" % platform)
        return nix.fetchdocker_expression(source["registry_url"], ref.repository, ref.tag, source["data"], name=name)
    return nix.fetchurl_expression(source["registry_url"], ref.repository, ref.tag, source["data"],
                                   manifest_digest=source["digest"], repo_tags=repo_tags, name=name, image=str(ref),
                                   platform=platform)
