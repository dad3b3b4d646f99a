"""Unit tests for module_utils/_runtime.py: names, reading archives, and the load/tag decisions against a
simulated runtime CLI (the real runtimes are exercised by tests/integration/targets/image_load)."""
import bz2
import gzip
import io
import json
import lzma
import os
import tarfile

import pytest

from ansible_collections.hocker.registry.plugins.module_utils import _runtime as R
from ansible_collections.hocker.registry.plugins.module_utils._registry import tarwriter
from testbed.loaders import archive_image, synthetic_image

BASE = [("bin", None), ("bin/sh", b"#!/bin/fake\n")]
TAGS = ("127.0.0.1:5000/app:v1", "hello-world:latest")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-images")
    host = R.host_platform()[1]
    other = "arm64" if host != "arm64" else "amd64"
    return {
        "a": synthetic_image(str(root / "a"), [(BASE, "gzip")], label="a", arch=host),
        "b": synthetic_image(str(root / "b"), [(BASE, "gzip")], label="b", arch=host),
        "foreign": synthetic_image(str(root / "f"), [(BASE, "gzip")], media="oci", label="f", arch=other),
    }


def write(tmp_path, img, fmt="docker-archive", compression="none", tags=TAGS, name="x"):
    dest = str(tmp_path / ("%s.tar%s" % (name, ".gz" if compression == "gzip" else "")))
    source = img if isinstance(img, list) else archive_image(img, "compressed")
    result = tarwriter.write_archive(dest, source, format=fmt, layers="compressed", repo_tags=list(tags),
                                     compression=compression)
    return dest, result


def make_tar(path, files, opener=open):
    with opener(path, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


# ------------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name,full,familiar", [
    ("hello-world", "docker.io/library/hello-world:latest", "hello-world:latest"),
    ("hello-world:1", "docker.io/library/hello-world:1", "hello-world:1"),
    ("library/debian:12", "docker.io/library/debian:12", "debian:12"),
    ("owner/app:2", "docker.io/owner/app:2", "owner/app:2"),
    ("index.docker.io/owner/app", "docker.io/owner/app:latest", "owner/app:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
    ("ghcr.io/o/app:1.2", "ghcr.io/o/app:1.2", "ghcr.io/o/app:1.2"),
])
def test_names(name, full, familiar):
    assert R.normalize_name(name) == full
    assert R.familiar_name(full) == familiar


@pytest.mark.parametrize("bad", ["", "app@sha256:" + "0" * 64, "App:1", "app:", "a b", " app"])
def test_bad_names(bad):
    with pytest.raises(ValueError):
        R.normalize_name(bad)


# ------------------------------------------------------------------------------------------------- archives
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_read_our_archives(tmp_path, images, fmt, compression):
    tags = list(TAGS if fmt == "docker-archive" else TAGS[:1])   # podman wants one index.json entry in an oci-archive
    dest, result = write(tmp_path, images["a"], fmt, compression, tags=tags)
    info = R.read_archive(dest)
    assert info.kind == fmt
    assert info.compression == compression
    assert info.image_id == images["a"]["config_digest"]
    assert info.names == [R.normalize_name(t) for t in tags]
    assert info.target == result["manifests"][0]["digest"]


def test_read_other_compressions(tmp_path, images):
    dest, result = write(tmp_path, images["a"])
    with open(dest, "rb") as f:
        data = f.read()
    for name, opener in (("x.tar.bz2", bz2.open), ("x.tar.xz", lzma.open)):
        path = str(tmp_path / name)
        with opener(path, "wb") as out:
            out.write(data)
        info = R.read_archive(path)
        assert (info.image_id, info.target) == (images["a"]["config_digest"], result["manifests"][0]["digest"])


def test_read_multi_platform_oci_archive(tmp_path, images):
    imgs = [archive_image(images["foreign"], "compressed"), archive_image(images["a"], "compressed")]
    dest, result = write(tmp_path, imgs, "oci-archive", tags=TAGS[:1])
    info = R.read_archive(dest)
    assert info.target == result["index_digest"]            # containerd names the index
    assert info.image_id == images["a"]["config_digest"]    # docker and podman take this host's platform


def test_read_foreign_platform_index(tmp_path, images):
    dest, _result = write(tmp_path, [archive_image(images["foreign"], "compressed")] * 1 +
                          [archive_image(images["foreign"], "compressed")], "oci-archive", tags=TAGS[:1])
    with pytest.raises(R.ArchiveError, match="no image for this host's platform"):
        R.read_archive(dest)


def test_read_legacy_docker_save(tmp_path, images):
    # docker 20.10's `docker save`: <config hex>.json, <id>/layer.tar, short repo tags, no index.json
    img = images["a"]
    hexid = img["config_digest"].split(":")[1]
    manifest = [{"Config": hexid + ".json", "RepoTags": ["app:1"], "Layers": ["l1/layer.tar"]}]
    with open(img["layers"][0]["tar_path"], "rb") as f:
        layer = f.read()
    path = make_tar(str(tmp_path / "legacy.tar"), [(hexid + ".json", img["config"]), ("l1/layer.tar", layer),
                                                   ("manifest.json", json.dumps(manifest).encode())])
    info = R.read_archive(path)
    assert (info.kind, info.image_id, info.names, info.target) == (
        "docker-archive", img["config_digest"], ["docker.io/library/app:1"], None)


@pytest.mark.parametrize("case,message", [
    ("noimage", "neither manifest.json"),
    ("truncated", "which the archive lacks .* it is truncated"),
    ("short", "too short for a tar"),
    ("empty", "empty file"),
    ("garbage-gzip", "not a readable gzip-compressed tar archive"),
    ("two-images", "holds 2 images"),
    ("bad-json", "manifest.json is not valid JSON"),
    ("missing-config", "which the archive lacks"),
    ("zstd", "zstd-compressed"),
])
def test_read_bad_archives(tmp_path, images, case, message):
    path = str(tmp_path / "bad.tar")
    if case == "noimage":
        make_tar(path, [("etc/hostname", b"host\n")])
    elif case == "truncated":
        dest, _r = write(tmp_path, images["a"])
        with open(dest, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:5000])
    elif case == "short":
        with open(path, "wb") as f:
            f.write(b"hello\n")
    elif case == "empty":
        open(path, "wb").close()
    elif case == "garbage-gzip":
        with open(path, "wb") as f:
            f.write(gzip.compress(b"not a tar at all" * 100))
    elif case == "two-images":
        entry = {"Config": "blobs/sha256/" + "a" * 64, "RepoTags": [], "Layers": []}
        make_tar(path, [("manifest.json", json.dumps([entry, entry]).encode())])
    elif case == "bad-json":
        make_tar(path, [("manifest.json", b"{not json")])
    elif case == "missing-config":
        entry = {"Config": "blobs/sha256/" + "a" * 64, "RepoTags": ["x:1"], "Layers": []}
        make_tar(path, [("manifest.json", json.dumps([entry]).encode())])
    elif case == "zstd":
        with open(path, "wb") as f:
            f.write(b"\x28\xb5\x2f\xfd" + bytes(600))
    with pytest.raises(R.ArchiveError, match=message):
        R.read_archive(path)


def test_read_directory(tmp_path):
    with pytest.raises(R.ArchiveError, match="is a directory"):
        R.read_archive(str(tmp_path))


def test_shorten():
    assert R.shorten("\x1b[31mError\x1b[0m: one\n\n  two  \n") == "Error: one / two"
    long = R.shorten("x" * 5000)
    assert len(long) == R.MAX_MESSAGE and long.endswith("...")


# ------------------------------------------------------------------------------------------------- decisions
class FakeDocker:
    """The docker CLI as far as image_load uses it: {name or id: image id}."""

    def __init__(self, archives):
        self.images = set()
        self.tags = {}
        self.archives = archives   # path -> (image id, [names])
        self.calls = []

    def which(self, name):
        return "/usr/bin/docker" if name == "docker" else None

    def run(self, argv, timeout=None):
        args = argv[1:]
        self.calls.append(args[0] if args[0] != "image" else "inspect")
        if args[:1] == ["version"]:
            return 0, "28.0.0\n", ""
        if args[:2] == ["image", "inspect"]:
            ref = args[-1]
            iid = ref if ref in self.images else self.tags.get(ref)
            return (0, iid + "\n", "") if iid else (1, "", "Error: No such image: %s" % ref)
        if args[0] == "load":
            iid, names = self.archives[args[-1]]
            self.images.add(iid)
            for n in names:
                self.tags[n] = iid
            return 0, "Loaded image: %s\n" % names[0], ""
        if args[0] == "tag":
            self.tags[args[2]] = args[1]
            return 0, "", ""
        raise AssertionError(argv)


def test_load_decisions(tmp_path, images):
    a, _r = write(tmp_path, images["a"], name="a")
    b, _r = write(tmp_path, images["b"], tags=TAGS[:1], name="b")
    ida, idb = images["a"]["config_digest"], images["b"]["config_digest"]
    full = [R.normalize_name(t) for t in TAGS]
    docker = FakeDocker({a: (ida, full), b: (idb, full[:1])})

    def load(src, check=False, **params):
        docker.calls = []
        params.update(src=src, runtime="auto")
        return R.load_image(params, docker.which, docker.run, check_mode=check)

    res = load(a, check=True)
    assert (res["changed"], res["loaded"], res["runtime"]) == (True, True, "docker")
    assert "load" not in docker.calls and not docker.images            # check mode changes nothing
    res = load(a)
    assert (res["changed"], res["loaded"], res["repo_tags"]) == (True, True, list(TAGS))
    assert res["diff"]["after"]["images"] == {TAGS[0]: ida, TAGS[1]: ida}
    res = load(a)
    assert (res["changed"], res["loaded"], res["actions"]) == (False, False, [])
    assert docker.calls == ["version", "inspect", "inspect"]

    # another image takes the first name: loaded; then the first image gets it back with a tag
    res = load(b)
    assert (res["changed"], res["loaded"]) == (True, True)
    assert docker.tags[full[0]] == idb
    res = load(a, check=True)
    assert (res["changed"], res["loaded"], res["actions"]) == (True, False, ["tag %s as %s" % (ida, TAGS[0])])
    assert res["diff"]["before"]["images"][TAGS[0]] == idb
    res = load(a)
    assert docker.tags[full[0]] == ida and "load" not in docker.calls

    # an extra name only needs a tag
    res = load(a, repo_tags=["extra:2"])
    assert (res["changed"], res["loaded"], res["repo_tags"]) == (True, False, ["extra:2"])
    assert docker.tags["docker.io/library/extra:2"] == ida
    assert load(a, repo_tags=["extra:2"])["changed"] is False


def test_load_verifies_the_result(tmp_path, images):
    a, _r = write(tmp_path, images["a"], name="a")
    docker = FakeDocker({a: (images["b"]["config_digest"], [R.normalize_name(TAGS[0])])})   # a lying runtime
    with pytest.raises(R.RuntimeFailure, match="docker loaded .* but 127.0.0.1:5000/app:v1 is sha256:"):
        R.load_image({"src": a, "runtime": "docker"}, docker.which, docker.run)


def test_no_runtime(tmp_path, images):
    a, _r = write(tmp_path, images["a"], name="a")

    def run(argv, timeout=None):
        return 1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."

    with pytest.raises(R.RuntimeFailure) as err:
        R.load_image({"src": a, "runtime": "auto", "runtime_args": ["--address", str(a) + ".nosock"]},
                     lambda n: "/usr/bin/" + n if n != "podman" else None, run)
    msg = str(err.value)
    assert msg.startswith("no container runtime found running (tried docker, podman, containerd)")
    assert "docker: the docker daemon is not reachable: Cannot connect" in msg
    assert "podman: the podman command is not installed" in msg
    assert "containerd: containerd is not running: no socket at" in msg
    assert os.path.exists(a)


class FakeModule:
    """run_command as ansible-core runs it, as far as module_runner relies on it (Popen, callback, wait)."""

    def run_command(self, args, before_communicate_callback=None, expand_user_and_vars=True):
        import subprocess
        assert expand_user_and_vars is False    # arguments reach the runtime as given
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if before_communicate_callback:
            before_communicate_callback(proc)
        out, err = proc.communicate()
        return proc.returncode, out.decode(), err.decode()


def test_module_runner_timeout():
    import time
    run = R.module_runner(FakeModule(), timeout=30)
    assert run(["sh", "-c", "echo hi; echo oops >&2; exit 3"]) == (3, "hi\n", "oops\n")
    started = time.time()
    rc, _out, err = run(["sleep", "30"], 1)
    assert time.time() - started < 10
    assert rc == -9 and err == "timed out after 1 seconds: sleep 30"
