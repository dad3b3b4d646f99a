#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_nix
short_description: Write Nix build instructions for a registry image, pinned by registry digests
version_added: 0.1.0
description:
  - Turns an image manifest into a Nix expression in which every blob (the config and each layer) is a
    fixed-output derivation whose hash is the registry's own digest, so nothing has to be prefetched and the
    hashes never churn (hocker's C(docker2nix)).
  - The manifest is fetched from the registry with the usual authentication and O(platform) selection, or
    read from a saved file (O(manifest)), in which case nothing is fetched and O(image) and O(tag) only name
    things. A tag is resolved once, when the expression is made; the expression addresses the config and
    every layer by digest.
  - O(format=fetchdocker) prints what hocker's C(docker2nix) printed, for nixpkgs' C(fetchdocker),
    C(fetchDockerConfig) and C(fetchDockerLayer) (which run hocker's C(hocker-config) and C(hocker-layer)
    at build time). The C(sha256) attributes are the digests in Nix's base-32, computed without C(nix-hash).
  - O(format=fetchurl) writes a self-contained expression that needs no hocker binary. It fetches each blob
    with curl, doing the registry token flow itself (anonymous bearer tokens as Docker Hub and GHCR require,
    or basic authentication), and builds a C(docker load) / C(podman load) archive named after the image and
    tag. Credentials are read at build time from the builder's environment or from a file outside the Nix
    store; they are never written into the expression.
  - Every string that comes from the registry or from the options is escaped, so nothing can inject Nix
    code. See the Nix guide C(docs/nix.md) in the collection for a worked example.
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry
  - hocker.registry._registry.attributes
  - hocker.registry._registry.actiongroup
  - hocker.registry._registry.dest
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details: The manifest is fetched (the expression depends on it); nothing is written.
  diff_mode:
    support: full
    details: Shows the digest of O(dest) before and after.
  idempotent:
    support: full
options:
  image:
    description:
      - The image reference the way docker names images, for example V(library/debian:12),
        V(ghcr.io/owner/app:1.2), V(localhost:5000/foo) or V(name@sha256:<hex>), parsed as for the other
        modules of the collection (see M(hocker.registry.docker_registry_manifest)).
      - Unlike the other modules, V(name) is not an alias of it here - O(name) names the derivation.
    type: str
    required: true
  format:
    description:
      - V(fetchdocker) is hocker-compatible output for nixpkgs' C(fetchdocker) (attributes C(name),
        C(registry), C(repository), C(imageName), C(tag), C(imageConfig), C(imageLayers)). It needs a tag;
        C(fetchDockerConfig) fetches the config through the tag at build time, and its hash pins the result.
      - In V(fetchdocker) output, the repository path is split so that C(fetchdocker) builds the right URL
        for any depth, and neither C(repository) nor C(imageName) contains a V(/) (nixpkgs asserts that); the
        last two segments of C(v2/<repository path>) become C(repository) and C(imageName), earlier segments
        stay in the C(registry) URL. V(library/debian) gives C(registry=https://registry-1.docker.io/v2/),
        C(repository=library), C(imageName=debian); V(alpine) on C(reg:5000) gives C(registry=https://reg:5000/),
        C(repository=v2), C(imageName=alpine); V(a/b/c) gives C(registry=https://reg/v2/a/), C(repository=b),
        C(imageName=c).
      - V(fetchurl) is a self-contained expression, a function C({ pkgs ? import <nixpkgs> { }, ... }) that
        returns the archive derivation. It uses C(builtins.derivation) with C(bash), C(curl), C(coreutils),
        C(gnugrep), C(gnused), C(gnutar) and C(cacert) from C(pkgs); no stdenv is needed. At build time the
        blob fetcher reads C(HOCKER_REGISTRY_USERNAME) and C(HOCKER_REGISTRY_PASSWORD), or
        C(HOCKER_REGISTRY_TOKEN), or C(HOCKER_REGISTRY_CREDENTIALS_FILE) (lines C(USERNAME=)/C(PASSWORD=) or
        C(BEARER_TOKEN=), hocker's format), and C(HOCKER_REGISTRY_CA_FILE), from the builder's environment
        (with a Nix daemon, the daemon's environment); nixpkgs' C(DOCKER_USER), C(DOCKER_PASS) and
        C(DOCKER_TOKEN) are accepted too. The expression's C(credentialsFile) argument takes a file path as a
        string.
    type: str
    choices: [fetchdocker, fetchurl]
    default: fetchdocker
  manifest:
    description:
      - Path of a saved image manifest (Docker schema 2 or OCI), for example one written by
        M(hocker.registry.docker_registry_manifest). Nothing is fetched then; O(image) and O(tag) only name
        the image and the registry the expression fetches from.
      - An index or manifest list cannot be used here (choosing a platform needs the registry); save the
        platform's manifest instead.
      - A digest in O(image) must be the digest of this file.
    type: path
  dest:
    description:
      - Write the expression to this C(.nix) file. The file is replaced atomically, only when its content
        differs.
      - Without O(dest) the expression is only returned in RV(expression).
    type: path
  name:
    description:
      - For V(fetchdocker), the C(name) attribute (hocker's C(--altImageName)); default C(imageName).
      - For V(fetchurl), the stem of the archive's store name C(docker-image-<name>.tar); default the
        repository path (without V(library/) on Docker Hub) and the tag, with V(/) replaced by V(-).
    type: str
  repo_tags:
    description:
      - Only for V(fetchurl) - the names written into the archive's C(manifest.json), which C(docker load)
        and C(podman load) give the image. The expression's C(repoTags) argument overrides them at build
        time.
      - Defaults to the familiar name with the tag, as docker shows it (V(debian:12),
        V(localhost:5000/app:1.2)); an image named only by digest gets none (it loads untagged).
    type: list
    elements: str
notes:
  - A Docker schema 1 image is refused (an expression pins the config blob by its registry digest, and schema
    1 has none; M(hocker.registry.docker_registry_image) converts it), and so is an OCI artifact (there is no
    image to build).
  - The manifest is fetched with the collection's client, so everything the other modules support applies
    (credential helpers, certificates, mirrors). The generated expression fetches the blobs itself at build
    time, with curl, from the registry the manifest came from.
  - With O(format=fetchdocker), hocker's C(hocker-config) asks only for Docker schema 2 manifests; for an
    image published only as OCI, or behind a multi-platform index, the module warns, and O(format=fetchurl)
    is the safer choice.
seealso:
  - module: hocker.registry.docker_registry_manifest
  - module: hocker.registry.docker_registry_image
  - name: nixpkgs fetchdocker
    description: The nixpkgs functions the V(fetchdocker) format calls.
    link: https://github.com/NixOS/nixpkgs/tree/master/pkgs/build-support/fetchdocker
"""

EXAMPLES = r"""
- name: hocker docker2nix output for debian:bookworm on Docker Hub
  hocker.registry.docker_registry_nix:
    image: library/debian
    tag: bookworm
    platform: linux/amd64
    dest: /srv/nix/debian.nix

- name: Self-contained expression for a private image (credentials stay out of the file)
  hocker.registry.docker_registry_nix:
    image: reg.example.com:8443/team/app:1.2
    username: deploy
    password: "{{ registry_password }}"
    format: fetchurl
    dest: /srv/nix/app.nix
    mode: "0644"
  # build it with:
  #   HOCKER_REGISTRY_CREDENTIALS_FILE=/run/secrets/registry nix-build /srv/nix/app.nix
  #   docker load -i result

- name: From a saved manifest, without contacting the registry
  hocker.registry.docker_registry_nix:
    registry: https://registry-1.docker.io/v2/
    image: library/debian
    tag: jessie
    manifest: /srv/manifests/debian-jessie.json
  register: nixexpr

- name: Show it
  ansible.builtin.debug:
    msg: "{{ nixexpr.expression }}"
"""

RETURN = r"""
source:
  description: Where the manifest came from - the registry's base URL or the O(registry_mirrors) entry that served it.
  returned: when the manifest was fetched
  type: str
  sample: https://registry-1.docker.io
expression:
  description: The Nix expression.
  returned: success
  type: str
  sample: "{ fetchDockerConfig\n  , fetchDockerLayer\n  , fetchdocker }:\n  fetchdocker rec { ... }\n"
format:
  description: The format of RV(expression).
  returned: success
  type: str
  sample: fetchdocker
image:
  description: The normalised image reference.
  returned: always
  type: str
  sample: registry-1.docker.io/library/debian:jessie
digest:
  description:
    - The digest the reference resolves to (the index's digest when the tag names an index).
    - With O(manifest), the digest of the file.
  returned: success
  type: str
  sample: sha256:b1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5d
manifest_digest:
  description: The digest of the image manifest the expression was made from.
  returned: success
  type: str
  sample: sha256:6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c
config_digest:
  description: The digest of the image's config (the image ID).
  returned: success
  type: str
  sample: sha256:054abe38b1e6f863befa4258cbfaf127b1cc9440d2e2e349b15d22e676b591e7
platform:
  description:
    - The selected platform, V(os/arch[/variant]).
    - In check mode it is null for a single-platform image, whose platform is only written in its config
      (check mode fetches no blob).
  returned: when the manifest was fetched from the registry
  type: str
  sample: linux/amd64
registry_url:
  description: The registry base URL the expression fetches from.
  returned: success
  type: str
  sample: https://registry-1.docker.io
dest:
  description: Where the expression was written.
  returned: when O(dest) is given
  type: str
changed:
  description: Whether O(dest) was (or in check mode would be) changed.
  returned: always
  type: bool
bytes_downloaded:
  description: Body bytes received from the registry (0 with O(manifest)).
  returned: always
  type: int
elapsed:
  description: Seconds the module ran.
  returned: always
  type: float
"""

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule
from ansible_collections.hocker.registry.plugins.module_utils._registry.smalljobs import nix_job


def make(rm):
    p = rm.params
    result = nix_job(rm, fmt=p["format"], manifest=p.get("manifest"), dest=p.get("dest"), name=p.get("name"),
                     repo_tags=p.get("repo_tags"), follow=p["follow"])
    rm.finish_job(result, p.get("dest"))


def main():
    rm = RegistryModule(
        argument_spec=dict(
            format=dict(type="str", default="fetchdocker", choices=["fetchdocker", "fetchurl"]),
            manifest=dict(type="path"),
            dest=dict(type="path"),
            name=dict(type="str"),
            repo_tags=dict(type="list", elements="str"),
            follow=dict(type="bool", default=False),
        ),
        file_args=True,
        without_aliases=("name",),
    )
    rm.run(make)


if __name__ == "__main__":
    main()
