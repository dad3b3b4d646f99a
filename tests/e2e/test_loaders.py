"""The archives written by archive.py, checked with real loaders.

Synthetic images (tar layers made here; gzip with two members, zstd with two frames and a skippable frame,
docker and OCI media types, a duplicated layer and a whiteout layer) are written in every format and layers
mode and loaded with podman (private store, vfs), a private dockerd (vfs, own containerd), ``ctr images
import``, ``skopeo inspect`` and ``oci-image-tool validate``.

Known loader limits, asserted below so that a change of the installed tools shows up:
- Debian 12's dockerd 20.10 has no zstd support: a docker-archive whose layer files are zstd blobs
  (``layers: compressed`` of a zstd image) fails to load; ``layers: uncompressed`` loads.
- dockerd 20.10 (classic store) needs ``manifest.json``: it cannot load oci-archive.
- oci-image-tool 1.0.0-rc1 predates the zstd layer media type and rejects it.
- the ``.tar.gz`` output is loaded with docker here; ``podman load -i`` reads it too, ``podman pull
  docker-archive:``, skopeo and ``ctr images import`` do not (asserted in test_gzip_archives.py).
- podman 4.3 cannot load an oci-archive with several repo_tags (several index.json entries: "more than one
  image in oci, choose an image"); a docker-archive with several tags loads through its manifest.json.
"""
import json
import os
import re
import subprocess

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import readback, tarwriter
from ansible_collections.hocker.registry.plugins.module_utils._registry import manifest as mt
from testbed.loaders import archive_image, ctr_import, synthetic_image

BASE = [("bin", None), ("bin/sh", b"#!/bin/fake\n"), ("etc", None), ("etc/keep", b"keep\n"),
        ("etc/removed", b"to be removed\n"), ("opq", None), ("opq/a", b"a"), ("opq/b", b"b")]
EXTRA = [("app", None), ("app/data", b"payload " * 2000)]
WHITEOUT = [("etc", None), ("etc/.wh.removed", b""), ("opq", None), ("opq/.wh..wh..opq", b""),
            ("opq/c", b"c")]
TAG = "127.0.0.1:5000/app:v1"
ORIGIN = {"source": "sha256:" + "b" * 64, "format": "test"}
NS = "hocker-test"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {
        # docker media types, gzip layers
        "docker": synthetic_image(str(root / "docker"), [(BASE, "gzip"), (EXTRA, "gzip"), (EXTRA, "gzip"),
                                                         (WHITEOUT, "gzip")], media="docker"),
        # OCI media types, gzip base and zstd layers
        "oci": synthetic_image(str(root / "oci"), [(BASE, "gzip"), (EXTRA, "zstd"), (EXTRA, "zstd"),
                                                   (WHITEOUT, "zstd")], media="oci"),
        "arm64": synthetic_image(str(root / "arm64"), [(BASE, "gzip"), (WHITEOUT, "gzip")], media="oci",
                                 arch="arm64", variant="v8"),
    }


def has_zstd(img):
    return any(li["media_type"].endswith("zstd") for li in img["layers"])


def write(tmp_path, img, mode, fmt, compression="none", repo_tags=(TAG,), imgs=None):
    suffix = "" if fmt == "oci-dir" else (".tar.gz" if compression == "gzip" else ".tar")
    dest = str(tmp_path / ("%s-%s%s" % (fmt, mode, suffix)))
    source = imgs if imgs is not None else archive_image(img, mode)
    result = tarwriter.write_archive(dest, source, format=fmt, layers=mode, repo_tags=list(repo_tags), origin=ORIGIN,
                                     compression=compression)
    return dest, result


def check_filesystem(files):
    assert "etc/keep" in files and "bin/sh" in files and "app/data" in files
    assert "etc/removed" not in files            # .wh.removed applied
    assert "opq/c" in files
    assert "opq/a" not in files and "opq/b" not in files    # opaque directory emptied


# --------------------------------------------------------------------------------------------------------
# podman
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("media", ["docker", "oci"])
@pytest.mark.parametrize("mode", ["uncompressed", "compressed"])
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_load(tmp_path, podman, images, media, mode, fmt):
    img = images[media]
    dest, _result = write(tmp_path, img, mode, fmt)
    assert podman.load(dest) == [TAG]
    loaded = podman.images()
    assert [(i["id"], i["names"]) for i in loaded] == [(img["config_digest"], [TAG])]
    check_filesystem(podman.files(TAG))


def test_podman_load_several_repo_tags(tmp_path, podman, images):
    # podman 4.3 reads a combined archive as OCI first, which wants exactly one image in index.json, then
    # falls back to manifest.json (whose RepoTags are fully qualified, else it would say localhost/...)
    tags = ["hello-world:latest", "127.0.0.1:5000/app:v2"]
    dest, _result = write(tmp_path, images["docker"], "compressed", "docker-archive", repo_tags=tags)
    podman.load(dest)
    loaded = podman.images()
    assert [(i["id"], i["names"]) for i in loaded] == [
        (images["docker"]["config_digest"], sorted(["docker.io/library/hello-world:latest", "127.0.0.1:5000/app:v2"]))]


def test_podman_load_all_platforms(tmp_path, podman, images):
    imgs = [archive_image(images["oci"], "compressed"), archive_image(images["arm64"], "compressed")]
    dest, result = write(tmp_path, None, "compressed", "oci-archive", imgs=imgs)
    assert result["index_digest"]
    assert podman.load(dest) == [TAG]
    # podman picks the host platform (amd64 here) out of the index
    assert [(i["id"], i["names"]) for i in podman.images()] == [(images["oci"]["config_digest"], [TAG])]


# --------------------------------------------------------------------------------------------------------
# docker (private dockerd, classic store)
# --------------------------------------------------------------------------------------------------------
def docker_major(dockerd):
    version = dockerd.docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()
    return int(version.split(".")[0])


def docker_files(dockerd, image):
    name = "hocker-export-check"
    dockerd.docker("create", "--network", "none", "--name", name, image)
    try:
        out = dockerd.docker("export", name).stdout
    finally:
        dockerd.docker("rm", "-f", name)
    listing = subprocess.run(["tar", "-t"], input=out, capture_output=True, check=True).stdout.decode()
    return set(os.path.normpath(line) for line in listing.split())


@pytest.mark.parametrize("media", ["docker", "oci"])
@pytest.mark.parametrize("mode", ["uncompressed", "compressed"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_docker_load(tmp_path, clean_dockerd, images, media, mode, compression):
    img = images[media]
    dest, _result = write(tmp_path, img, mode, "docker-archive", compression=compression)
    if mode == "compressed" and has_zstd(img) and docker_major(clean_dockerd) < 23:
        # zstd layer files need a docker engine with zstd support (moby 23+)
        with pytest.raises(RuntimeError, match="unexpected EOF|invalid tar header"):
            clean_dockerd.load(dest)
        return
    out = clean_dockerd.load(dest)
    assert "Loaded image: " + TAG in out
    info = clean_dockerd.image_inspect(TAG)
    assert info["Id"] == img["config_digest"]
    assert info["RepoTags"] == [TAG]
    assert list(info["RootFS"]["Layers"]) == img["diff_ids"]
    check_filesystem(docker_files(clean_dockerd, TAG))


def test_docker_load_several_repo_tags(tmp_path, clean_dockerd, images):
    tags = ["hello-world:latest", "127.0.0.1:5000/app:v2"]
    dest, _result = write(tmp_path, images["oci"], "uncompressed", "docker-archive", repo_tags=tags)
    clean_dockerd.load(dest)
    info = clean_dockerd.image_inspect(images["oci"]["config_digest"])
    assert sorted(info["RepoTags"]) == sorted(tags)


def test_docker_classic_store_cannot_load_oci_archive(tmp_path, clean_dockerd, images):
    dest, _result = write(tmp_path, images["docker"], "uncompressed", "oci-archive")
    if docker_major(clean_dockerd) < 25:
        with pytest.raises(RuntimeError):
            clean_dockerd.load(dest)
    else:
        assert TAG in clean_dockerd.load(dest)


# --------------------------------------------------------------------------------------------------------
# containerd
# --------------------------------------------------------------------------------------------------------
def ctr_config_digest(containerd, manifest_digest):
    raw = containerd.ctr("-n", NS, "content", "get", manifest_digest).stdout
    return json.loads(raw)["config"]["digest"]


@pytest.mark.parametrize("media", ["docker", "oci"])
@pytest.mark.parametrize("mode", ["uncompressed", "compressed"])
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_ctr_import(tmp_path, containerd, images, media, mode, fmt):
    img = images[media]
    dest, result = write(tmp_path, img, mode, fmt, repo_tags=(TAG, "hello-world:latest"))
    loaded = ctr_import(dest, containerd, NS)
    manifest = result["manifests"][0]
    assert sorted((i["name"], i["digest"]) for i in loaded) == sorted([
        (TAG, manifest["digest"]), ("docker.io/library/hello-world:latest", manifest["digest"])])
    assert ctr_config_digest(containerd, manifest["digest"]) == img["config_digest"]


def test_ctr_import_all_platforms(tmp_path, containerd, images):
    imgs = [archive_image(images["oci"], "compressed"), archive_image(images["arm64"], "compressed")]
    dest, result = write(tmp_path, None, "compressed", "oci-archive", imgs=imgs)
    loaded = ctr_import(dest, containerd, NS)
    assert [(i["name"], i["digest"], i["media_type"]) for i in loaded] == [
        (TAG, result["index_digest"], mt.OCI_INDEX)]


# --------------------------------------------------------------------------------------------------------
# skopeo and oci-image-tool
# --------------------------------------------------------------------------------------------------------
def skopeo(*args):
    proc = subprocess.run(["skopeo", "--insecure-policy"] + list(args), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.mark.parametrize("media", ["docker", "oci"])
@pytest.mark.parametrize("mode", ["uncompressed", "compressed"])
@pytest.mark.parametrize("fmt,transport", [("docker-archive", "docker-archive:"), ("oci-archive", "oci-archive:"),
                                           ("oci-dir", "oci:")])
def test_skopeo_inspect(tmp_path, images, media, mode, fmt, transport):
    img = images[media]
    dest, result = write(tmp_path, img, mode, fmt)
    info = json.loads(skopeo("inspect", transport + dest))
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert len(info["Layers"]) == 4
    config = skopeo("inspect", "--config", "--raw", transport + dest)
    assert config == img["config"]
    if fmt != "docker-archive":
        # skopeo rebuilds a manifest from manifest.json for docker-archive; the OCI readers use ours
        assert info["Digest"] == result["manifests"][0]["digest"]


def oci_image_tool(path, ref):
    return subprocess.run(["oci-image-tool", "validate", "--type", "image", "--ref", "name=" + ref, path],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("media", ["docker", "oci"])
@pytest.mark.parametrize("mode", ["uncompressed", "compressed"])
def test_oci_image_tool_validates_oci_dir(tmp_path, images, media, mode):
    img = images[media]
    dest, _result = write(tmp_path, img, mode, "oci-dir")
    proc = oci_image_tool(dest, "v1")
    if mode == "compressed" and has_zstd(img):
        # oci-image-tool 1.0.0-rc1 does not know the zstd layer media type
        assert proc.returncode != 0
        assert "tar+zstd" in proc.stdout + proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation succeeded" in proc.stdout


def test_oci_image_tool_validates_all_platforms(tmp_path, images):
    imgs = [archive_image(images["docker"], "uncompressed"), archive_image(images["arm64"], "uncompressed")]
    dest, _result = write(tmp_path, None, "uncompressed", "oci-dir", imgs=imgs)
    proc = oci_image_tool(dest, "v1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"reference \[name=v1\]: OK", proc.stdout)
    assert without_members(readback.read_origin(dest)) == ORIGIN


def without_members(record):
    """The origin record as given to the writer (the writer adds the member list it checks outputs with)."""
    assert isinstance(record.get("members"), list) and record["members"]
    return dict((k, v) for k, v in record.items() if k != "members")
