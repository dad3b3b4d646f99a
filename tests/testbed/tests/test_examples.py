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
