"""Self-tests of testbed/examples.py: how documented examples are collected and rewritten (no registry)."""
import os
import textwrap

from testbed import examples


class FakeRegistry:
    def __init__(self, host, scheme):
        self.host = host
        self.url = "%s://%s" % (scheme, host)
        self.username = "tester"
        self.password = "secret"


REGS = examples.Registries(FakeRegistry("127.0.0.1:1001", "http"), FakeRegistry("127.0.0.1:1002", "https"),
                           FakeRegistry("127.0.0.1:1003", "http"))
DIGEST = "sha256:" + "ab" * 32


def rewrite(text, scratch="/S", kind="module", name="m"):
    example = examples.Example(kind, name, textwrap.dedent(text), "test")
    data, rw = examples.prepare(example, REGS, scratch)
    wanted = list(rw.wanted)
    rw.digests = {(mode, repo): DIGEST for mode, repo, _tag in wanted}
    return examples.finish(example, data, rw), wanted


def test_references_registries_and_credentials():
    plays, wanted = rewrite("""
        - hocker.registry.docker_registry_image:
            image: hello-world
            dest: /srv/a.tar
        - hocker.registry.docker_registry_image:
            image: reg.example.com:8443/team/app:1.2
            username: deploy
            password: "{{ registry_password }}"
            dest: /srv/b.tar
        - hocker.registry.docker_registry_manifest:
            image: ghcr.io/owner/app@sha256:0000000000000000000000000000000000000000000000000000000000000000
        - hocker.registry.docker_registry_manifest:
            registry: http://127.0.0.1:5000/v2/
            image: library/app
            tag: v1
        """)
    tasks = plays[0]["tasks"]
    assert plays[0]["hosts"] == "localhost" and plays[0]["connection"] == "local"
    assert tasks[0]["hocker.registry.docker_registry_image"]["image"] == "127.0.0.1:1001/library/hello-world"
    assert tasks[0]["hocker.registry.docker_registry_image"]["dest"] == "/S/srv/a.tar"
    second = tasks[1]["hocker.registry.docker_registry_image"]
    assert second["image"] == "127.0.0.1:1002/team/app:1.2"
    assert (second["username"], second["password"]) == ("tester", "secret")
    assert tasks[2]["hocker.registry.docker_registry_manifest"]["image"] == "127.0.0.1:1003/owner/app@" + DIGEST
    assert tasks[3]["hocker.registry.docker_registry_manifest"]["registry"] == "http://127.0.0.1:1001/v2/"
    assert set(wanted) == {("anonymous", "library/hello-world", "latest"), ("basic", "team/app", "1.2"),
                           ("token", "owner/app", "latest"), ("anonymous", "library/app", "v1")}


def test_lookup_jinja_and_paths_in_commands():
    plays, wanted = rewrite("""
        - name: pin
          ansible.builtin.set_fact:
            image: "ghcr.io/o/app@{{ lookup('hocker.registry.image_digest', 'ghcr.io/o/app:1.2', platform='linux/arm64') }}"
        - ansible.builtin.debug:
            msg: "{{ lookup('hocker.registry.image_digest', 'team/app:2', registry='https://reg.example.com') }}"
        - ansible.builtin.command: docker load -i /srv/images/x.tar
        - ansible.builtin.debug:
            msg: "/srv/layers/{{ item }}.tar but not http://host/srv/x"
        """, kind="lookup", name="image_digest")
    tasks = plays[0]["tasks"]
    assert tasks[0]["ansible.builtin.set_fact"]["image"] == (
        "127.0.0.1:1003/o/app@{{ lookup('hocker.registry.image_digest', '127.0.0.1:1003/o/app:1.2', "
        "platform='linux/arm64') }}")
    assert tasks[1]["ansible.builtin.debug"]["msg"] == (
        "{{ lookup('hocker.registry.image_digest', 'team/app:2', registry='http://127.0.0.1:1003') }}")
    assert tasks[2]["ansible.builtin.command"] == "docker load -i /S/srv/images/x.tar"
    assert tasks[3]["ansible.builtin.debug"]["msg"] == "/S/srv/layers/{{ item }}.tar but not http://host/srv/x"
    assert ("token", "o/app", "1.2") in wanted and ("token", "team/app", "2") in wanted


def test_playbooks_target_localhost_and_inputs_are_made(tmp_path):
    plays, _wanted = rewrite("""
        - hosts: k8s_nodes
          become: true
          tasks:
            - hocker.registry.docker_registry_nix:
                image: library/debian
                tag: jessie
                manifest: /srv/manifests/debian.json
        """, scratch=str(tmp_path))
    assert plays[0]["hosts"] == "localhost"
    tasks = plays[0]["tasks"]
    assert list(tasks[0])[1] == "hocker.registry.docker_registry_manifest"
    assert tasks[0]["hocker.registry.docker_registry_manifest"] == {
        "image": "127.0.0.1:1001/library/debian", "tag": "jessie", "dest": str(tmp_path) + "/srv/manifests/debian.json"}
    assert os.path.isdir(str(tmp_path / "srv" / "manifests"))


def test_collect_finds_modules_and_role_readmes(tmp_path):
    (tmp_path / "plugins" / "modules").mkdir(parents=True)
    (tmp_path / "plugins" / "modules" / "thing.py").write_text('EXAMPLES = r"""\n- debug: msg=hi\n"""\n')
    (tmp_path / "plugins" / "modules" / "_private.py").write_text('EXAMPLES = "- debug: msg=no"\n')
    (tmp_path / "plugins" / "lookup").mkdir()
    (tmp_path / "plugins" / "lookup" / "look.py").write_text('EXAMPLES = """\n- debug: msg=x\n"""\n')
    (tmp_path / "roles" / "deploy").mkdir(parents=True)
    (tmp_path / "roles" / "deploy" / "README.md").write_text(
        "# deploy\n\n```yaml\nimage_deploy_dest: /srv\n```\n\n```yaml\n- hosts: all\n  roles: [deploy]\n```\n")
    found = examples.collect(str(tmp_path))
    assert [e.id for e in found] == ["lookup:look", "module:thing", "role:deploy#2"]


def test_role_variables_with_a_registry():
    plays, wanted = rewrite("""
        - hosts: nodes
          roles:
            - role: hocker.registry.image_deploy
              vars:
                image_deploy_registry: https://reg.example.com:8443
                image_deploy_username: deploy
                image_deploy_password: "{{ vault_registry_password }}"
                image_deploy_dest: /srv/images
                image_deploy_images:
                  - image: team/app:1.2
                    platform: linux/arm64
                  - image: team/db
        """, kind="role", name="image_deploy")
    role_vars = plays[0]["roles"][0]["vars"]
    assert role_vars["image_deploy_registry"] == "https://127.0.0.1:1002"
    assert (role_vars["image_deploy_username"], role_vars["image_deploy_password"]) == ("tester", "secret")
    assert role_vars["image_deploy_dest"] == "/S/srv/images"
    assert [i["image"] for i in role_vars["image_deploy_images"]] == ["team/app:1.2", "team/db"]
    assert set(wanted) == {("basic", "team/app", "1.2"), ("basic", "team/db", "latest")}


def test_lookup_arguments_credentials_and_variables():
    plays, wanted = rewrite("""
        - ansible.builtin.debug:
            msg: >-
              {{ lookup('hocker.registry.image_digest', 'team/app:1.2', registry='https://reg.example.com:8443',
                        platform='linux/arm64', username='deploy', password=registry_password) }}
        - ansible.builtin.set_fact:
            digests: "{{ query('hocker.registry.image_digest', 'library/debian:12', 'redis:7.2') }}"
            pinned: "{{ lookup('hocker.registry.image_digest', 'registry.example.com/a:1', username='u',
                               password=vault_registry_password | default('x')) }}"
        - ansible.builtin.debug:
            msg: "{{ lookup('hocker.registry.image_digest', 'ghcr.io/o/app:2') }} {{ digests }} {{ pinned }}"
        """, kind="lookup", name="image_digest")
    tasks = plays[0]["tasks"]
    assert tasks[0]["ansible.builtin.debug"]["msg"] == (
        "{{ lookup('hocker.registry.image_digest', 'team/app:1.2', registry='https://127.0.0.1:1002',\n"
        "          platform='linux/arm64', username='tester', password=registry_password) }}")
    facts = tasks[1]["ansible.builtin.set_fact"]
    assert facts["digests"] == ("{{ query('hocker.registry.image_digest', '127.0.0.1:1001/library/debian:12', "
                                "'127.0.0.1:1001/library/redis:7.2') }}")
    assert facts["pinned"].startswith("{{ lookup('hocker.registry.image_digest', '127.0.0.1:1002/a:1', "
                                      "username='tester',")
    assert "127.0.0.1:1003/o/app:2" in tasks[2]["ansible.builtin.debug"]["msg"]
    assert set(wanted) == {("basic", "team/app", "1.2"), ("anonymous", "library/debian", "12"),
                           ("anonymous", "library/redis", "7.2"), ("basic", "a", "1"), ("token", "o/app", "2")}


def test_variables_the_play_would_give():
    example = examples.Example("module", "m", textwrap.dedent("""
        - hocker.registry.docker_registry_store:
            path: /var/cache/hocker
            prune: true
            keep: [ghcr.io/owner/app:1.2, library/debian:12]
        - hocker.registry.docker_registry_store:
            path: /var/cache/hocker
            keep: "{{ deployed_images }}"
          register: store
          when: store_user is defined and not (ansible_user == 'x')
        - ansible.builtin.set_fact:
            api_key: "{{ vault_registry_password }}"
        - ansible.builtin.debug:
            msg: "{{ store.images }} {{ api_key }} {{ something_else }} {{ item }}"
          loop: [1]
        """), "test")
    data, rw = examples.prepare(example, REGS, "/S")
    plays = examples.finish(example, data, rw)
    keep = plays[0]["tasks"][0]["hocker.registry.docker_registry_store"]["keep"]
    assert keep == ["127.0.0.1:1003/owner/app:1.2", "127.0.0.1:1001/library/debian:12"]
    # defined by the example (register, set_fact), Ansible's own or unknown: not given
    assert rw.variables == {"deployed_images": keep, "store_user": "tester", "vault_registry_password": "secret"}


def test_runtime_sockets_and_credentials_for_a_list_of_images():
    example = examples.Example("role", "image_deploy", textwrap.dedent("""
        - hosts: k3s
          vars:
            image_deploy_images:
              - image: registry.example.com/team/app:1.2
              - image: "registry.example.com/team/db@{{ db_digest }}"
            image_deploy_username: deploy
            image_deploy_password: "{{ vault_registry_password }}"
            image_deploy_runtime_args: [--address, /run/k3s/containerd/containerd.sock]
          tasks:
            - ansible.builtin.command: ctr -a /run/containerd/containerd.sock images ls
            - ansible.builtin.command: docker -H unix:///var/run/docker.sock images
            - ansible.builtin.command: podman --url unix:///run/podman/podman.sock images
        - hosts: nodes
          vars:
            image_deploy_images: [{image: quay.io/a/b}, {image: registry.k8s.io/pause:3.9}]
            image_deploy_username: deploy
            image_deploy_password: secret
        """), "test")
    data, rw = examples.prepare(example, REGS, "/S")
    rw.sockets = {"containerd": "/T/c.sock", "docker": "/T/d.sock"}
    plays = examples.finish(example, data, rw)
    first = plays[0]["vars"]
    assert first["image_deploy_runtime_args"] == ["--address", "/T/c.sock"]
    assert [i["image"] for i in first["image_deploy_images"]] == [
        "127.0.0.1:1002/team/app:1.2", "127.0.0.1:1002/team/db@{{ db_digest }}"]
    assert [t["ansible.builtin.command"] for t in plays[0]["tasks"]] == [
        "ctr -a /T/c.sock images ls", "docker -H unix:///T/d.sock images",
        "podman --url unix:///S/run/podman/podman.sock images"]
    # credentials given with images of several registries are not mapped: they would go to every one
    assert [i["image"] for i in plays[1]["vars"]["image_deploy_images"]] == [
        "127.0.0.1:1003/a/b", "127.0.0.1:1003/pause:3.9"]


def test_inventory_groups_of_the_plays():
    example = examples.Example("role", "r", textwrap.dedent("""
        - hosts: localhost
          tasks: [{ansible.builtin.debug: {msg: "{{ groups['k8s_nodes'] }}"}}]
        - hosts: k8s_nodes:&production:!node3.example.com
          tasks: []
        - hosts: all
          tasks: []
        """), "test")
    data, rw = examples.prepare(example, REGS, "/S")
    plays = examples.finish(example, data, rw)
    assert [p["hosts"] for p in plays] == ["localhost"] * 3
    assert rw.groups == {"k8s_nodes", "production"}
    inv = examples.inventory(rw.groups)
    assert inv["all"]["hosts"] == {"localhost": {"ansible_connection": "local"}}
    assert sorted(inv["all"]["children"]) == ["k8s_nodes", "production"]
