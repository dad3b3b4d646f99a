import hashlib
import json
import os
import time

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import FETCHED_AT, REF_NAME, BlobStore
from ansible_collections.hocker.registry.plugins.module_utils._registry.upkeep import (
    Keep, StoreError, Upkeep, Walker, ensure_store, parse_age, parse_size, remove_store, scan_blobs)


@pytest.mark.parametrize("value,expected", [
    (0, 0), (1048576, 1048576), ("1048576", 1048576), ("500M", 500 * 1024 ** 2), ("20G", 20 * 1024 ** 3),
    ("20g", 20 * 1024 ** 3), ("20GiB", 20 * 1024 ** 3), ("20GB", 20 * 1024 ** 3), ("1.5T", int(1.5 * 1024 ** 4)),
    (" 3 K ", 3072), ("7b", 7),
])
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "G", "-1", "1X", "twenty", None, True, -5, "1.2.3G"])
def test_parse_size_rejects(value):
    with pytest.raises(StoreError):
        parse_size(value, "max_size")


@pytest.mark.parametrize("value,expected", [
    (0, 0), ("0", 0), (90, 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("1w", 604800),
])
def test_parse_age(value, expected):
    assert parse_age(value) == expected


@pytest.mark.parametrize("value", ["1y", "-1", "h", "1.5h", None])
def test_parse_age_rejects(value):
    with pytest.raises(StoreError):
        parse_age(value)


def entry(name, digest="sha256:" + "a" * 64):
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1,
            "annotations": {REF_NAME: name}}


def test_keep_matches_like_the_modules_name_entries():
    digest = "sha256:" + "b" * 64
    keep = Keep(["debian:12", "ghcr.io/o/app", "localhost:5000/x/y:1@" + digest, "[::1]:5000/z:2"])
    assert keep.matches(entry("registry-1.docker.io/library/debian:12"))
    assert not keep.matches(entry("registry-1.docker.io/library/debian:11"))
    assert keep.matches(entry("ghcr.io/o/app:latest"))
    # a digest reference is stored as name@digest, and also matches any tag of that repository with that digest
    assert keep.matches(entry("localhost:5000/x/y@" + digest))
    assert keep.matches(entry("localhost:5000/x/y:other", digest))
    assert not keep.matches(entry("localhost:5000/x/y:1"))
    assert not keep.matches(entry("localhost:5000/x/yy:1", digest))
    assert keep.matches(entry("[::1]:5000/z:2"))
    assert not keep.matches({"digest": digest})
    assert not keep.matches("junk")
    with pytest.raises(InvalidReference):
        Keep(["UPPER/Case:1"])


def put(store, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.put_bytes(data, digest)
    return digest


def image(store, layers, name=None):
    """A stored image manifest (config + layers); returns (manifest digest, [config, layers...])."""
    config = put(store, json.dumps({"os": "linux", "architecture": "amd64", "n": name}).encode())
    layer_digests = [put(store, data) for data in layers]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                                      "size": 1},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                                       "size": 1} for d in layer_digests]}).encode()
    digest = put(store, manifest)
    if name:
        store.record_image(name, {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                                  "size": len(manifest)})
    return digest, [config] + layer_digests


def test_walker_follows_indexes(tmp_path):
    store = BlobStore(str(tmp_path / "s"))
    one, one_blobs = image(store, [b"l1", b"shared"])
    two, two_blobs = image(store, [b"l2", b"shared"])
    missing = "sha256:" + "c" * 64
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"digest": one, "size": 1}, {"digest": two, "size": 1},
                                      {"digest": missing, "size": 1}, {"digest": "../../etc", "size": 1}]}).encode()
    top = put(store, index)
    blobs, _strange = scan_blobs(store)
    every, meta = Walker(store, blobs, None).reach(top)
    assert every == {top, one, two, missing} | set(one_blobs) | set(two_blobs)
    assert meta == {top, one, two, missing, one_blobs[0], two_blobs[0]}
    assert Walker(store, blobs, None).reach("junk") == (set(), set())


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_prune_orphans_partials_and_check_mode(tmp_path):
    path = str(tmp_path / "s")
    store = BlobStore(path)
    kept, kept_blobs = image(store, [b"a"], "r.example/a:1")
    old = put(store, b"old orphan")
    new = put(store, b"new orphan")
    age(store.blob_path(old), 7200)
    partial_old = store.partial_path("sha256:" + "d" * 64)
    partial_new = store.partial_path("sha256:" + "e" * 64)
    partial_done = store.partial_path(kept_blobs[1])
    for p in (partial_old, partial_new, partial_done):
        with open(p, "wb") as handle:
            handle.write(b"xx")
    age(partial_old, 7200)
    tmp_old = os.path.join(store.ingest_dir, ".put.abc.tmp")
    with open(tmp_old, "wb") as handle:
        handle.write(b"t")
    age(tmp_old, 7200)

    dry = Upkeep(path, check_mode=True).run(prune=True)
    assert dry["removed"] == [old]
    assert dry["removed_partials"] == sorted([os.path.basename(p) for p in (partial_old, partial_done, tmp_old)])
    assert os.path.exists(store.blob_path(old)) and os.path.exists(partial_old)
    real = Upkeep(path).run(prune=True)
    assert real["removed"] == dry["removed"] and real["removed_partials"] == dry["removed_partials"]
    assert real["freed"] == dry["freed"] and real["size"] == dry["size"]
    assert not os.path.exists(store.blob_path(old)) and not os.path.exists(partial_old)
    assert os.path.exists(store.blob_path(new)) and os.path.exists(partial_new)
    assert [i["name"] for i in real["images"]] == ["r.example/a:1"]
    again = Upkeep(path).run(prune=True, min_age=0)
    assert again["removed"] == [new] and again["removed_partials"] == [os.path.basename(partial_new)]
    assert Upkeep(path).run(prune=True, min_age=0)["removed"] == []
    assert store.has(kept) and all(store.has(d) for d in kept_blobs)


def test_max_size_lru_and_shared_layers(tmp_path):
    path = str(tmp_path / "s")
    store = BlobStore(path)
    first, first_blobs = image(store, [b"1" * 1000, b"s" * 1000], "r.example/first:1")
    second, second_blobs = image(store, [b"2" * 1000, b"s" * 1000], "r.example/second:1")
    third, third_blobs = image(store, [b"3" * 1000], "r.example/third:1")
    index = store.read_index()
    stamps = {"r.example/first:1": 300, "r.example/second:1": 100, "r.example/third:1": 200}
    for e in index["manifests"]:
        e["annotations"][FETCHED_AT] = str(int(time.time()) - stamps[e["annotations"][REF_NAME]] * 60)
    with open(os.path.join(path, "index.json"), "w") as handle:
        json.dump(index, handle)
    for digest in (first, first_blobs[0], second, second_blobs[0], third, third_blobs[0]):
        age(store.blob_path(digest), 400 * 60)
    total = Upkeep(path, check_mode=True).run()["size"]
    own_first = sum(os.path.getsize(store.blob_path(d)) for d in (first, first_blobs[0], first_blobs[1]))
    result = Upkeep(path).run(max_size=total - own_first)
    # first is the least recently used; its shared layer stays for second
    assert [i["name"] for i in result["removed_images"]] == ["r.example/first:1"]
    assert result["removed"] == sorted([first, first_blobs[0], first_blobs[1]])
    assert result["fits"] is True and result["size"] == total - own_first
    assert store.has(second_blobs[2])
    assert Upkeep(path).run(max_size=total - own_first)["removed"] == []
    # keep protects third; second goes; still too big
    squeezed = Upkeep(path).run(max_size=1, keep=["r.example/third:1"])
    assert [i["name"] for i in squeezed["removed_images"]] == ["r.example/second:1"]
    assert squeezed["fits"] is False
    assert [i["name"] for i in squeezed["images"]] == ["r.example/third:1"]


def test_verify_and_broken_index(tmp_path):
    path = str(tmp_path / "s")
    store = BlobStore(path)
    top, blobs = image(store, [b"layer"], "r.example/a:1")
    with open(store.blob_path(blobs[1]), "r+b") as handle:
        handle.write(b"L")
    result = Upkeep(path).run(verify=True)
    assert result["corrupt"] == [blobs[1]] and result["removed"] == [blobs[1]]
    assert result["removed_images"] == [] and result["verified"] == 3
    with open(store.blob_path(top), "r+b") as handle:
        handle.write(b"[")
    broken = Upkeep(path).run(verify=True)
    assert broken["corrupt"] == [top]
    assert broken["removed_images"] == [{"name": "r.example/a:1", "digest": top, "reason": "missing_manifest"}]
    assert store.read_index()["manifests"] == []
    with open(os.path.join(path, "index.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        Upkeep(path).run(prune=True)


def test_ensure_and_remove(tmp_path):
    path = str(tmp_path / "s")
    assert ensure_store(path, check_mode=True) is True and not os.path.exists(path)
    assert ensure_store(path, check_mode=False) is True and os.path.isfile(os.path.join(path, "oci-layout"))
    assert ensure_store(path, check_mode=False) is False
    assert remove_store(path, check_mode=True) is True and os.path.isdir(path)
    assert remove_store(path, check_mode=False) is True and not os.path.exists(path)
    assert os.listdir(str(tmp_path)) == []
    assert remove_store(path, check_mode=False) is False
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    with pytest.raises(StoreError, match="not a blob store"):
        remove_store(str(other), check_mode=False)
    assert (other / "file").exists()
    with pytest.raises(StoreError, match="not a directory"):
        ensure_store(str(other / "file"), check_mode=False)


def test_remove_a_mount_point_empties_it(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    store = BlobStore(path)
    put(store, b"blob")
    os.mkdir(os.path.join(path, "lost+found"))
    warnings = []

    def busy(src, dst):
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(os, "rename", busy)
    assert remove_store(path, check_mode=False, warn=warnings.append) is True
    assert os.listdir(path) == ["lost+found"]
    assert sorted(os.listdir(str(tmp_path))) == ["s"]     # no temporary folder left behind
    assert "empty directory left in place" in warnings[0]
    assert remove_store(path, check_mode=False) is False     # idempotent


def test_remove_refuses_a_symlink(tmp_path):
    path = str(tmp_path / "s")
    BlobStore(path)
    os.symlink(path, str(tmp_path / "link"))
    with pytest.raises(StoreError, match="symbolic link"):
        remove_store(str(tmp_path / "link"), check_mode=False)
