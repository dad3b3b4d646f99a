# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
# Note that this doc fragment is **PRIVATE** to the collection. It can have breaking changes at any time.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Options shared by every module that talks to a registry.
    DOCUMENTATION = r"""
options:
  registry:
    description:
      - Base URL of the registry, V(https://host[:port]) or V(http://host[:port]). A trailing V(/v2) or
        V(/v2/) is accepted (hocker's form). Without a scheme, https is used.
      - V(library/) is added to one-component names only when this is Docker Hub.
    type: str
  tag:
    description:
      - The tag, as an alternative to writing it in O(image) (hocker's separate tag argument).
      - It is an error if O(image) carries a different tag. Without a tag and a digest, V(latest) is used.
    type: str
  platform:
    description:
      - The platform to select from a multi-platform image, V(os/arch[/variant]), for example
        V(linux/arm64) or V(linux/arm/v7).
      - Defaults to V(linux/) plus the architecture of the managed host. Matching follows containerd
        (V(linux/arm64) is V(linux/arm64/v8), V(linux/arm) is V(linux/arm/v7)); attestation entries are
        skipped and nested indexes are followed. An index entry that names no platform has the platform of its
        image config, which is read only when no entry that names one matches (as containerd does).
      - A single-platform image whose config names another os/architecture fails; an index without a
        matching entry fails and lists the platforms it offers.
      - Docker's short forms are accepted too, for Linux - V(amd64) is V(linux/amd64), V(arm64) is
        V(linux/arm64), V(arm/v7) is V(linux/arm/v7).
    type: str
  username:
    description:
      - User name for basic authentication, also sent to a bearer token service.
      - Requires O(password).
    type: str
  password:
    description:
      - Password for O(username).
    type: str
  token:
    description:
      - A static bearer token sent to the registry as it is.
    type: str
  docker_config:
    description:
      - Path of a docker C(config.json) where stored credentials and credential helpers are looked up when
        no O(username), O(password) or O(token) is given.
      - Defaults to C($DOCKER_CONFIG/config.json), else C(~/.docker/config.json); C($REGISTRY_AUTH_FILE)
        and podman's C(auth.json) are consulted too.
    type: path
    aliases: [config_path]
  validate_certs:
    description:
      - Verify the registry's TLS certificate.
    type: bool
    default: true
    aliases: [tls_verify]
  ca_path:
    description:
      - A CA bundle file used to verify the registry, or a certs.d-style directory (what skopeo's
        C(--cert-dir) takes) - its C(*.crt) files are CAs (trusted in addition to the system's), and a
        C(*.cert) file with its C(*.key) is a client certificate unless O(client_cert) is set.
      - Also honoured without this option, C(/etc/docker/certs.d/<host[:port]>/),
        C(/etc/containers/certs.d/<host[:port]>/) and C(~/.config/containers/certs.d/<host[:port]>/).
    type: path
    aliases: [ca_cert]
  client_cert:
    description:
      - Client certificate (PEM) for TLS client authentication. Requires O(client_key).
    type: path
  client_key:
    description:
      - Private key (PEM) of O(client_cert).
    type: path
  timeout:
    description:
      - Seconds to wait for a connection and for each read, from V(1) to V(3600).
    type: int
    default: 60
  retries:
    description:
      - How often one request is retried after a connection error, HTTP 408, 429 or 5xx. The delay
        starts at 1 second and doubles up to 30 seconds; a C(Retry-After) header is honoured (at most 60
        seconds). An interrupted blob download resumes where it stopped within the same run.
      - From V(0) to V(100); whatever the number, one request waits at most 15 minutes in all between its
        retries. The final error says how many tries were made.
    type: int
    default: 3
  cache_dir:
    description:
      - A blob store (an OCI image layout directory) shared by runs on this host. Blobs are stored under
        their registry digest, verified when written, and never downloaded twice.
      - Without one, a partial download is kept beside the C(dest) file as a hidden C(.<name>.part) file so
        that the next run resumes it.
    type: path
  offline:
    description:
      - Work from O(cache_dir) alone, without contacting the registry. A missing blob is an error.
    type: bool
    default: false
  registry_mirrors:
    description:
      - URLs of registry mirrors (pull-through caches) tried in order for Docker Hub references before
        C(registry-1.docker.io). A mirror that cannot be reached is skipped for the rest of the run; a mirror
        that lacks the image or blob passes the request on to the next one.
      - Mirrors are asked without the credentials meant for Docker Hub (a bearer challenge from a mirror is
        answered anonymously). RV(source) names the one that served the image.
    type: list
    elements: str
requirements:
  - requests
  - zstandard (only for zstd-compressed layers)
  - isal (optional; when installed, gzip layers are inflated with ISA-L, about twice as fast as with zlib)
notes:
  - Credentials are never returned, logged or written to files.
"""

    # The image option (with community.docker's alias ``name``); docker_registry_nix documents its own.
    IMAGE = r"""
options:
  image:
    description:
      - The image reference, the way docker names images, for example V(hello-world), V(library/debian:12),
        V(ghcr.io/owner/app:1.2), V(localhost:5000/foo), V(reg.example.com:8443/a/b/c:tag),
        V(name@sha256:<hex>), V(name:tag@sha256:<hex>) or V([::1]:5000/x).
      - The first path component names a registry only if it contains V(.) or V(:) or is V(localhost);
        V(foo:5000) is the image V(foo) with the tag V(5000). Docker Hub references (no registry,
        V(docker.io) or V(index.docker.io)) are fetched from V(registry-1.docker.io), and a one-component
        name gets V(library/).
      - A registry named by a loopback host (V(localhost), V(127.0.0.0/8), V(::1)) is tried over https
        first, then over plain http, like docker does.
      - With O(registry) set, O(image) is a repository path on that registry and must not name a registry.
      - A digest in O(image) is verified against the bytes received.
      - Credentials never belong here (nor in O(registry)); a value with C(user:password@) is refused without
        being shown.
    type: str
    required: true
    aliases: [name]
"""

    # Options of the modules that write a file at dest.
    DEST = r"""
options:
  follow:
    description:
      - When O(dest) is a symlink, write its target. Without it a symlink at O(dest) is refused, as is any
        O(dest) that exists and is not a regular file - nothing is ever written through a device, fifo or
        socket.
    type: bool
    default: false
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation
        indicates no change.
"""

    ACTIONGROUP = r"""
attributes:
  action_group:
    description: Use C(group/hocker.registry.docker_registry) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - hocker.registry.docker_registry
"""
