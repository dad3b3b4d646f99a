"""The whole-image job in-process against an in-process registry: the ways one archive can be built give the
same bytes; an unchanged dest costs one HEAD; a damaged dest is found and written again."""
import gzip
import hashlib
import io
import json
import os
import random
import tarfile

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DiffIdMismatch, ManifestError
from ansible_collections.hocker.registry.plugins.module_utils._registry.imagejob import ImageJob, ImageRequest
from ansible_collections.hocker.registry.plugins.module_utils._registry.options import (
    ClientOptions, build_client, open_store)
from testbed.fakeregistry import FakeRegistry, digest_of

REPO = "team/app"


def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def registry():
    rng = random.Random(11)
    tars = [tar_of([("base/%d" % i, rng.randbytes(200000))]) for i in range(2)] + \
        [tar_of([("top", b"top layer\n" * 1000)])]
    layers = [gzip.compress(t, mtime=0) for t in tars]
    with FakeRegistry() as reg:
        descriptors = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": reg.add_blob(REPO, b),
                        "size": len(b)} for b in layers]
        # the base layer repeated, as some images do: five entries, three blobs
        order = [0, 1, 0, 2, 0]
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [digest_of(tars[i]) for i in order]}}).encode()
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": reg.add_blob(REPO, config), "size": len(config)},
                    "layers": [descriptors[i] for i in order]}
        reg.add_manifest(REPO, "v1", manifest)
        # broken configs: the repeated base blob given two diff_ids; a diff_id no layer has
        for tag, diff_ids in (("two-diff-ids", [digest_of(tars[0]), digest_of(tars[1]), digest_of(tars[1])]),
                              ("wrong-diff-id", [digest_of(tars[0]), digest_of(tars[1]), digest_of(b"other")])):
            bad = json.dumps({"architecture": "amd64", "os": "linux",
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
            reg.add_manifest(REPO, tag, dict(manifest, layers=[descriptors[i] for i in (0, 1, 0)] if tag == "two-diff-ids"
                                             else descriptors, config=dict(manifest["config"], size=len(bad),
                                                                           digest=reg.add_blob(REPO, bad))))
        yield reg


def run(reg, dest, cache_dir=None, tag="v1", **request):
    opts = ClientOptions.from_mapping({"image": REPO + ":" + tag, "registry": reg.url, "platform": "linux/amd64",
                                       "cache_dir": cache_dir, "retries": 0})
    store = open_store(opts)
    reference, client = build_client(opts, store=store)
    warnings = []
    result = ImageJob(lambda: client, reference, store, ImageRequest(dest=str(dest), **request), opts,
                      warnings.append).run()
    result["requests"] = client.request_counts()
    result["warnings"] = warnings
    return result


def sha(path):
    with open(str(path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("layers", ["uncompressed", "compressed"])
def test_placed_and_assembled_archives_are_the_same_bytes(registry, tmp_path, fmt, layers):
    one = run(registry, tmp_path / "placed.tar", format=fmt, layers=layers, placement="always")
    two = run(registry, tmp_path / "assembled.tar", format=fmt, layers=layers, placement="never")
    three = run(registry, tmp_path / "zlib.tar", format=fmt, layers=layers, inflater="zlib", cache_dir=str(tmp_path / "s"))
    assert sha(tmp_path / "placed.tar") == sha(tmp_path / "assembled.tar") == sha(tmp_path / "zlib.tar")
    assert one["bytes_written"] == two["bytes_written"] == three["bytes_written"]
    # one entry per manifest layer, repeats included (pairs with the config's diff_ids)
    assert [layer["digest"] for layer in one["layers"]] == [layer["digest"] for layer in two["layers"]]
    assert len(one["layers"]) == 5 and len(set(layer["digest"] for layer in one["layers"])) == 3


def test_unchanged_dest_costs_one_head(registry, tmp_path):
    dest = tmp_path / "img.tar"
    first = run(registry, dest)
    assert first["changed"] is True
    again = run(registry, dest)
    assert again["changed"] is False and "repaired" not in again
    assert again["requests"]["head"] == 1 and again["requests"]["manifest_get"] == 0
    assert again["requests"]["blob_get"] == 0
    assert again["layers"] == first["layers"]


def _flip(path, offset):
    with open(str(path), "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("fmt,compression", [("docker-archive", "none"), ("oci-archive", "none"),
                                             ("docker-archive", "gzip")])
def test_truncated_archives_are_written_again_from_the_store(registry, tmp_path, fmt, compression):
    dest = tmp_path / "img.tar"
    store = str(tmp_path / "store")
    run(registry, dest, cache_dir=store, format=fmt, compression=compression)
    good = sha(dest)
    with open(str(dest), "r+b") as f:
        f.truncate(os.path.getsize(str(dest)) // 2)
    again = run(registry, dest, cache_dir=store, format=fmt, compression=compression)
    assert again["changed"] is True and "truncated" in again["repaired"]
    assert any("damaged" in w for w in again["warnings"])
    assert again["requests"]["blob_get"] == 0          # repaired from the store
    assert sha(dest) == good


def test_overwritten_bytes_are_found(registry, tmp_path):
    dest = tmp_path / "img.tar"
    run(registry, dest)
    good = sha(dest)
    _flip(dest, os.path.getsize(str(dest)) - 5000)      # inside the last layer: same size, same structure
    again = run(registry, dest)
    assert again["changed"] is True and "does not match its digest" in again["repaired"]
    assert sha(dest) == good
    # the same damage with the file's time put back: the cheap check cannot see it, verify can
    stamp = os.stat(str(dest))
    _flip(dest, os.path.getsize(str(dest)) - 5000)
    os.utime(str(dest), ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert run(registry, dest)["changed"] is False
    verified = run(registry, dest, verify=True)
    assert verified["changed"] is True and sha(dest) == good
    assert run(registry, dest, verify=True)["changed"] is False


def test_oci_dir_with_a_blob_deleted(registry, tmp_path):
    dest = tmp_path / "layout"
    run(registry, dest, format="oci-dir", layers="compressed")
    blobs = sorted(os.listdir(str(dest / "blobs" / "sha256")))
    os.unlink(str(dest / "blobs" / "sha256" / blobs[0]))
    again = run(registry, dest, format="oci-dir", layers="compressed")
    assert again["changed"] is True and "missing" in again["repaired"]
    assert sorted(os.listdir(str(dest / "blobs" / "sha256"))) == blobs
    assert run(registry, dest, format="oci-dir", layers="compressed")["changed"] is False


def test_tag_and_tag_with_digest_are_the_same_image(registry, tmp_path):
    dest = tmp_path / "img.tar"
    first = run(registry, dest)
    opts = ClientOptions.from_mapping({"image": "%s:v1@%s" % (REPO, first["digest"]), "registry": registry.url,
                                       "platform": "linux/amd64"})
    reference, client = build_client(opts)
    result = ImageJob(lambda: client, reference, None, ImageRequest(dest=str(dest)), opts).run()
    assert result["changed"] is False
    assert client.request_counts()["head"] == 0     # a digest reference asks the registry nothing


def test_inconsistent_configs_are_refused_and_keep_the_store(registry, tmp_path):
    with pytest.raises(ManifestError) as exc:
        run(registry, tmp_path / "two.tar", tag="two-diff-ids")
    assert "two diff_ids" in str(exc.value)
    assert not (tmp_path / "two.tar").exists()
    # a layer that does not decompress to its diff_id is the config's fault, not the blob's: the verified
    # blobs stay in the store and nothing reaches dest
    store = tmp_path / "store"
    with pytest.raises(DiffIdMismatch):
        run(registry, tmp_path / "wrong.tar", cache_dir=str(store), tag="wrong-diff-id", layers="uncompressed")
    assert not (tmp_path / "wrong.tar").exists()
    top = digest_of(gzip.compress(tar_of([("top", b"top layer\n" * 1000)]), mtime=0))
    assert top.split(":")[1] in os.listdir(str(store / "blobs" / "sha256"))
