"""Unit tests for the store relay (sync.py): the plan on the controller, the host side's inspection with
verified markers, commits of batches and files, taking over an interrupted run's files."""
import hashlib
import io
import json
import os
import tarfile
import time

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import sync
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, OfflineError, PlatformError, RegistryError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
NAME = "127.0.0.1:5000/app:v1"
INDEX_NAME = "127.0.0.1:5000/multi:v1"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image(store, arch, layers, put=True):
    config = json.dumps({"architecture": arch, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha(b"d" + l) for l in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                           "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha(config)},
                           "layers": [{"mediaType": DOCKER_LAYER, "size": len(l), "digest": sha(l)}
                                      for l in layers]}).encode()
    if put:
        for blob in [config, manifest] + list(layers):
            store.put_bytes(blob, sha(blob))
    return manifest, config


@pytest.fixture
def src(tmp_path):
    """A controller store: NAME (one amd64 image) and INDEX_NAME (amd64 stored, arm64 not)."""
    store = BlobStore(str(tmp_path / "src"))
    layers = [b"base layer " * 1000, b"app layer " * 10]
    manifest, config = _image(store, "amd64", layers)
    store.record_image(NAME, {"mediaType": DOCKER_MANIFEST, "digest": sha(manifest), "size": len(manifest)})
    arm_manifest, _arm_config = _image(store, "arm64", [b"arm layer"], put=False)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": sha(manifest), "size": len(manifest),
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": DOCKER_MANIFEST, "digest": sha(arm_manifest), "size": len(arm_manifest),
         "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()
    store.put_bytes(index, sha(index))
    store.record_image(INDEX_NAME, {"mediaType": OCI_INDEX, "digest": sha(index), "size": len(index)})
    store.test_blobs = {sha(b): len(b) for b in [manifest, config] + layers}
    store.test_index = sha(index)
    return store


def test_plan_single_image(src):
    plan = sync.plan(src, [NAME])
    assert dict((b["digest"], b["size"]) for b in plan.blob_list()) == src.test_blobs
    kinds = [plan.kinds[b["digest"]] for b in plan.blob_list()]
    assert kinds == ["manifest", "config", "layer", "layer"]
    assert plan.entries[0]["name"] == NAME and plan.entries[0]["descriptor"]["mediaType"] == DOCKER_MANIFEST
    assert plan.images[0]["platforms"] == ["linux/amd64"]
    # no tag means latest, which the store does not have
    with pytest.raises(OfflineError, match="127.0.0.1:5000/app:latest"):
        sync.plan(src, ["127.0.0.1:5000/app"])
    with pytest.raises(PlatformError, match="is for linux/amd64 only, not for linux/arm64"):
        sync.plan(src, [NAME], ["linux/arm64"])


def test_plan_index_and_defaults(src):
    everything = sync.plan(src)
    assert sorted(e["name"] for e in everything.entries) == sorted([NAME, INDEX_NAME])
    assert set(everything.blobs) == set(src.test_blobs) | {src.test_index}
    assert [i["platforms"] for i in everything.images if i["image"] == INDEX_NAME] == [["linux/amd64"]]
    with pytest.raises(OfflineError, match="lacks the linux/arm64 image"):
        sync.plan(src, [INDEX_NAME], ["linux/arm64"])
    with pytest.raises(OfflineError, match="not in the store"):
        sync.plan(src, ["127.0.0.1:5000/other:v1"])


def test_plan_missing_layer(src):
    layer = [d for d in src.test_blobs if src.test_blobs[d] == len(b"app layer " * 10)][0]
    src.remove_blob(layer)
    with pytest.raises(OfflineError, match="layer 1 of %s" % NAME):
        sync.plan(src, [NAME])


def _counting(monkeypatch):
    calls = []
    real = sync._hash_file

    def counted(path, algorithm):
        calls.append(path)
        return real(path, algorithm)
    monkeypatch.setattr(sync, "_hash_file", counted)
    return calls


def _copy_all(src, dest, digests):
    for digest in digests:
        with open(src.blob_path(digest), "rb") as f:
            dest.put_bytes(f.read(), digest)


def test_inspect_markers_and_damage(src, tmp_path, monkeypatch):
    dest = BlobStore(str(tmp_path / "dest"))
    blobs = dict(src.test_blobs)
    result = sync.Receiver(dest).inspect(blobs)
    assert result["missing"] == list(blobs) and result["present"] == 0
    _copy_all(src, dest, blobs)
    calls = _counting(monkeypatch)
    assert sync.Receiver(dest).inspect(blobs)["present"] == len(blobs)
    assert len(calls) == len(blobs)            # written by someone else: hashed once
    del calls[:]
    assert sync.Receiver(dest).inspect(blobs)["present"] == len(blobs)
    assert calls == []                         # the markers stand for the hash
    big = max(blobs, key=blobs.get)
    time.sleep(0.01)
    dest.touch(big)                            # a use recorded by the store moves the modification time
    assert sync.Receiver(dest).inspect(blobs)["present"] == len(blobs)
    assert calls == [dest.blob_path(big)]      # hashed again, still good
    del calls[:]
    assert sync.Receiver(dest).inspect(blobs)["present"] == len(blobs)
    assert calls == []                         # and trusted again
    # damaged in place, same size: found, and removed (not in check mode)
    time.sleep(0.01)
    with open(dest.blob_path(big), "r+b") as f:
        f.seek(100)
        f.write(b"XX")
    result = sync.Receiver(dest, check_mode=True).inspect(blobs)
    assert result["missing"] == [big] and result["replaced"] == [big]
    assert os.path.exists(dest.blob_path(big))
    result = sync.Receiver(dest).inspect(blobs)
    assert result["missing"] == [big] and result["replaced"] == [big]
    assert not os.path.exists(dest.blob_path(big))
    # a blob of the wrong size is damaged as well
    small = min(blobs, key=blobs.get)
    with open(dest.blob_path(small), "ab") as f:
        f.write(b"more")
    assert sync.Receiver(dest).inspect(blobs)["replaced"] == [small]
    markers = json.loads(open(os.path.join(dest.ingest_dir, "verified.json")).read())
    assert big not in markers and small not in markers and len(markers) == len(blobs) - 2


def _send(src, sizes, staging, big):
    """What the action does: batches of the small blobs, the big ones one file each."""
    small = [d for d in sizes if d not in big]
    batches = [os.path.basename(path) for path, _group in sync.make_batches(src, small, sizes, staging)]
    for digest in big:
        with open(src.blob_path(digest), "rb") as f, open(os.path.join(staging, sync.staged_name(digest)), "wb") as g:
            g.write(f.read())
    return batches


def test_receive(src, tmp_path):
    dest = BlobStore(str(tmp_path / "dest"))
    staging = tmp_path / "tmp" / "ansible-tmp-1"
    staging.mkdir(parents=True)
    blobs = dict(src.test_blobs)
    big = [max(blobs, key=blobs.get)]
    batches = _send(src, blobs, str(staging), big)
    receiver = sync.Receiver(dest)
    added = receiver.receive(blobs, str(staging), batches, big)
    assert sorted(added) == sorted(blobs)
    assert os.listdir(str(staging)) == []      # everything taken
    for digest in blobs:
        with open(dest.blob_path(digest), "rb") as f:
            assert sha(f.read()) == digest
        assert oct(os.stat(dest.blob_path(digest)).st_mode & 0o777) == "0o644"
    plan = sync.plan(src, [NAME])
    assert receiver.record(plan.entries) == [NAME]
    assert receiver.record(plan.entries) == []
    assert dest.lookup_image(NAME)["digest"] == plan.entries[0]["descriptor"]["digest"]
    # nothing left to send
    assert sync.Receiver(dest).inspect(blobs)["missing"] == []


def test_receive_damaged(src, tmp_path):
    dest = BlobStore(str(tmp_path / "dest"))
    staging = tmp_path / "staging"
    staging.mkdir()
    blobs = dict(src.test_blobs)
    big = max(blobs, key=blobs.get)
    (staging / sync.staged_name(big)).write_bytes(b"x" * blobs[big])
    with pytest.raises(DigestMismatch, match="arrived damaged"):
        sync.Receiver(dest).receive(blobs, str(staging), [], [big])
    assert not dest.has(big) and os.listdir(str(staging)) == []
    # a batch member that was not asked for
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("sha256/" + "0" * 64)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    (staging / "hocker-batch-0.tar").write_bytes(data.getvalue())
    with pytest.raises(RegistryError, match="unexpected member"):
        sync.Receiver(dest).receive(blobs, str(staging), ["hocker-batch-0.tar"], [])
    with pytest.raises(RegistryError, match="invalid batch name"):
        sync.Receiver(dest).receive(blobs, str(staging), ["../etc/passwd"], [])
    # a partial commit keeps what is complete and does not ask for the rest
    with open(src.blob_path(big), "rb") as f:
        (staging / sync.staged_name(big)).write_bytes(f.read())
    assert sync.Receiver(dest).receive(blobs, str(staging), ["hocker-batch-1.tar"], [big], partial=True) == [big]
    with pytest.raises(RegistryError, match="still lacks"):
        sync.Receiver(dest).receive(blobs, str(staging), [], [])


def test_adopt_leftovers(src, tmp_path):
    dest = BlobStore(str(tmp_path / "dest"))
    base = tmp_path / "remote-tmp"
    old, bad, now = base / "ansible-tmp-old", base / "ansible-tmp-bad", base / "ansible-tmp-now"
    for d in (old, bad, now):
        d.mkdir(parents=True)
    blobs = dict(src.test_blobs)
    big = max(blobs, key=blobs.get)
    small = min(blobs, key=blobs.get)
    (bad / sync.staged_name(big)).write_bytes(b"y" * blobs[big])         # complete size, wrong bytes
    result = sync.Receiver(dest).inspect(blobs, str(now))
    assert result["reused"] == [] and big in result["missing"]
    assert not (bad / sync.staged_name(big)).exists() and not dest.has(big)
    with open(src.blob_path(big), "rb") as f:
        (old / sync.staged_name(big)).write_bytes(f.read())
    (old / sync.staged_name(small)).write_bytes(b"short")                # cut short
    (now / sync.staged_name(small)).write_bytes(b"x" * blobs[small])     # this run's own files are not looked at
    stale = old / "hocker-batch-0.tar"
    stale.write_bytes(b"old")
    os.utime(str(stale), (time.time() - 2 * sync.STALE_AGE,) * 2)
    result = sync.Receiver(dest).inspect(blobs, str(now))
    assert result["reused"] == [big] and big not in result["missing"]
    assert dest.has(big, blobs[big]) and not (old / sync.staged_name(big)).exists()
    assert (old / sync.staged_name(small)).exists()                      # recent: left alone
    assert (now / sync.staged_name(small)).exists()
    assert not stale.exists()                                            # an hour old: removed
    # check mode takes nothing over
    dest2 = BlobStore(str(tmp_path / "dest2"))
    with open(src.blob_path(big), "rb") as f:
        (old / sync.staged_name(big)).write_bytes(f.read())
    result = sync.Receiver(dest2, check_mode=True).inspect(blobs, str(now))
    assert result["reused"] == [] and big in result["missing"]


def test_check_entry():
    good = {"name": NAME, "descriptor": {"mediaType": DOCKER_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 3}}
    assert sync._check_entry(good)[0] == NAME
    for bad in ({"name": "app:v1", "descriptor": good["descriptor"]},                     # not normalised
                {"name": NAME, "descriptor": dict(good["descriptor"], digest="sha256:../x")},
                {"name": NAME, "descriptor": dict(good["descriptor"], mediaType=None)}):
        with pytest.raises(RegistryError):
            sync._check_entry(bad)
    with pytest.raises(RegistryError):
        sync.check_blob_list([{"digest": "sha256:" + "a" * 64, "size": -1}])


def test_commit_copies_across_file_systems(src, tmp_path, monkeypatch):
    """A staged file that cannot be renamed into the store (another file system, not ours to move) is copied,
    verified again on the way, and removed."""
    import errno
    dest = BlobStore(str(tmp_path / "dest"))
    staging = tmp_path / "staging"
    staging.mkdir()
    blobs = dict(src.test_blobs)
    big = max(blobs, key=blobs.get)
    with open(src.blob_path(big), "rb") as f:
        (staging / sync.staged_name(big)).write_bytes(f.read())
    real_rename = os.rename

    def rename(a, b):
        if str(a).startswith(str(staging)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(a, b)
    monkeypatch.setattr(sync.os, "rename", rename)
    assert sync.Receiver(dest).commit_file(str(staging / sync.staged_name(big)), big, blobs[big]) is True
    with open(dest.blob_path(big), "rb") as f:
        assert sha(f.read()) == big
    assert os.listdir(str(staging)) == [] and not [n for n in os.listdir(dest.ingest_dir) if n.endswith(".tmp")]
