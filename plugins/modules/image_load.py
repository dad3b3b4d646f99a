#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: image_load
short_description: Load an image archive into docker, podman or containerd, only when the runtime lacks it
version_added: 0.1.0
description:
  - Loads a docker-archive or oci-archive (written by M(hocker.registry.docker_registry_image), C(docker save),
    C(podman save), C(skopeo copy) and the like) into a container runtime on the managed host, through the
    runtime's own command line tool (C(docker load), C(podman load), C(ctr images import)).
  - The archive's C(manifest.json) and C(index.json) are read without extracting it, to learn the image ID (the
    config digest), its names and the digest containerd gives it. The runtime is asked first; the archive is
    loaded only when the runtime lacks the image. When the image is there but a wanted name is missing or
    points to another image (a tag that moved), the name is set with the runtime's tag command instead of a
    new load. Every wanted name is checked after the load.
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry.attributes
attributes:
  check_mode:
    support: full
    details: The runtime is asked what it has; nothing is loaded or tagged.
  diff_mode:
    support: full
    details: Shows, for each wanted name, the image ID (the target digest for containerd) before and after.
  idempotent:
    support: full
    details: An image already present under every wanted name with the same content is left alone.
options:
  src:
    description:
      - The archive on the managed host, a docker-archive or an oci-archive, plain or compressed with gzip, bzip2
        or xz. It must hold one image (several names for it are fine; an OCI index of several platforms is
        fine, the runtime takes the host's).
    type: path
    required: true
  runtime:
    description:
      - The runtime to load into.
      - V(auto) takes the first of V(docker), V(podman) and V(containerd) whose tool is installed and whose
        daemon answers (podman has no daemon; its image store must be usable).
      - V(containerd) uses C(ctr) in the namespace O(namespace).
    type: str
    choices: [auto, docker, podman, containerd]
    default: auto
  runtime_args:
    description:
      - Extra arguments put right after the runtime's command, before its subcommand, on every call, for
        example V([-H, unix:///run/user/1000/docker.sock]) for docker, V([--root, /srv/podman,
        --storage-driver, vfs]) for podman, V([--address, /run/k3s/containerd/containerd.sock]) for C(ctr).
      - With O(runtime=auto) they are given to whichever runtime is found, so name the runtime when you give them.
      - Use O(namespace) rather than C(--namespace) for C(ctr).
    type: list
    elements: str
  namespace:
    description:
      - The containerd namespace the image is imported into. V(k8s.io) is the one the kubelet (CRI) uses.
      - Only used with C(containerd).
    type: str
    default: k8s.io
  snapshotter:
    description:
      - The snapshotter C(ctr images import) unpacks the layers with (for example V(overlayfs) or V(native)).
        Default is containerd's default.
      - Only used with C(containerd).
    type: str
  repo_tags:
    description:
      - The names, as C(name:tag), the image must have in the runtime, for example V(app:1.2) or
        V(registry.example.com/team/app:1.2). A name without a tag gets V(latest).
      - Defaults to the names in the archive. Loading always gives the image the archive's own names as well.
      - With containerd a name the archive lacks is created from the archive's first name, so the archive must
        name the image.
    type: list
    elements: str
  timeout:
    description:
      - Seconds the load may take before it is stopped and the task fails. Every other command (version,
        inspect, list, tag) is given at most 60 seconds.
    type: int
    default: 600
notes:
  - The runtime's command line tool must be installed on the managed host (C(docker), C(podman) or C(ctr)). No
    daemon API is spoken directly, so the module works with any version those tools support.
  - An image is recognised by its ID (the config digest) for docker and podman, and by the digest of the
    archive's manifest (or index) for containerd, the way C(ctr images ls) shows it.
  - When the runtime refuses the archive, its own error message is shown, shortened.
seealso:
  - module: hocker.registry.docker_registry_image
  - name: The image_deploy role
    description: Fetches images on every host of a fleet and loads them with this module.
    link: https://example.invalid/hocker/registry/docs/fleet.md
"""

EXAMPLES = r"""
- name: Fetch an image without a daemon-side pull
  hocker.registry.docker_registry_image:
    image: ghcr.io/owner/app:1.2
    cache_dir: /var/cache/hocker
    dest: /srv/images/ghcr.io_owner_app_1.2.tar

- name: Load it into whichever runtime runs on the host
  hocker.registry.image_load:
    src: /srv/images/ghcr.io_owner_app_1.2.tar

- name: Into the containerd of a Kubernetes node, where the kubelet sees it
  hocker.registry.image_load:
    src: /srv/images/ghcr.io_owner_app_1.2.tar
    runtime: containerd
    namespace: k8s.io

- name: Into k3s's containerd, under one more name
  hocker.registry.image_load:
    src: /srv/images/ghcr.io_owner_app_1.2.tar
    runtime: containerd
    runtime_args: [--address, /run/k3s/containerd/containerd.sock]
    repo_tags:
      - ghcr.io/owner/app:1.2
      - app:stable

- name: Into a podman store of its own
  hocker.registry.image_load:
    src: /srv/images/ghcr.io_owner_app_1.2.tar
    runtime: podman
    runtime_args: [--root, /srv/podman/storage, --runroot, /run/podman-srv]
"""

RETURN = r"""
loaded:
  description: Whether the archive was (in check mode, would be) loaded; false when only names were set.
  returned: success
  type: bool
  sample: true
runtime:
  description: The runtime used.
  returned: success
  type: str
  sample: containerd
runtime_version:
  description: The version the runtime reports (the daemon's for docker and containerd).
  returned: success
  type: str
  sample: 1.6.20
image_id:
  description: The image ID, that is the digest of the image config.
  returned: success
  type: str
  sample: sha256:0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc
repo_tags:
  description: The names the image has (in check mode, would have) in the runtime, the way docker shows them.
  returned: success
  type: list
  elements: str
  sample: [hello-world:latest, registry.example.com/team/app:1.2]
archive:
  description: What the archive holds.
  returned: success
  type: dict
  contains:
    format:
      description: V(docker-archive) (it has a C(manifest.json)) or V(oci-archive).
      type: str
      sample: docker-archive
    image_id:
      description: The config digest.
      type: str
    names:
      description: The fully qualified names the archive gives the image.
      type: list
      elements: str
      sample: [docker.io/library/hello-world:latest]
    target:
      description:
        - The digest of the manifest (or index) that C(index.json) names, which containerd shows as the
          image's digest; null for an archive with only a C(manifest.json).
      type: str
    compression:
      description: V(none), V(gzip), V(bzip2) or V(xz).
      type: str
actions:
  description: What was (in check mode, would be) done.
  returned: success
  type: list
  elements: str
  sample: ["load /srv/images/app.tar into docker", "tag sha256:0e17... as app:stable"]
diff:
  description: For each wanted name, the image ID (containerd - the target digest) before and after.
  returned: in diff mode
  type: dict
  sample:
    before: {runtime: docker, images: {"app:1.2": null}}
    after: {runtime: docker, images: {"app:1.2": "sha256:0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc"}}
changed:
  description: Whether the runtime's images changed (in check mode, would change).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hocker.registry.plugins.module_utils._runtime import (
    ArchiveError,
    RuntimeFailure,
    load_image,
    module_runner,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            runtime=dict(type="str", default="auto", choices=["auto", "docker", "podman", "containerd"]),
            runtime_args=dict(type="list", elements="str"),
            namespace=dict(type="str", default="k8s.io"),
            snapshotter=dict(type="str"),
            repo_tags=dict(type="list", elements="str"),
            timeout=dict(type="int", default=600),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 1 <= params["timeout"] <= 86400:
        module.fail_json(msg="timeout must be between 1 and 86400 seconds, got %d" % params["timeout"])
    if not params["namespace"]:
        module.fail_json(msg="namespace must not be empty")
    run = module_runner(module, params["timeout"])
    try:
        result = load_image(params, module.get_bin_path, run, check_mode=module.check_mode)
    except (ArchiveError, RuntimeFailure) as exc:
        module.fail_json(msg=str(exc), changed=False)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
