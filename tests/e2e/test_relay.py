"""store_sync: images relayed from the controller's store to a fleet over real SSH (the test bed's private
sshd, three inventory hosts with their own stores), then assembled on each host with
docker_registry_image offline and loaded with podman.

Two images share their base layers (a small one, a 12 MiB and a 64 MiB one): the registry serves every blob
once for the whole fleet, a host that has the first image receives only the second image's new blobs, a
re-run sends nothing, a damaged blob is replaced, a transfer cut in the middle of a big blob leaves nothing
damaged and the next run completes, taking over the big blob that had arrived in full before the cut.
"""
import glob
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from testbed import builder, modrun
from testbed.loaders import Podman

from ansible_collections.hocker.registry.plugins.module_utils._registry import sync
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import OfflineError, PlatformError
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore

MiB = 1024 * 1024
MID = 12 * MiB
BIG = 64 * MiB


def _random(seed, size):
    return random.Random(seed).randbytes(size)


def _build_images():
    """Two images sharing three base layers; the second adds a small and a 9 MiB layer."""
    base_small = builder.make_layer({"etc/os-release": 'NAME="relay"\nID=relay\n', "etc/relay": "base\n"})
    base_mid = builder.layer_from_tar(builder.make_tar({"opt/base/mid.bin": _random("relay-mid", MID)}), level=1)
    base_big = builder.layer_from_tar(builder.make_tar({"opt/base/big.bin": _random("relay-big", BIG)}), level=1)
    app1 = builder.make_layer({"app/one.txt": "first image\n"})
    app2 = builder.make_layer({"app/two.txt": "second image\n"})
    app2_big = builder.layer_from_tar(builder.make_tar({"app/two.bin": _random("relay-two", 9 * MiB)}), level=1)
    one = builder.build_image([base_small, base_mid, base_big, app1], config={"Cmd": ["/bin/true"]})
    two = builder.build_image([base_small, base_mid, base_big, app2, app2_big], config={"Cmd": ["/bin/false"]})
    return one, two


class Fleet(object):
    pass


@pytest.fixture(scope="module")
def fleet(registry_anonymous, sshd_server, tmp_path_factory):
    """The two images pushed to the registry and fetched once each into the controller's store."""
    reg = registry_anonymous
    one, two = _build_images()
    session = reg.push_session()
    builder.push_image(session, reg.url, "relay/one", one, tags=["v1"])
    builder.push_image(session, reg.url, "relay/two", two, tags=["v1"])
    work = tmp_path_factory.mktemp("relay")
    f = Fleet()
    f.reg, f.server, f.one, f.two = reg, sshd_server, one, two
    f.ctl = str(work / "controller-store")
    f.ref_one = "%s/relay/one:v1" % reg.host
    f.ref_two = "%s/relay/two:v1" % reg.host
    reg.clear_log()
    for ref, name in ((f.ref_one, "one"), (f.ref_two, "two")):
        # the controller's own copy; layers=compressed: no ranged size probes in the access log
        result = modrun.run_module("docker_registry_image", {"image": ref, "cache_dir": f.ctl, "layers": "compressed",
                                                             "dest": str(work / ("controller-%s.tar" % name))})
        assert not result.get("failed"), result
    f.fetch_log = reg.requests()
    return f


def _playbook(fleet, images, assemble=None, platforms=None):
    """store_sync of ``images``, then docker_registry_image offline for ``assemble`` (default: the same)."""
    sync_args = {"src": fleet.ctl, "dest": "{{ hocker_store_dir }}", "images": images}
    if platforms:
        sync_args["platforms"] = platforms
    tasks = [{"name": "sync", "hocker.registry.store_sync": sync_args}]
    assemble = images if assemble is None else assemble
    if assemble:
        tasks.append({"name": "assemble", "loop": assemble, "hocker.registry.docker_registry_image": {
            "image": "{{ item }}", "cache_dir": "{{ hocker_store_dir }}", "offline": True,
            "dest": "{{ hocker_dest_dir }}/{{ item | regex_replace('[/:]', '_') }}.tar"}})
    return json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}])   # JSON is YAML


def _archive(fleet, host, ref):
    return os.path.join(fleet.server.dest_dir(host), ref.replace("/", "_").replace(":", "_") + ".tar")


def _assert_store_intact(store_dir):
    """Every blob in the store hashes to its name (nothing damaged or partial was committed)."""
    names = glob.glob(os.path.join(store_dir, "blobs", "sha256", "*"))
    for path in names:
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(MiB), b""):
                h.update(block)
        assert h.hexdigest() == os.path.basename(path), path
    return set("sha256:" + os.path.basename(p) for p in names)


def _digests(result):
    return set(b["digest"] for b in result["sent_blobs"])


def test_relay_fleet(fleet, tmp_path):
    server, reg = fleet.server, fleet.reg
    hosts = server.hosts
    one, two = fleet.one.store_sizes(), fleet.two.store_sizes()

    # the controller fetched every blob of both images exactly once: shared layers were not fetched again
    gets = [r for r in fleet.fetch_log if r["method"] == "GET" and "/blobs/" in r["path"]]
    fetched = {}
    for r in gets:
        fetched[r["path"].rsplit("/", 1)[1]] = fetched.get(r["path"].rsplit("/", 1)[1], 0) + 1
    expected = set(one) | set(two)
    expected -= {fleet.one.digest, fleet.two.digest}          # manifests come from /manifests/
    assert fetched == dict((d, 1) for d in expected), fetched

    server.reset_hosts()
    reg.clear_log()

    # check mode: reports what would be sent, writes nothing
    run = server.run_playbook(_playbook(fleet, [fleet.ref_one], assemble=[]), check=True, limit="host1")
    assert run.rc == 0, run
    result = run.result("host1", "sync")
    assert result["changed"] is True and result["sent"] == len(one) and result["bytes_sent"] == sum(one.values())
    assert os.listdir(server.store_dir("host1")) == []

    # first relay of image one to the three hosts, assembled there offline
    run = server.run_playbook(_playbook(fleet, [fleet.ref_one]))
    assert run.rc == 0, run
    for host in hosts:
        result = run.result(host, "sync")
        assert result["changed"] is True, result
        assert result["sent"] == len(one) and result["bytes_sent"] == sum(one.values()), result
        assert _digests(result) == set(one) and result["present"] == 0
        # manifest, config and the two small layers in one batch; the 12 and 64 MiB layers one file each
        assert result["transfers"] == 3, result
        assert result["recorded"] == [fleet.ref_one]
        assert run.result(host, "assemble")["changed"] is True
        assert _assert_store_intact(server.store_dir(host)) == set(one)
        assert os.listdir(server.tmp_dir(host)) == []     # the remote temporary files are gone
        # the blobs went over a connection of their own, without ssh compression (Ansible's -C)
        assert [n for n in os.listdir(server.control_dir(host)) if n.startswith("hocker-")], host
    # the hosts never asked the registry for anything
    assert reg.requests() == []

    for host in hosts:
        with Podman(str(tmp_path / ("podman-" + host))) as podman:
            podman.load(_archive(fleet, host, fleet.ref_one))
            images = podman.images()
            assert [i["id"] for i in images] == [fleet.one.config_digest]
            assert "%s/relay/one:v1" % reg.host in images[0]["names"][0]

    # a re-run changes nothing and sends nothing
    run = server.run_playbook(_playbook(fleet, [fleet.ref_one]))
    assert run.rc == 0, run
    for host in hosts:
        result = run.result(host, "sync")
        assert result["changed"] is False and result["sent"] == 0 and result["transfers"] == 0, result
        assert result["present"] == len(one)
        assert run.result(host, "assemble")["changed"] is False
        assert os.listdir(server.tmp_dir(host)) == []
    assert "changed=1" not in run.stdout and "changed=0" in run.stdout

    # the second image: only its own blobs travel
    run = server.run_playbook(_playbook(fleet, [fleet.ref_one, fleet.ref_two]))
    assert run.rc == 0, run
    new = set(two) - set(one)
    assert len(new) == 4    # manifest, config, two layers
    for host in hosts:
        result = run.result(host, "sync")
        assert result["changed"] is True
        assert _digests(result) == new, result
        assert result["bytes_sent"] == sum(two[d] for d in new)
        assert result["present"] == len(set(one) | set(two)) - len(new)
        assert result["recorded"] == [fleet.ref_two]
        assembled = run.result(host, "assemble")["results"]
        assert [r["changed"] for r in assembled] == [False, True]
    with Podman(str(tmp_path / "podman-two")) as podman:
        podman.load(_archive(fleet, "host1", fleet.ref_two))
        assert [i["id"] for i in podman.images()] == [fleet.two.config_digest]
    assert reg.requests() == []

    # damaged blobs in host2's store: one changed in place (same size), one cut short
    store2 = server.store_dir("host2")
    big = fleet.one.layers[2].digest
    with open(os.path.join(store2, "blobs", "sha256", big[7:]), "r+b") as handle:
        handle.seek(BIG // 2)
        handle.write(b"damaged!")
    config_two = fleet.two.config_digest
    with open(os.path.join(store2, "blobs", "sha256", config_two[7:]), "r+b") as handle:
        handle.truncate(10)
    run = server.run_playbook(_playbook(fleet, [fleet.ref_one, fleet.ref_two], assemble=[]))
    assert run.rc == 0, run
    result = run.result("host2", "sync")
    assert result["changed"] is True and result["replaced"] == 2, result
    assert _digests(result) == {big, config_two}
    assert _assert_store_intact(store2) == set(one) | set(two)
    for host in ("host1", "host3"):
        assert run.result(host, "sync")["changed"] is False
    # host2 builds image one again from the repaired store
    os.unlink(_archive(fleet, "host2", fleet.ref_one))
    run = server.run_playbook(_playbook(fleet, [fleet.ref_one]), limit="host2")
    assert run.rc == 0, run
    assert run.result("host2", "sync")["changed"] is False
    assert run.result("host2", "assemble")["changed"] is True
    assert reg.requests() == []


def _staged(server, host, digest):
    return glob.glob(os.path.join(server.tmp_dir(host), "*", sync.staged_name(digest)))


def _process_tree(root):
    """``root`` and all its descendants (a snapshot from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_cut_transfer_then_rerun(fleet):
    """ansible-playbook and its ssh connection are killed while the 64 MiB layer is on its way."""
    server = fleet.server
    one = fleet.one.store_sizes()
    mid, big = fleet.one.layers[1].digest, fleet.one.layers[2].digest
    playbook = os.path.join(server.workdir, "cut.yml")
    with open(playbook, "w") as handle:
        handle.write(_playbook(fleet, [fleet.ref_one], assemble=[]))
    caught = False
    for _attempt in range(3):
        server.reset_hosts(["host3"])
        results = os.path.join(server.workdir, "cut-results.jsonl")
        proc = subprocess.Popen(server.playbook_command(playbook, limit="host3"), env=server.playbook_env(results),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                staged = _staged(server, "host3", big)
                if staged and 0 < os.path.getsize(staged[0]) < BIG // 2:
                    # the workers run in sessions of their own: kill the whole process tree, and the
                    # connection on the server's side
                    for pid in _process_tree(proc.pid) + server.sessions():
                        _kill(pid)
                    caught = True
                    break
                time.sleep(0.005)
        finally:
            for pid in _process_tree(proc.pid):
                _kill(pid)
            proc.wait()
        if caught:
            break
    assert caught, "the transfer of the big layer was never seen in flight"
    for socket_path in glob.glob(os.path.join(server.control_dir("host3"), "*")):
        os.unlink(socket_path)      # the killed connection's control socket

    # nothing damaged in the store (nothing was committed yet), a partial file in the remote tmp directory
    assert _assert_store_intact(server.store_dir("host3")) == set()
    time.sleep(0.5)
    staged = _staged(server, "host3", big)
    assert staged and os.path.getsize(staged[0]) < BIG
    assert os.path.getsize(_staged(server, "host3", mid)[0]) == fleet.one.layers[1].size

    run = server.run_playbook(_playbook(fleet, [fleet.ref_one]), limit="host3")
    assert run.rc == 0, run
    result = run.result("host3", "sync")
    # the 12 MiB layer that had arrived in full is taken over; the rest is sent again
    assert result["reused"] == 1 and mid not in _digests(result), result
    assert _digests(result) == set(one) - {mid}
    assert _assert_store_intact(server.store_dir("host3")) == set(one)
    assert run.result("host3", "assemble")["changed"] is True


def test_local_connection_platforms(registry_anonymous, seeded, sshd_server, tmp_path):
    """Over the local connection, one platform of a multi-platform image; the plan's platform rules."""
    reg = registry_anonymous
    infos = seeded(reg)
    ctl = str(tmp_path / "ctl")
    index_ref = infos["oci-index"].image(reg.host)
    nested_ref = infos["nested-index"].image(reg.host)
    for ref, plat in ((index_ref, "linux/arm64"), (index_ref, "linux/arm/v7"), (nested_ref, "linux/amd64")):
        result = modrun.run_module("docker_registry_image", {"image": ref, "platform": plat, "cache_dir": ctl,
                                                             "layers": "compressed", "dest": str(tmp_path / "x.tar")})
        assert not result.get("failed"), result

    store = BlobStore(ctl, create=False)
    plan = sync.plan(store, [index_ref], ["linux/arm64"])
    arm64 = infos["oci-index"].platforms["linux/arm64/v8"]
    assert [b["digest"] for b in plan.blob_list()][:2] == [infos["oci-index"].digest, arm64["manifest_digest"]]
    assert len(plan.blobs) == 2 + 1 + len(arm64["layers"])
    assert plan.images == [{"image": index_ref, "digest": infos["oci-index"].digest, "platforms": ["linux/arm64/v8"]}]
    # every platform the store holds (not the attestation, not amd64 which was never fetched)
    assert sync.plan(store, [index_ref]).images[0]["platforms"] == ["linux/arm/v7", "linux/arm64/v8"]
    # the nested index travels with the image
    nested = sync.plan(store, [nested_ref])
    assert infos["nested-index"].extra["inner_index_digest"] in nested.blobs
    with pytest.raises(OfflineError, match="lacks the linux/amd64 image"):
        sync.plan(store, [index_ref], ["linux/amd64"])
    with pytest.raises(PlatformError, match="offers"):
        sync.plan(store, [index_ref], ["linux/s390x"])
    with pytest.raises(OfflineError, match="not in the store"):
        sync.plan(store, ["%s/testbed/docker-simple:v1" % reg.host])

    inventory = tmp_path / "local.yml"
    dest_store = tmp_path / "host-store"
    inventory.write_text(json.dumps({"all": {"hosts": {"local": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "ansible_remote_tmp": str(tmp_path / "remote-tmp"), "hocker_store_dir": str(dest_store), "hocker_dest_dir": str(tmp_path)}}}}))
    playbook = json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "sync", "hocker.registry.store_sync": {"src": ctl, "dest": "{{ hocker_store_dir }}",
                                                        "images": [index_ref], "platforms": ["linux/arm64"]}},
        {"name": "arm64", "hocker.registry.docker_registry_image": {
            "image": index_ref, "platform": "linux/arm64", "cache_dir": "{{ hocker_store_dir }}", "offline": True,
            "dest": "{{ hocker_dest_dir }}/arm64.tar"}},
        {"name": "arm", "ignore_errors": True, "hocker.registry.docker_registry_image": {
            "image": index_ref, "platform": "linux/arm/v7", "cache_dir": "{{ hocker_store_dir }}", "offline": True,
            "dest": "{{ hocker_dest_dir }}/arm.tar"}},
        {"name": "everything", "hocker.registry.store_sync": {"src": ctl, "dest": "{{ hocker_store_dir }}"}},
        {"name": "default src", "vars": {"image_deploy_controller_cache_dir": ctl},
         "hocker.registry.store_sync": {"dest": "{{ hocker_store_dir }}"}},
        {"name": "no src", "ignore_errors": True, "hocker.registry.store_sync": {"dest": "{{ hocker_store_dir }}"}},
        {"name": "no store", "ignore_errors": True, "hocker.registry.store_sync": {
            "src": str(tmp_path), "dest": "{{ hocker_store_dir }}"}},
        {"name": "dest is a file", "ignore_errors": True, "hocker.registry.store_sync": {
            "src": ctl, "dest": str(inventory)}},
        {"name": "private", "ignore_errors": True, "hocker.registry.store_sync": {
            "src": ctl, "dest": "{{ hocker_store_dir }}", "_hocker_sync": {"step": "receive"}}},
    ]}])
    run = sshd_server.run_playbook(playbook, inventory=str(inventory))
    assert run.rc == 0, run
    first = run.result("local", "sync")
    assert first["sent"] == len(plan.blobs) and first["transfers"] == 1, first
    assert run.result("local", "arm64")["changed"] is True
    assert "is missing from the blob store" in run.result("local", "arm")["msg"]
    everything = run.result("local", "everything")
    assert everything["present"] == len(plan.blobs) and everything["sent"] > 0
    default = run.result("local", "default src")
    assert default["src"] == ctl and default["changed"] is False and default["sent"] == 0, default
    assert "image_deploy_controller_cache_dir" in run.result("local", "no src")["msg"]
    for task in ("no src", "no store", "dest is a file", "private"):
        assert run.status("local", task) == "failed", task
    assert "is not a blob store" in run.result("local", "no store")["msg"] and "Traceback" not in run.stdout
    failure = run.result("local", "dest is a file")
    assert "local.yml exists and is not a directory" in failure["msg"] and "invocation" not in failure, failure
    assert "_hocker_sync" in run.result("local", "private")["msg"]    # not an option users can give
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"]
                   for m in json.loads((dest_store / "index.json").read_text())["manifests"])
    assert names == sorted([index_ref, nested_ref])
