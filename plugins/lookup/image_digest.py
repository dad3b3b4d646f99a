# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: image_digest
short_description: The digest an image reference resolves to in its registry, asked from the controller
version_added: 0.1.0
description:
  - Asks the registry, from the controller, which digest a tag points to now, so that a play can pin its images
    before it fans out to the hosts - every host then gets exactly the same image, whatever the tag points to
    meanwhile, for example with C(image="app@{{ lookup('hocker.registry.image_digest', 'app:1.2') }}").
  - Without O(platform) the result is the digest the reference resolves to (the index's digest for a
    multi-platform image), as C(docker images --digests) shows it; a HEAD request suffices. With O(platform), the
    digest of that platform's image manifest.
  - Accepts the same registry, authentication and TLS options as the modules, and looks up stored credentials
    (docker C(config.json), credential helpers, podman C(auth.json)) of the user running Ansible the same way.
  - A missing image, a refused login or an unknown platform fails the lookup with the registry's reason.
author:
  - hocker.registry developers (@hocker-registry)
options:
  _terms:
    description:
      - Image references, for example V(ghcr.io/owner/app:1.2), V(library/debian:12), V(localhost:5000/foo),
        V(name@sha256:<hex>) (then the digest is checked to exist and returned, or its platform's manifest digest).
    type: list
    elements: str
    required: true
  registry:
    description:
      - Base URL of the registry, V(https://host[:port]) or V(http://host[:port]); the terms are then repository
        paths on it.
    type: str
  tag:
    description: The tag, as an alternative to writing it in the terms.
    type: str
  platform:
    description:
      - Return the digest of this platform's image manifest, V(os/arch[/variant]) such as V(linux/arm64),
        instead of the digest the reference resolves to. Matching follows containerd (V(linux/arm64) is
        V(linux/arm64/v8)).
    type: str
  username:
    description: User name for basic authentication, also sent to a bearer token service. Requires O(password).
    type: str
  password:
    description: Password for O(username).
    type: str
  token:
    description: A static bearer token sent to the registry as it is.
    type: str
  docker_config:
    description:
      - Path of a docker C(config.json) on the controller where stored credentials and credential helpers are
        looked up when no O(username) or O(token) is given.
      - Defaults to C($DOCKER_CONFIG/config.json), else C(~/.docker/config.json); C($REGISTRY_AUTH_FILE) and
        podman's C(auth.json) are consulted too.
    type: path
  validate_certs:
    description: Verify the registry's TLS certificate.
    type: bool
    default: true
  ca_path:
    description:
      - A CA bundle (or a certs.d-style directory) to verify the registry with. Also honoured without this
        option, C(/etc/docker/certs.d/<host[:port]>/) and C(/etc/containers/certs.d/<host[:port]>/).
    type: path
  client_cert:
    description: Client certificate (PEM) for TLS client authentication. Requires O(client_key).
    type: path
  client_key:
    description: Private key (PEM) of O(client_cert).
    type: path
  timeout:
    description: Seconds to wait for a connection and for each read (1 to 3600).
    type: int
    default: 60
  retries:
    description:
      - How often one request is retried after a connection error, HTTP 408, 429 or 5xx (backoff from 1 second,
        C(Retry-After) honoured).
    type: int
    default: 3
  registry_mirrors:
    description: URLs of registry mirrors tried in order for Docker Hub references.
    type: list
    elements: str
notes:
  - The lookup runs on the controller, which needs the Python library C(requests).
  - Credentials are never shown in results or error messages.
seealso:
  - module: hocker.registry.docker_registry_manifest
  - module: hocker.registry.docker_registry_image
"""

EXAMPLES = r"""
- name: Pin a tag to its digest once, then deploy exactly that image everywhere
  ansible.builtin.set_fact:
    app_image: "ghcr.io/owner/app@{{ lookup('hocker.registry.image_digest', 'ghcr.io/owner/app:1.2') }}"
  run_once: true

- name: The arm64 image of a multi-platform tag, from a private registry
  ansible.builtin.debug:
    msg: >-
      {{ lookup('hocker.registry.image_digest', 'team/app:1.2', registry='https://reg.example.com:8443',
                platform='linux/arm64', username='deploy', password=registry_password) }}

- name: Several images at once
  ansible.builtin.set_fact:
    digests: "{{ query('hocker.registry.image_digest', 'library/debian:12', 'library/redis:7.2') }}"
"""

RETURN = r"""
_raw:
  description:
    - One digest per term - the digest the reference resolves to, or with O(platform) the digest of that
      platform's image manifest.
  type: list
  elements: str
  sample: ["sha256:b1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5d"]
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import MissingLibrary, RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import parse_platform
from ansible_collections.hocker.registry.plugins.plugin_utils._options import build_client

display = Display()

OPTIONS = ("registry", "tag", "username", "password", "token", "docker_config", "validate_certs", "ca_path",
           "client_cert", "client_key", "timeout", "retries", "registry_mirrors")


def _digest(client, reference, platform):
    if platform is not None:
        return client.resolve(platform).manifest_digest
    head = client.head_manifest()
    if head is not None and head[0]:
        if reference.digest and head[0] != reference.digest:
            raise RegistryError("the registry answers %s for %s" % (head[0], reference))
        return head[0]
    return client.get_manifest().digest


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        options = dict((key, self.get_option(key)) for key in OPTIONS)
        platform_text = self.get_option("platform")
        secrets = []

        def hide(text):
            for value in secrets:
                if value:
                    text = text.replace(value, "********")
            return text

        results = []
        for term in terms:
            try:
                platform = parse_platform(platform_text) if platform_text else None
                reference, client = build_client(dict(options, image=term), warn=lambda msg: display.warning(hide(msg)),
                                                 secret=secrets.append)
                results.append(_digest(client, reference, platform))
            except MissingLibrary as exc:
                raise AnsibleLookupError("hocker.registry.image_digest needs the Python library %s on the controller"
                                         % exc.library)
            except RegistryError as exc:
                raise AnsibleLookupError(hide("hocker.registry.image_digest: %s: %s" % (term, exc)))
        return results
