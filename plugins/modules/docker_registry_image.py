#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_image
short_description: Fetch a whole image from a Docker/OCI registry into an archive docker, podman and containerd load
version_added: 0.1.0
description:
  - Fetches an image and assembles it, without a container daemon, into an archive that C(docker load),
    C(podman load) and C(ctr images import) accept under its name (hocker's C(hocker-image)), or into an
    OCI image layout directory.
  - Layers are downloaded in parallel, verified against their digests (and, for uncompressed layers, against
    the config's diff_ids while they are decompressed) and streamed with constant memory.
  - The output is reproducible (the same image and options give byte-identical files) and records what it was
    made from, so a re-run asks the registry only for the manifest digest (a HEAD request) and downloads
    nothing when O(dest) is up to date.
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry
  - hocker.registry._registry.attributes
  - hocker.registry._registry.actiongroup
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details: Only manifests are fetched (HEAD where it suffices); no blob is downloaded and nothing is written.
  diff_mode:
    support: full
    details: Shows the source manifest digest of O(dest) before and after.
  idempotent:
    support: full
    details: O(dest) records the manifest digest and options it was made from; an up-to-date O(dest) is left alone.
options:
  dest:
    description:
      - The archive file to write, or the directory for O(format=oci-dir). It is replaced atomically; a failed
        run leaves an existing O(dest) as it was.
    type: path
    required: true
  format:
    description:
      - V(docker-archive) writes a tar with C(manifest.json) and C(repositories) (what C(docker save) writes)
        plus C(oci-layout) and C(index.json), so docker's classic and containerd image stores, podman and
        C(ctr images import) all load it under its name.
      - V(oci-archive) writes an OCI image layout as a tar; V(oci-dir) writes it as a directory. Both use OCI
        media types (Docker manifests are converted; config and layer blobs stay unchanged).
    type: str
    choices: [docker-archive, oci-archive, oci-dir]
    default: docker-archive
  layers:
    description:
      - V(uncompressed) stores each layer as a plain tar named by its diff_id (what C(docker save) and hocker
        write, and what Nix's C(dockerTools) expect); each diff_id is verified while decompressing.
      - V(compressed) keeps the registry blobs as they are (smaller and faster; the digests stay the
        registry's).
    type: str
    choices: [uncompressed, compressed]
    default: uncompressed
  compression:
    description:
      - V(gzip) compresses the whole archive (hocker's C(.tar.gz)); C(docker load) and C(podman load) read it,
        C(ctr images import), C(skopeo) and C(podman pull docker-archive:) do not.
    type: str
    choices: [none, gzip]
    default: none
  repo_tags:
    description:
      - The names the loaded image gets, as C(name:tag).
      - Defaults to the familiar name docker shows, for example V(hello-world:latest) or
        V(localhost:5000/app:1.2). An image given only by digest gets no tag by default.
    type: list
    elements: str
  max_workers:
    description:
      - How many layers are downloaded and decompressed at the same time.
    type: int
    default: 4
  force:
    description:
      - Rebuild O(dest) even when it is up to date.
    type: bool
    default: false
notes:
  - O(platform=all) with an OCI format keeps every platform of an index.
  - Archives without O(compression) are laid out before the layers are fetched when the layer sizes can be
    known, so that each layer is written once, straight into its place. For O(layers=uncompressed) the sizes
    come from the last four bytes of each gzip blob (one small ranged request per layer, only for layers of
    4 MiB or more on average, none for blobs already in O(cache_dir)); if a size turns out different the
    archive is written again, with the same result.
  - When the Python library C(isal) is installed on the managed host, gzip layers are inflated with it (about
    twice as fast as zlib); the output is the same.
seealso:
  - module: hocker.registry.docker_registry_layer
  - module: hocker.registry.docker_registry_manifest
"""

EXAMPLES = r"""
- name: Fetch hello-world for docker load
  hocker.registry.docker_registry_image:
    image: hello-world
    dest: /srv/images/hello-world.tar

- name: Load it
  ansible.builtin.command: docker load -i /srv/images/hello-world.tar
  changed_when: true

- name: An arm64 image from a private registry, layers kept compressed, with a blob store
  hocker.registry.docker_registry_image:
    image: reg.example.com:8443/team/app:1.2
    platform: linux/arm64
    layers: compressed
    cache_dir: /var/cache/hocker
    username: deploy
    password: "{{ registry_password }}"
    dest: /srv/images/app-1.2-arm64.tar
    mode: "0644"

- name: Every platform as an OCI layout directory
  hocker.registry.docker_registry_image:
    image: ghcr.io/owner/app:1.2
    platform: all
    format: oci-dir
    dest: /srv/oci/app-1.2

- name: hocker's gzipped archive under another name
  hocker.registry.docker_registry_image:
    image: library/debian:12
    compression: gzip
    repo_tags: [mirror.example.com/debian:12]
    dest: /srv/images/debian-12.tar.gz
"""

RETURN = r"""
image:
  description: The normalised image reference.
  returned: always
  type: str
  sample: registry-1.docker.io/library/hello-world:latest
digest:
  description: The digest the reference resolves to (the index's digest when the tag names an index).
  returned: success
  type: str
  sample: sha256:b1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5d
manifest_digest:
  description: The digest of the selected platform's image manifest (the first one with O(platform=all)).
  returned: success
  type: str
  sample: sha256:6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c
config_digest:
  description: The digest of the image config, which is the image ID docker and podman show.
  returned: success
  type: str
  sample: sha256:0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc
source:
  description:
    - Where the image came from - the registry's base URL, the O(registry_mirrors) entry that served it, or
      the O(cache_dir) path with O(offline=true).
  returned: success
  type: str
  sample: https://registry-1.docker.io
platform:
  description: The selected platform (V(all) with O(platform=all)).
  returned: success
  type: str
  sample: linux/amd64
layers:
  description: The layers written, in order.
  returned: success
  type: list
  elements: dict
  contains:
    digest:
      description: The registry digest of the layer blob.
      type: str
    diff_id:
      description: The digest of the uncompressed layer.
      type: str
    size:
      description: The size of the registry blob.
      type: int
    media_type:
      description: The media type of the registry blob.
      type: str
repo_tags:
  description: The names written into the archive.
  returned: success
  type: list
  elements: str
  sample: [hello-world:latest]
format:
  description: The output format.
  returned: success
  type: str
  sample: docker-archive
dest:
  description: The archive or directory written.
  returned: success
  type: str
  sample: /srv/images/hello-world.tar
bytes_written:
  description: The size of the archive written (for O(format=oci-dir), the sum of its files).
  returned: when O(dest) was written
  type: int
  sample: 7340544
cache_hits:
  description: How many layer blobs came from O(cache_dir) instead of the network.
  returned: success
  type: int
  sample: 0
changed:
  description: Whether O(dest) was (or in check mode would be) changed.
  returned: always
  type: bool
bytes_downloaded:
  description: Body bytes received from the registry (0 when nothing was fetched).
  returned: always
  type: int
elapsed:
  description: Seconds the module ran.
  returned: always
  type: float
"""

import os
import shutil

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule
from ansible_collections.hocker.registry.plugins.module_utils._registry import archive
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import config_diff_ids, parse_config
from ansible_collections.hocker.registry.plugins.module_utils._registry.pipeline import expected_sizes, fetch_layers
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference

ORIGIN_VERSION = 1
PLACE_MIN_AVERAGE = 4 * 1024 * 1024   # average blob size from which uncompressed layers are placed


def _check_repo_tags(tags):
    for tag in tags:
        ref = parse_reference(tag) if isinstance(tag, str) else None
        if ref is None or ref.digest or ":" not in tag.rsplit("/", 1)[-1]:
            raise InvalidReference("repo_tags entries must look like name:tag, got %r" % (tag,))


def _inputs(rm, source_digest, repo_tags, platform_text):
    p = rm.params
    return {"version": ORIGIN_VERSION, "image": str(rm.reference), "source": source_digest,
            "platform": platform_text, "format": p["format"], "layers": p["layers"],
            "compression": p["compression"], "repo_tags": list(repo_tags)}


def _source_digest(rm):
    """The digest the reference names now: from the reference itself, a HEAD, or a GET."""
    ref = rm.reference
    if ref.digest:
        return ref.digest
    client = rm.client
    head = client.head_manifest()
    if head is not None:
        return head[0]
    return client.get_manifest().digest


def fetch(rm):
    p = rm.params
    fmt = p["format"]
    dest = p["dest"]
    all_platforms = (p.get("platform") or "").lower() == "all"
    if all_platforms and fmt == "docker-archive":
        raise InvalidReference("platform=all needs format oci-archive or oci-dir; a docker-archive holds one platform")
    if p["compression"] != "none" and fmt == "oci-dir":
        raise InvalidReference("compression applies to archives, not to format oci-dir")
    ref = rm.reference
    repo_tags = p["repo_tags"] if p["repo_tags"] is not None else ([ref.familiar] if ref.tag else [])
    _check_repo_tags(repo_tags)
    platform_text = "all" if all_platforms else str(rm.wanted_platform())
    rm.result.update(dest=dest, format=fmt, repo_tags=repo_tags, cache_hits=0)
    if fmt == "oci-dir" and os.path.exists(dest) and not os.path.isdir(dest):
        raise InvalidReference("dest %s exists and is not a directory (format oci-dir writes a directory)" % dest)
    if fmt != "oci-dir" and os.path.isdir(dest):
        raise InvalidReference("dest %s is a directory; %s writes a file" % (dest, fmt))
    if fmt == "oci-dir" and os.path.isdir(dest) and os.listdir(dest) and archive.read_origin(dest) is None:
        raise InvalidReference("dest %s is a directory this module did not write; it is not replaced (give an "
                               "empty or new directory)" % dest)

    old = archive.read_origin(dest) if os.path.exists(dest) else None
    old_inputs = old.get("inputs") if isinstance(old, dict) else None
    if old_inputs and not p["force"]:
        source = _source_digest(rm)
        wanted = _inputs(rm, source, repo_tags, platform_text)
        if old_inputs == wanted:
            rm.result.update(old.get("outputs") or {})
            rm.result.update(image=str(ref), digest=source)
            if rm.params.get("offline"):
                rm.result["source"] = rm.store.path
            elif rm._client is not None and rm._client.source:
                rm.result["source"] = rm._client.source
            _diff(rm, old_inputs, source)
            rm.result["changed"] = rm.apply_file_attributes(dest, False)
            return

    client = rm.client
    known_configs = {}   # manifest digest -> config bytes already fetched while resolving
    if all_platforms:
        top, manifests = client.resolve_all()
        selected = manifests
        rm.result.update(image=str(ref), digest=top.digest, manifest_digest=manifests[0][1].digest,
                         config_digest=manifests[0][1].config.get("digest"), platform="all")
    else:
        resolved = client.resolve(rm.wanted_platform(), check_config=not rm.check_mode)
        rm.describe(resolved)
        top = resolved.top
        selected = [(resolved.platform, resolved.image)]
        known_configs[resolved.image.digest] = resolved.config_bytes
    _diff(rm, old_inputs, top.digest)
    if rm.check_mode:
        rm.result["layers"] = [{"digest": d.get("digest"), "size": d.get("size"), "media_type": d.get("mediaType"),
                                "diff_id": None} for _p, m in selected for d in m.layers]
        rm.result["changed"] = True
        return

    images = []
    wanted_layers = []
    for _plat, manifest in selected:
        config_bytes = known_configs.get(manifest.digest) or client.get_blob_bytes(manifest.config, what="config")
        config = parse_config(config_bytes, "config %s" % manifest.config.get("digest"))
        diff_ids = config_diff_ids(config, len(manifest.layers), "the config of %s" % manifest.digest)
        pairs = list(zip(manifest.layers, diff_ids))
        wanted_layers.extend(pairs)
        images.append((manifest, config_bytes, pairs))

    if fmt == "docker-archive" and p["layers"] == "compressed" and any(
            "zstd" in (d.get("mediaType") or "") for d, _diff_id in wanted_layers):
        rm.warn("this image has zstd-compressed layers, which docker engines before 23.0 cannot load from a "
                "docker-archive with layers=compressed (podman and containerd can); use layers=uncompressed "
                "for older docker engines")
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise InvalidReference("the directory of dest %s does not exist" % dest)
    # one work directory per dest, hidden beside it on the same filesystem: a run killed before its clean-up
    # leaves at most this one behind, and the next run starts it afresh; a lock keeps concurrent runs for the
    # same dest apart
    workdir = os.path.join(directory, ".%s.hocker-work" % os.path.basename(dest))
    inputs = _inputs(rm, top.digest, repo_tags, platform_text)
    seen = set()
    layer_list = []
    for d, diff_id in wanted_layers:
        if d["digest"] not in seen:
            seen.add(d["digest"])
            layer_list.append({"digest": d["digest"], "diff_id": diff_id, "size": d.get("size"),
                               "media_type": d.get("mediaType")})
    outputs = {"manifest_digest": rm.result.get("manifest_digest"), "config_digest": rm.result.get("config_digest"),
               "platform": rm.result.get("platform"), "layers": layer_list}
    write_args = dict(format=fmt, layers=p["layers"], repo_tags=repo_tags, name=ref.containerd_name,
                      origin={"inputs": inputs, "outputs": outputs})
    lock = _lock_workdir(workdir, dest)
    placed = None
    try:
        staged = os.path.join(workdir, "out" if fmt == "oci-dir" else "archive")
        placed = _open_placed(rm, images, wanted_layers, staged, workdir, write_args)
        fetched = fetch_layers(client, wanted_layers, workdir, p["layers"] == "uncompressed", store=rm.store,
                               max_workers=p["max_workers"], placement=placed, sync=fmt == "oci-dir")
        rm.result["cache_hits"] = sum(1 for f in fetched.values() if f.from_cache)
        if placed is not None:
            result = placed.finish()
            placed = None
        else:
            archive_images = _archive_images(images, lambda d, diff_id: fetched[d["digest"]].path)
            if fmt == "oci-dir":
                # the fetched files are renamed into the layout (the store's own blobs are copied)
                result = archive.write_archive(staged, archive_images, move_from=workdir, **write_args)
            else:
                result = archive.write_archive(staged, archive_images, compression=p["compression"], **write_args)
        if fmt == "oci-dir":
            _swap_dir(staged, dest, workdir)
        else:
            with open(staged, "rb") as handle:
                os.fsync(handle.fileno())
            rm.module.atomic_move(staged, dest)
        rm.result["layers"] = layer_list
        rm.result["bytes_written"] = result["bytes_written"]
    finally:
        if placed is not None:
            try:
                placed.abort()
            except Exception:  # pylint: disable=broad-except
                pass   # the work directory goes below anyway
        shutil.rmtree(workdir, ignore_errors=True)
        _unlock_workdir(workdir, lock)
    rm.result["changed"] = rm.apply_file_attributes(dest, True)


def _archive_images(images, path_of, size_of=None):
    """archive.Image objects for the selected images; ``path_of(descriptor, diff_id)`` names each layer's file,
    ``size_of`` its (expected) uncompressed size."""
    result = []
    for manifest, config_bytes, pairs in images:
        layers = [archive.Layer(d["digest"], diff_id, d.get("size"), d.get("mediaType"), path_of(d, diff_id),
                                uncompressed_size=size_of(d, diff_id) if size_of else None, urls=d.get("urls"))
                  for d, diff_id in pairs]
        result.append(archive.Image(config_bytes, manifest.raw, layers, config_digest=manifest.config.get("digest"),
                                    manifest_digest=manifest.digest, manifest_media_type=manifest.media_type))
    return result


def _open_placed(rm, images, wanted_layers, staged, workdir, write_args):
    """Lay the archive out before fetching, so that every layer is written once, straight into its place.

    Possible for archives without compression when every layer file's size is known beforehand: the blob
    sizes for ``layers=compressed``; for ``uncompressed``, the sizes a gzip blob records in its last bytes
    (``expected_sizes``: one 4-byte ranged request per layer, so only for layers of some size or in the blob
    store). Returns None when that is not the case (the layers then go to files of the work directory and
    the archive is assembled after the fetch).
    """
    p = rm.params
    if p["format"] == "oci-dir" or p["compression"] != "none":
        return None
    # HOCKER_REGISTRY_PLACE_LAYERS: 0 never, 1 whenever possible (tests, benchmarks); unset: by layer size
    setting = os.environ.get("HOCKER_REGISTRY_PLACE_LAYERS", "auto")
    if setting == "0":
        return None
    size_of = None
    if p["layers"] == "uncompressed":
        blobs = dict((d["digest"], d.get("size")) for d, _diff_id in wanted_layers)
        stored = rm.store is not None and all(rm.store.has(digest, size) for digest, size in blobs.items())
        total = sum(size for size in blobs.values() if isinstance(size, int))
        if setting != "1" and not stored and total < PLACE_MIN_AVERAGE * len(blobs):
            # small layers: copying them costs less than a ranged request per layer to a distant registry
            return None
        sizes = expected_sizes(rm.client, wanted_layers, store=rm.store, max_workers=p["max_workers"])
        if not sizes or any(size is None for size in sizes.values()):
            return None

        def size_of(_descriptor, diff_id):
            return sizes[diff_id]
    archive_images = _archive_images(images, lambda d, diff_id: None, size_of)
    if not archive.can_place(archive_images, p["format"], p["layers"]):
        return None
    expected = sum(layer.uncompressed_size if p["layers"] == "uncompressed" else layer.size
                   for image in archive_images for layer in image.layers)
    try:
        free = os.statvfs(workdir)
        if expected > free.f_bavail * free.f_frsize:
            return None   # a manifest that lies, or a full disk: the fetch reports it without a huge sparse file
        return archive.open_placed(staged, archive_images, workdir=workdir, **write_args)
    except (archive.ArchiveError, OSError):
        return None


def _lock_workdir(workdir, dest):
    """Take the lock of ``dest``'s work directory and empty it; returns the lock's file descriptor."""
    import fcntl
    lock_path = workdir + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        os.close(fd)
        raise InvalidReference("another run is writing %s right now (its lock %s is held)" % (dest, lock_path))
    shutil.rmtree(workdir, ignore_errors=True)
    os.mkdir(workdir, 0o700)
    return fd


def _unlock_workdir(workdir, fd):
    try:
        os.unlink(workdir + ".lock")
    except OSError:
        pass
    os.close(fd)


def _swap_dir(staged, dest, workdir):
    """Replace the directory ``dest`` by ``staged`` with two renames (the old one is deleted afterwards)."""
    os.chmod(staged, 0o755)
    if os.path.isdir(dest):
        retired = os.path.join(workdir, "retired")
        os.rename(dest, retired)
        try:
            os.rename(staged, dest)
        except OSError:
            os.rename(retired, dest)
            raise
    else:
        os.rename(staged, dest)


def _diff(rm, old_inputs, new_source):
    if rm.diff_mode:
        rm.result["diff"] = {"before": {"source_digest": (old_inputs or {}).get("source")},
                             "after": {"source_digest": new_source}}


def main():
    rm = RegistryModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            format=dict(type="str", default="docker-archive", choices=["docker-archive", "oci-archive", "oci-dir"]),
            layers=dict(type="str", default="uncompressed", choices=["uncompressed", "compressed"]),
            compression=dict(type="str", default="none", choices=["none", "gzip"]),
            repo_tags=dict(type="list", elements="str"),
            max_workers=dict(type="int", default=4),
            force=dict(type="bool", default=False),
        ),
        file_args=True,
    )
    if rm.params["max_workers"] < 1:
        rm.module.fail_json(msg="max_workers must be at least 1")
    rm.run(fetch)


if __name__ == "__main__":
    main()
