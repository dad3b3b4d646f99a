"""The image_deploy role with transport relay, over real SSH (the test bed's private sshd, three inventory hosts
with their own stores and archive directories): the controller fetches every blob once for the whole fleet,
each host receives only the blobs its store lacks and writes its archives offline (it has no registry access
configured at all), a re-run changes nothing and fetches nothing, a second image sharing the base layers
sends only its own blobs, prune keeps working, check mode writes nothing.
"""
import json
import os
import random
import re
import sys

import pytest

from testbed import builder
from testbed.loaders import Podman

MiB = 1024 * 1024
ROLE = "hocker.registry.image_deploy : "
FETCH = ROLE + "Fetch each image once, on the controller, for the platforms the hosts need"
SYNC = ROLE + "Send the host the blobs its store lacks"
WRITE = ROLE + "Write the archives from the host's store"

PLAYBOOK = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "hocker.registry.image_deploy"}]}]


def _layer(name, size, seed):
    return builder.layer_from_tar(builder.make_tar({name: random.Random(seed).randbytes(size)}), level=1)


class Images(object):
    pass


@pytest.fixture(scope="module")
def images(registry_anonymous):
    """Two images that share two base layers (one of 3 MiB); the second adds a small and a 2 MiB layer."""
    base = builder.make_layer({"etc/os-release": 'NAME="deploy-relay"\nID=deploy-relay\n'})
    base_mid = _layer("opt/base.bin", 3 * MiB, "deploy-relay-base")
    one = builder.build_image([base, base_mid, builder.make_layer({"app/one.txt": "one\n"})],
                              config={"Cmd": ["/bin/true"]})
    two = builder.build_image([base, base_mid, builder.make_layer({"app/two.txt": "two\n"}),
                               _layer("app/two.bin", 2 * MiB, "deploy-relay-two")], config={"Cmd": ["/bin/false"]})
    session = registry_anonymous.push_session()
    builder.push_image(session, registry_anonymous.url, "deploy-relay/one", one, tags=["v1"])
    builder.push_image(session, registry_anonymous.url, "deploy-relay/two", two, tags=["v1"])
    found = Images()
    found.one, found.two = one, two
    found.ref_one = "%s/deploy-relay/one:v1" % registry_anonymous.host
    found.ref_two = "%s/deploy-relay/two:v1" % registry_anonymous.host
    return found


def _blob_gets(registry):
    gets = {}
    for r in registry.requests():
        m = re.search(r"/blobs/(sha256:[a-f0-9]{64})$", r["path"])
        if r["method"] == "GET" and m:
            gets[m.group(1)] = gets.get(m.group(1), 0) + 1
    return gets


def _archive(server, host, ref):
    return os.path.join(server.dest_dir(host), ref.replace("/", "_").replace(":", "_") + ".tar")


def _recap(run):
    """{host: (ok, changed)} from the play recap."""
    return dict((m.group(1), (int(m.group(2)), int(m.group(3))))
                for m in re.finditer(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)", run.stdout, re.M))


def test_relay_transport(images, registry_anonymous, sshd_server, tmp_path):
    server, reg = sshd_server, registry_anonymous
    hosts = server.hosts
    one, two = images.one.store_sizes(), images.two.store_sizes()
    server.reset_hosts()
    controller = tmp_path / "controller"
    common = {
        "image_deploy_transport": "relay",
        "image_deploy_controller_cache_dir": str(controller / "store"),
        "image_deploy_controller_dest": str(controller / "images"),
        "image_deploy_cache_dir": "{{ hocker_store_dir }}",
        "image_deploy_dest": "{{ hocker_dest_dir }}",
        "image_deploy_load": "none",
        "image_deploy_prune": True,
    }
    playbook = json.dumps(PLAYBOOK)     # JSON is YAML

    def deploy(refs, check=False):
        variables = dict(common, image_deploy_images=[{"image": ref} for ref in refs])
        # pipelining: one ssh command per module (test_relay.py covers the transfers without it)
        run = server.run_playbook(playbook, extra_vars=variables, check=check, env={"ANSIBLE_PIPELINING": "1"})
        assert run.rc == 0, run
        return run

    # first run: every blob of image one leaves the registry once for the three hosts
    reg.clear_log()
    run = deploy([images.ref_one])
    assert _blob_gets(reg) == dict((d, 1) for d in one if d != images.one.digest), reg.requests()
    fetched = run.result(hosts[0], FETCH)["results"]
    assert [(r["item"], r["changed"]) for r in fetched] == [([images.ref_one, "linux/amd64"], True)]
    for host in hosts:
        synced = run.result(host, SYNC)["results"]
        assert len(synced) == 1 and synced[0]["sent"] == len(one), synced
        assert synced[0]["bytes_sent"] == sum(one.values())
        assert run.result(host, WRITE)["results"][0]["changed"] is True
        assert os.path.isfile(_archive(server, host, images.ref_one))
    assert set(_recap(run)) == set(hosts)

    with Podman(str(tmp_path / "podman")) as podman:
        podman.load(_archive(server, hosts[-1], images.ref_one))
        assert [i["id"] for i in podman.images()] == [images.one.config_digest]

    # a re-run changes nothing and fetches no blob
    reg.clear_log()
    run = deploy([images.ref_one])
    assert all(changed == 0 for _ok, changed in _recap(run).values()), run.stdout[-3000:]
    assert _blob_gets(reg) == {}
    for host in hosts:
        assert run.result(host, SYNC)["results"][0]["sent"] == 0

    # check mode with a new image: nothing is fetched, sent or written
    reg.clear_log()
    before = dict((h, sorted(os.listdir(server.store_dir(h) + "/blobs/sha256"))) for h in hosts)
    run = deploy([images.ref_two], check=True)
    assert _blob_gets(reg) == {}
    for host in hosts:
        assert sorted(os.listdir(server.store_dir(host) + "/blobs/sha256")) == before[host]
        assert os.listdir(server.dest_dir(host)) == [os.path.basename(_archive(server, host, images.ref_one))]

    # image two replaces image one: only its own blobs leave the registry (once) and reach each host; prune
    # removes image one's archive and the blobs only image one used
    reg.clear_log()
    run = deploy([images.ref_two])
    new = set(two) - set(one)
    assert len(new) == 4    # manifest, config, two layers
    assert _blob_gets(reg) == dict((d, 1) for d in new if d != images.two.digest), reg.requests()
    for host in hosts:
        synced = run.result(host, SYNC)["results"][0]
        assert set(b["digest"] for b in synced["sent_blobs"]) == new, synced
        assert synced["bytes_sent"] == sum(two[d] for d in new)
        assert synced["present"] == len(two) - len(new)
        assert os.listdir(server.dest_dir(host)) == [os.path.basename(_archive(server, host, images.ref_two))]
        stored = set("sha256:" + n for n in os.listdir(server.store_dir(host) + "/blobs/sha256"))
        assert stored == set(two), host

    with Podman(str(tmp_path / "podman")) as podman:
        podman.load(_archive(server, hosts[0], images.ref_two))
        assert images.two.config_digest in [i["id"] for i in podman.images()]


def test_relay_platforms_of_a_mixed_fleet(registry_anonymous, seeded, sshd_server, tmp_path):
    """Two hosts over the local connection, an amd64 one and one whose facts say aarch64: the controller fetches
    the multi-platform image once per platform, each host receives and writes its own platform only; an
    entry's platform wins over the host's."""
    reg = registry_anonymous
    infos = seeded(reg, kinds=["oci-index", "docker-simple"])
    index = infos["oci-index"]
    index_ref, simple_ref = index.image(reg.host), infos["docker-simple"].image(reg.host)
    hosts = {}
    for name in ("amd", "arm"):
        hosts[name] = dict(ansible_connection="local", ansible_python_interpreter=sys.executable,
                           ansible_remote_tmp=str(tmp_path / name / "tmp"),
                           hocker_store_dir=str(tmp_path / name / "store"), hocker_dest_dir=str(tmp_path / name / "dest"))
    hosts["arm"]["fake_architecture"] = "aarch64"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    variables = {
        "image_deploy_transport": "relay",
        "image_deploy_images": [{"image": index_ref}, {"image": simple_ref, "platform": "linux/amd64"}],
        "image_deploy_controller_cache_dir": str(tmp_path / "controller" / "store"),
        "image_deploy_controller_dest": str(tmp_path / "controller" / "images"),
        "image_deploy_cache_dir": "{{ hocker_store_dir }}",
        "image_deploy_dest": "{{ hocker_dest_dir }}",
        "image_deploy_load": "none",
    }
    # the arm host's architecture fact says aarch64 (the role gathers facts only for a host that has none)
    play = json.dumps([{"hosts": "all", "gather_facts": False, "pre_tasks": [{
        "name": "facts", "when": "fake_architecture is defined", "ansible.builtin.set_fact": {
            "ansible_architecture": "{{ fake_architecture }}", "ansible_system": "Linux", "cacheable": True}}],
        "roles": [{"role": "hocker.registry.image_deploy"}]}])
    reg.clear_log()
    run = sshd_server.run_playbook(play, inventory=str(inventory), extra_vars=variables)
    assert run.rc == 0, run
    fetched = run.result("amd", FETCH)["results"]
    assert sorted(tuple(r["item"]) for r in fetched) == sorted([
        (index_ref, "linux/amd64"), (index_ref, "linux/arm64"), (simple_ref, "linux/amd64")])
    for name, plat in (("amd", "linux/amd64"), ("arm", "linux/arm64")):
        synced = run.result(name, SYNC)["results"]
        assert sorted(s["item"][0] for s in synced) == sorted(set(["linux/amd64", plat])), synced
        written = run.result(name, WRITE)["results"]
        selected = "linux/arm64/v8" if name == "arm" else plat
        assert [w["platform"] for w in written] == [selected, "linux/amd64"], written
        assert written[0]["config_digest"] == index.platforms[selected]["config_digest"]
        stored = set("sha256:" + n for n in os.listdir(str(tmp_path / name / "store" / "blobs" / "sha256")))
        other = index.platforms["linux/arm64/v8" if name == "amd" else "linux/amd64"]
        assert other["manifest_digest"] not in stored and other["config_digest"] not in stored
