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
  - hocker.registry._registry.image
  - hocker.registry._registry.attributes
  - hocker.registry._registry.actiongroup
  - hocker.registry._registry.dest
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details: Only manifests are fetched (HEAD where it suffices); no blob is downloaded and nothing is written.
  diff_mode:
    support: full
    details: Shows what O(dest) was made from before and after (source digest, platform, format, layers,
      compression, repo_tags).
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
      - Registry content kept byte for byte - every platform with O(platform=all), an OCI artifact - always
        keeps the registry blobs, whatever this says.
    type: str
    choices: [uncompressed, compressed]
    default: uncompressed
  compression:
    description:
      - V(gzip) compresses the whole archive (hocker's C(.tar.gz)); C(docker load) and C(podman load -i) read
        it; C(ctr images import), C(skopeo) and C(podman pull docker-archive:) do not.
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
  verify:
    description:
      - When O(dest) looks up to date, re-hash every file or archive member against its digest instead of
        trusting the cheap check (the structure of the archive or directory, the size of every member, and a
        stamp of each file's size and modification time kept in an extended attribute).
      - A damaged O(dest) is written again (from O(cache_dir) where the blobs are there) either way; the
        result then says what was wrong in RV(repaired).
    type: bool
    default: false
  max_inflation_ratio:
    description:
      - Stop a layer that inflates to more than this many times its compressed size, once it is past 256 MiB
        uncompressed (a decompression bomb); V(0) removes the bound. Whatever this says, inflating stops
        before the file system of O(dest) has less than 64 MiB free, with a message naming the layer.
    type: int
    default: 200
notes:
  - O(platform=all) with an OCI format copies the registry's index as it is - byte for byte, with every
    manifest it lists (attestations, artifacts and nested indexes included) and every config and blob they
    need - so the layout's index digest is RV(digest) and signatures or attestations that name it still
    apply (what C(skopeo copy --all) does). The layer blobs stay compressed (O(layers) does not apply).
  - An OCI artifact (an OCI manifest whose config is not an image config - an SBOM, a signature, a Helm chart)
    is copied byte for byte into O(format=oci-archive) or O(format=oci-dir); a V(docker-archive) cannot hold
    one, and the module says so, naming its C(artifactType).
  - Index entries that name no platform are matched by the os and architecture of their image config, as
    containerd does; those configs are read only when no entry that names its platform matches (in check mode
    too, as it is the only place the platform is written).
  - A Docker schema 1 image is read with a warning (schema 1 is deprecated) and written in its schema 2 form,
    converted as containers/image (skopeo, podman) converts it - the config is byte for byte theirs, so
    RV(config_digest) is the image ID they show; its diff_ids are computed while the layers are fetched.
  - Archives without O(compression) are laid out before the layers are fetched when the layer sizes can be
    known, so that each layer is written once, straight into its place. For O(layers=uncompressed) the sizes
    come from the last four bytes of each gzip blob (one small ranged request per layer, only for layers of
    4 MiB or more on average, none for blobs already in O(cache_dir)); if a size turns out different the
    archive is written again, with the same result.
  - The run works in a hidden, locked directory beside O(dest) (C(.<name>.hocker-work)). It is removed when
    the run succeeds; when a run fails or is killed it stays, holding the partial layer downloads, and the
    next run resumes them (with O(cache_dir) the partial downloads live in the blob store instead).
  - With O(format=oci-dir), O(mode), O(owner) and O(group) apply to the whole tree, as
    M(ansible.builtin.file) with C(recurse) does - files get O(mode); directories get it plus the execute
    bits wherever it gives read.
  - A repository named the same way with the same options (C(repo:tag) and C(repo:tag@sha256:...) for the
    same digest) is the same image; an archive made from one is up to date for the other.
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
  description:
    - The digest of the selected platform's image manifest (with O(platform=all), of the first image the index
      lists that is not an attestation nor an artifact; null when it has none).
  returned: success
  type: str
  sample: sha256:6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c
config_digest:
  description:
    - The digest of the image config, which is the image ID docker and podman show (for a schema 1 image, of
      its converted config; null in check mode, where it is not computed).
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
  description:
    - The selected platform (V(all) with O(platform=all)).
    - In check mode it is null for a single-platform image, whose platform is only written in its config
      (check mode fetches no blob).
  returned: success
  type: str
  sample: linux/amd64
layers:
  description:
    - One entry per layer of the manifest, in manifest order, repeats included (so that entry I(i) pairs with
      the config's C(rootfs.diff_ids[i])); with O(platform=all), the layers of every manifest the index lists
      (attestations and artifacts included) one after another.
  returned: success
  type: list
  elements: dict
  contains:
    digest:
      description: The registry digest of the layer blob.
      type: str
    diff_id:
      description:
        - The digest of the uncompressed layer (null for a blob of an artifact, whose config lists none, and in
          check mode).
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
repaired:
  description: Why an O(dest) that was up to date by its record was written again (it was damaged).
  returned: when O(dest) was damaged
  type: str
  sample: it has 1048576 bytes instead of 7340544 (truncated or damaged)
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

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule
from ansible_collections.hocker.registry.plugins.module_utils._registry.imagejob import ImageJob, ImageRequest

ARGUMENT_SPEC = dict(
    dest=dict(type="path", required=True),
    format=dict(type="str", default="docker-archive", choices=["docker-archive", "oci-archive", "oci-dir"]),
    layers=dict(type="str", default="uncompressed", choices=["uncompressed", "compressed"]),
    compression=dict(type="str", default="none", choices=["none", "gzip"]),
    repo_tags=dict(type="list", elements="str"),
    max_workers=dict(type="int", default=4),
    force=dict(type="bool", default=False),
    verify=dict(type="bool", default=False),
    follow=dict(type="bool", default=False),
    max_inflation_ratio=dict(type="int", default=200),
)


def request_of(rm):
    p = rm.params
    return ImageRequest(dest=p["dest"], format=p["format"], layers=p["layers"], compression=p["compression"],
                        repo_tags=p["repo_tags"], max_workers=p["max_workers"], force=p["force"],
                        verify=p["verify"], follow=p["follow"], check_mode=rm.check_mode,
                        max_inflation_ratio=p["max_inflation_ratio"])


def fetch(rm):
    job = ImageJob(lambda: rm.client, rm.reference, rm.store, request_of(rm), rm.options, rm.warn)
    rm.finish_job(job.run(), rm.params["dest"], recurse=rm.params["format"] == "oci-dir")


def main():
    rm = RegistryModule(argument_spec=ARGUMENT_SPEC, file_args=True)
    if rm.params["max_workers"] < 1 or rm.params["max_workers"] > 64:
        rm.module.fail_json(msg="max_workers must be from 1 to 64")
    if rm.params["max_inflation_ratio"] < 0:
        rm.module.fail_json(msg="max_inflation_ratio must be 0 (no bound) or more")
    rm.run(fetch)


if __name__ == "__main__":
    main()
