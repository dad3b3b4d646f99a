"""docker_registry_store on stores filled by docker_registry_image from the local registry."""
import hashlib
import json
import os
import subprocess
import threading
import time

from helpers import assert_clean_failure
from testbed.modrun import run_module
from testbed.proxy import FaultProxy

FETCHED_AT = "io.hocker.registry.fetched"
REF_NAME = "org.opencontainers.image.ref.name"


def store_run(path, check=False, diff=False, **args):
    args["path"] = path
    return run_module("docker_registry_store", args, check=check, diff=diff)


def fetch(reg, img, store, dest, host=None, **extra):
    args = dict(image=img.image(host or reg.host), cache_dir=store, dest=str(dest))
    args.update(extra)
    result = run_module("docker_registry_image", args)
    assert result["rc"] == 0, result
    return result


def blob_path(store, digest):
    algorithm, hexpart = digest.split(":", 1)
    return os.path.join(store, "blobs", algorithm, hexpart)


def own_blobs(img):
    """Every blob of an image's default platform: manifest(s), config, layers."""
    plat = img.default
    blobs = {img.digest, plat["manifest_digest"], plat["config_digest"]}
    blobs.update(layer["digest"] for layer in plat["layers"])
    return blobs


def blob_gets(reg):
    return sorted(r["path"].rsplit("/", 1)[1] for r in reg.requests() if r["method"] == "GET" and "/blobs/" in r["path"])


def set_last_used(store, name, blobs, seconds_ago):
    """Make image ``name`` look last used ``seconds_ago`` (its index.json stamp and its blobs' times)."""
    then = int(time.time() - seconds_ago)
    path = os.path.join(store, "index.json")
    with open(path) as handle:
        index = json.load(handle)
    for entry in index["manifests"]:
        if entry["annotations"][REF_NAME] == name:
            entry["annotations"][FETCHED_AT] = str(then)
    with open(path, "w") as handle:
        json.dump(index, handle)
    for digest in blobs:
        if os.path.exists(blob_path(store, digest)):
            os.utime(blob_path(store, digest), (then, then))


def names(result):
    return [i["name"] for i in result["images"]]


def test_create_check_idempotent_absent(tmp_path):
    store = str(tmp_path / "store")
    check = store_run(store, check=True, diff=True)
    assert check["rc"] == 0 and check["changed"] is True, check
    assert check["diff"]["before"]["exists"] is False and not os.path.exists(store)
    created = store_run(store)
    assert created["changed"] is True and created["size"] == 0 and created["images"] == []
    assert json.load(open(os.path.join(store, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    for check_mode in (True, False):
        again = store_run(store, check=check_mode, verify=True, prune=True, max_size="1G")
        assert again["rc"] == 0 and again["changed"] is False, again
        assert again["fits"] is True and again["max_size"] == 1024 ** 3
    gone_check = store_run(store, state="absent", check=True)
    assert gone_check["changed"] is True and os.path.isdir(store)
    gone = store_run(store, state="absent")
    assert gone["changed"] is True and not os.path.exists(store)
    assert os.listdir(str(tmp_path)) == []
    assert store_run(store, state="absent")["changed"] is False


def test_refusals(tmp_path):
    other = tmp_path / "not-a-store"
    other.mkdir()
    (other / "precious").write_text("keep me")
    refused = store_run(str(other), state="absent")
    assert_clean_failure(refused)
    assert "not a blob store" in refused["msg"] and (other / "precious").exists()
    assert_clean_failure(store_run(str(other / "precious")))
    store = str(tmp_path / "store")
    store_run(store)
    for bad, text in ((dict(state="absent", prune=True), "state=absent"),
                      (dict(keep=["x"]), "keep needs prune"),
                      (dict(max_size="lots"), "invalid max_size"),
                      (dict(prune=True, min_age="soon"), "invalid age"),
                      (dict(prune=True, keep=["Not A Reference"]), "invalid")):
        result = store_run(store, **bad)
        assert_clean_failure(result)
        assert text in result["msg"], result
    with open(os.path.join(store, "index.json"), "w") as handle:
        handle.write("{")
    broken = store_run(store, prune=True)
    assert_clean_failure(broken)
    assert "index.json is not valid JSON" in broken["msg"]


def test_verify_flipped_byte(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    img = seeded(reg)["docker-simple"]
    store = str(tmp_path / "store")
    fetch(reg, img, store, tmp_path / "a.tar")
    layer = img.default["layers"][2]["digest"]
    with open(blob_path(store, layer), "r+b") as handle:
        handle.seek(10)
        byte = handle.read(1)
        handle.seek(10)
        handle.write(bytes([byte[0] ^ 0x01]))
    check = store_run(store, check=True, verify=True)
    assert check["changed"] is True and check["corrupt"] == [layer] and check["removed"] == [layer]
    assert os.path.exists(blob_path(store, layer))
    real = store_run(store, verify=True, diff=True)
    assert real["changed"] is True and real["corrupt"] == [layer] and real["removed"] == [layer]
    assert real["verified"] == len(own_blobs(img)) and real["blobs"] == len(own_blobs(img)) - 1
    assert not os.path.exists(blob_path(store, layer))
    assert names(real) == [img.image(reg.host)] and real["removed_images"] == []   # the image keeps its entry
    assert real["diff"]["before"]["blobs"] == real["diff"]["after"]["blobs"] + 1
    again = store_run(store, verify=True)
    assert again["changed"] is False and again["corrupt"] == []
    # the next image run fetches that layer only
    reg.clear_log()
    fetch(reg, img, store, tmp_path / "b.tar")
    assert blob_gets(reg) == [layer]
    # a corrupt manifest takes its index.json entry with it
    with open(blob_path(store, img.digest), "r+b") as handle:
        handle.write(b"!")
    broken = store_run(store, verify=True)
    assert broken["corrupt"] == [img.digest]
    assert broken["removed_images"] == [{"name": img.image(reg.host), "digest": img.digest,
                                         "reason": "missing_manifest"}]
    assert broken["images"] == []


def test_prune_keep_and_refetch(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    images = seeded(reg)
    simple, shared, index = images["docker-simple"], images["shared-base"], images["oci-index"]
    store = str(tmp_path / "store")
    for img in (simple, shared, index):
        fetch(reg, img, store, tmp_path / (img.kind + ".tar"))
    # an old and a new unreferenced blob, partial downloads, a leftover temporary file
    orphans = {}
    for label in ("old", "new"):
        data = ("%s orphan" % label).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(blob_path(store, digest), "wb") as handle:
            handle.write(data)
        orphans[label] = digest
    ingest = os.path.join(store, "ingest")
    for name in ("%s.partial" % ("d" * 64), "%s.partial" % ("e" * 64),
                 "%s.partial" % simple.default["layers"][0]["digest"][7:], ".put.x.tmp"):
        with open(os.path.join(ingest, name), "wb") as handle:
            handle.write(b"partial")
    hour_ago = time.time() - 7200
    for path in (blob_path(store, orphans["old"]), os.path.join(ingest, "d" * 64 + ".partial"),
                 os.path.join(ingest, ".put.x.tmp")):
        os.utime(path, (hour_ago, hour_ago))
    stale = sorted(["d" * 64 + ".partial", simple.default["layers"][0]["digest"][7:] + ".partial", ".put.x.tmp"])

    check = store_run(store, check=True, prune=True)
    assert check["changed"] is True and check["removed"] == [orphans["old"]]
    assert check["removed_partials"] == stale and check["removed_images"] == []
    assert os.path.exists(blob_path(store, orphans["old"]))
    real = store_run(store, prune=True)
    assert real["removed"] == [orphans["old"]] and real["removed_partials"] == stale
    assert sorted(names(real)) == sorted(i.image(reg.host) for i in (simple, shared, index))
    assert store_run(store, prune=True)["changed"] is False

    # keep one image: the others go, and the layers it shares with docker-simple stay
    kept = store_run(store, prune=True, keep=[shared.image(reg.host)], diff=True)
    assert kept["changed"] is True
    assert sorted((i["name"], i["reason"]) for i in kept["removed_images"]) == sorted(
        [(simple.image(reg.host), "not_kept"), (index.image(reg.host), "not_kept")])
    expected = (own_blobs(simple) | own_blobs(index)) - own_blobs(shared)
    assert kept["removed"] == sorted(expected)
    assert names(kept) == [shared.image(reg.host)]
    assert os.path.exists(blob_path(store, orphans["new"]))     # unreferenced, but used less than min_age ago
    for digest in own_blobs(shared):
        assert os.path.exists(blob_path(store, digest))
    assert kept["diff"]["after"]["images"] == [shared.image(reg.host)]

    reg.clear_log()
    fetch(reg, shared, store, tmp_path / "shared-again.tar")
    assert blob_gets(reg) == []
    fetch(reg, simple, store, tmp_path / "simple-again.tar")
    assert blob_gets(reg) == sorted([simple.default["config_digest"], simple.default["layers"][2]["digest"]])


def test_max_size_evicts_least_recently_used(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    images = seeded(reg)
    simple, shared = images["docker-simple"], images["shared-base"]
    store = str(tmp_path / "store")
    fetch(reg, simple, store, tmp_path / "a.tar")
    fetch(reg, shared, store, tmp_path / "b.tar")

    def own(img):   # the blobs that tell when an image was last used
        return {img.digest, img.default["config_digest"]}

    set_last_used(store, simple.image(reg.host), own(simple), 3 * 3600)
    set_last_used(store, shared.image(reg.host), own(shared), 3600)
    total = store_run(store)["size"]
    only_simple = own_blobs(simple) - own_blobs(shared)
    freed = sum(os.path.getsize(blob_path(store, d)) for d in only_simple)

    fits = store_run(store, max_size=total)
    assert fits["changed"] is False and fits["fits"] is True
    check = store_run(store, check=True, max_size=total - freed)
    assert check["changed"] is True and check["removed"] == sorted(only_simple)
    real = store_run(store, max_size="%dB" % (total - freed))
    assert real["removed"] == sorted(only_simple) and real["freed"] == freed
    assert [(i["name"], i["reason"]) for i in real["removed_images"]] == [(simple.image(reg.host), "evicted")]
    assert real["fits"] is True and real["size"] == total - freed and names(real) == [shared.image(reg.host)]

    # the next run of the evicted image fetches what was evicted and nothing else
    reg.clear_log()
    fetch(reg, simple, store, tmp_path / "c.tar")
    assert blob_gets(reg) == sorted([simple.default["config_digest"], simple.default["layers"][2]["digest"]])

    # keep protects an image even when the store cannot fit
    squeezed = store_run(store, max_size=1, keep=[simple.image(reg.host)])
    assert [i["name"] for i in squeezed["removed_images"]] == [shared.image(reg.host)]
    assert squeezed["fits"] is False and squeezed["changed"] is True
    assert "more than max_size" in json.dumps(squeezed.get("warnings"))
    assert names(squeezed) == [simple.image(reg.host)]


def test_locked_blobs_are_left_alone(tmp_path):
    """A blob or partial download whose lock another process holds is never removed."""
    store = str(tmp_path / "store")
    store_run(store)
    data = b"a blob a writer is busy with"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob_path(store, digest), "wb") as handle:
        handle.write(data)
    partial = os.path.join(store, "ingest", "f" * 64 + ".partial")
    with open(partial, "wb") as handle:
        handle.write(b"half")
    holder = ("import fcntl, os, sys, time\n"
              "fds = [os.open(p, os.O_RDWR | os.O_CREAT) for p in sys.argv[1:]]\n"
              "[fcntl.flock(fd, fcntl.LOCK_EX) for fd in fds]\n"
              "print('locked', flush=True)\n"
              "sys.stdin.read()\n")
    locks = [os.path.join(store, "ingest", digest[7:] + ".lock"), os.path.join(store, "ingest", "f" * 64 + ".lock")]
    proc = subprocess.Popen(["python3", "-c", holder] + locks, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        busy = store_run(store, prune=True, min_age=0)
        assert busy["rc"] == 0, busy
        assert busy["busy"] == sorted([digest, "f" * 64 + ".partial"])
        assert busy["removed"] == [] and busy["removed_partials"] == [] and busy["changed"] is False
        assert os.path.exists(blob_path(store, digest)) and os.path.exists(partial)
    finally:
        proc.stdin.close()
        proc.wait(10)
    free = store_run(store, prune=True, min_age=0)
    assert free["removed"] == [digest] and free["removed_partials"] == ["f" * 64 + ".partial"]


def test_prune_while_a_download_holds_a_blob_lock(registry_anonymous, seeded, tmp_path):
    """A real docker_registry_image run, stalled in the middle of a layer, while the store is pruned with
    min_age=0: the partial download is busy and stays, and the run completes with a verified store."""
    reg = registry_anonymous
    img = seeded(reg)["docker-simple"]
    store = str(tmp_path / "store")
    layer = img.default["layers"][1]
    with FaultProxy(reg) as proxy:
        proxy.add_rule("stall", method="GET", path=layer["digest"], after_bytes=1000, seconds=4, count=1)
        outcome = {}
        host = proxy.host

        def download():
            outcome["result"] = run_module("docker_registry_image", dict(
                image="%s/%s:%s" % (host, img.repository, img.tag), cache_dir=store,
                dest=str(tmp_path / "a.tar"), max_workers=1))

        worker = threading.Thread(target=download)
        worker.start()
        partial = os.path.join(store, "ingest", layer["digest"][7:] + ".partial")
        deadline = time.time() + 30
        while not os.path.exists(partial) and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.exists(partial), "the download did not start"
        pruned = store_run(store, prune=True, min_age=0)
        worker.join(60)
    assert pruned["rc"] == 0, pruned
    assert layer["digest"][7:] + ".partial" in pruned["busy"]
    assert layer["digest"] not in pruned["removed"]
    result = outcome["result"]
    assert result["rc"] == 0, result
    final = store_run(store, verify=True)
    assert final["corrupt"] == [] and final["removed"] == []
    assert os.path.exists(blob_path(store, layer["digest"]))
    assert names(final) == ["%s/%s:%s" % (host, img.repository, img.tag)]
