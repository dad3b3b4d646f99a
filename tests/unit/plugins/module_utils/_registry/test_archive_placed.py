"""Unit tests for archives laid out before their layers exist (``placed.open_placed``).

The reference for every placed archive is ``tarwriter.write_archive`` with the real layer files: the placed
archive must be byte for byte the same, whatever the guessed sizes were and however the layers arrived.
"""
import json
import os
import random
import threading

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil, layout, tarwriter
from ansible_collections.hocker.registry.plugins.module_utils._registry import placed as placing
from testbed.loaders import archive_image, synthetic_image

BASE = [("bin", None), ("bin/sh", b"#!/bin/fake\n"), ("etc", None), ("etc/os-release", b"ID=test\n" * 50)]
BIG = [("opt", None), ("opt/noise.bin", random.Random("placed-big").randbytes(300 * 1024)),
       ("opt/text.txt", b"placed archive test line\n" * 4000)]
EXTRA = [("app", None), ("app/data", b"x" * 5000)]
PLAIN = [("srv", None), ("srv/plain.txt", b"an uncompressed layer\n" * 30)]
ORIGIN = {"source": "sha256:" + "b" * 64, "platform": "linux/amd64"}
REPO_TAGS = ["app:v1"]

PLACEABLE = [(media, mode, fmt) for media in ("docker", "oci") for mode in ("uncompressed", "compressed")
             for fmt in ("docker-archive", "oci-archive")
             if not (media == "docker" and mode == "compressed" and fmt == "oci-archive")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("placed-images")
    result = {}
    for media in ("docker", "oci"):
        # EXTRA twice: one file in the archive, written through one writer
        result[media] = synthetic_image(str(root / media), [(BASE, "gzip"), (BIG, "gzip"), (EXTRA, "zstd"),
                                                            (EXTRA, "zstd"), (PLAIN, "none")], media=media)
    result["arm64"] = synthetic_image(str(root / "arm64"), [(BASE, "gzip"), (PLAIN, "none")], media="oci",
                                      arch="arm64", variant="v8")
    return result


def key_of(layer, mode):
    return layer["diff_id"] if mode == "uncompressed" else layer["digest"]


def contents(img, mode):
    """{key: bytes of the layer file in the archive} in manifest order, each key once."""
    out = {}
    for li in img["layers"]:
        path = li["tar_path"] if mode == "uncompressed" else li["blob_path"]
        with open(path, "rb") as f:
            out.setdefault(key_of(li, mode), f.read())
    return out


def placed_input(img, mode, sizes=None):
    """Input of ``open_placed``: no layer files; uncompressed layers carry a (guessed) size."""
    sizes = sizes or {}
    layers = []
    for li in img["layers"]:
        layer = {"digest": li["digest"], "diff_id": li["diff_id"], "size": li["size"], "media_type": li["media_type"],
                 "path": None}
        if mode == "uncompressed":
            layer["uncompressed_size"] = sizes.get(li["diff_id"], li["uncompressed_size"])
        layers.append(layer)
    return {"config": img["config"], "manifest": img["manifest"], "layers": layers,
            "config_digest": img["config_digest"], "manifest_digest": img["manifest_digest"]}


def reference(tmp_path, imgs, mode, fmt):
    dest = str(tmp_path / "reference.tar")
    result = tarwriter.write_archive(dest, [archive_image(i, mode) for i in imgs], format=fmt, layers=mode,
                                     repo_tags=REPO_TAGS if len(imgs) == 1 else (), name="example.com/app:v1",
                                     origin=ORIGIN)
    with open(dest, "rb") as f:
        data = f.read()
    os.unlink(dest)
    return data, result


def open_placed(tmp_path, imgs, mode, fmt, sizes=None, workdir=None):
    workdir = workdir or tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    dest = str(tmp_path / "placed.tar")
    placed = placing.open_placed(dest, [placed_input(i, mode, sizes) for i in imgs], format=fmt, layers=mode,
                                 repo_tags=REPO_TAGS if len(imgs) == 1 else (), name="example.com/app:v1",
                                 origin=ORIGIN, workdir=str(workdir))
    return dest, placed, workdir


def write_layer(placed, key, data, chunk=7777):
    sink = placed.writer(key)
    for start in range(0, len(data), chunk):
        sink.write(data[start:start + chunk])
    sink.close()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def assert_same_as_reference(dest, result, ref, rewritten, workdir):
    data, ref_result = ref
    got = read(dest)
    assert len(got) == len(data)
    assert got == data
    expected = dict(ref_result)
    expected["rewritten"] = rewritten
    assert result == expected
    assert result["bytes_written"] == len(got)
    # no spill file, no second archive left behind
    assert os.listdir(str(workdir)) == []
    assert sorted(os.listdir(os.path.dirname(dest))) == sorted(["placed.tar", os.path.basename(str(workdir))])


@pytest.mark.parametrize("media,mode,fmt", PLACEABLE)
@pytest.mark.parametrize("chunk", [1 << 20, 4096, 1000])
def test_placed_is_byte_identical(tmp_path, images, media, mode, fmt, chunk):
    img = images[media]
    ref = reference(tmp_path, [img], mode, fmt)
    assert placing.can_place(placed_input(img, mode), fmt, mode) is True
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    # the layout exists before any layer: same size as the finished archive
    assert os.path.getsize(dest) == len(ref[0])
    for key, data in reversed(list(contents(img, mode).items())):   # order does not matter
        write_layer(placed, key, data, chunk)
    result = placed.finish()
    assert result["rewritten"] is False
    assert_same_as_reference(dest, result, ref, False, workdir)


@pytest.mark.parametrize("media,mode,fmt", PLACEABLE)
def test_two_threads_at_once(tmp_path, images, media, mode, fmt):
    img = images[media]
    ref = reference(tmp_path, [img], mode, fmt)
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    items = list(contents(img, mode).items())
    groups = [items[0::2], items[1::2]]
    barrier = threading.Barrier(2)
    errors = []

    def work(group):
        try:
            sinks = [(placed.writer(key), data) for key, data in group]
            barrier.wait()
            # interleave small writes of several layers in both threads
            offset = 0
            while any(offset < len(data) for _sink, data in sinks):
                for sink, data in sinks:
                    if offset < len(data):
                        sink.write(data[offset:offset + 1536])
                offset += 1536
            for sink, _data in sinks:
                sink.close()
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = placed.finish()
    assert_same_as_reference(dest, result, ref, False, workdir)


def _big_key(img):
    return img["layers"][1]["diff_id"]


def _real_size(img, diff_id):
    return next(li["uncompressed_size"] for li in img["layers"] if li["diff_id"] == diff_id)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("guess", ["one-less", "half", "zero", "one-more", "block-more", "double", "mixed"])
def test_wrong_guess_rewrites_identically(tmp_path, images, fmt, guess):
    img = images["docker" if fmt == "docker-archive" else "oci"]
    mode = "uncompressed"
    ref = reference(tmp_path, [img], mode, fmt)
    big = _big_key(img)
    real = _real_size(img, big)
    sizes = {
        "one-less": {big: real - 1},                                        # spills at the very last byte
        "half": {big: real // 2},
        "zero": {big: 0},
        "one-more": {big: real + 1},                                        # ends short of its place
        "block-more": {big: real + 512},
        "double": {big: real * 2},
        "mixed": {big: real - 4096, img["layers"][0]["diff_id"]: _real_size(img, img["layers"][0]["diff_id"]) + 3,
                  img["layers"][4]["diff_id"]: 10},
    }[guess]
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt, sizes=sizes)
    for key, data in contents(img, mode).items():
        write_layer(placed, key, data, 5000)
    result = placed.finish()
    assert result["rewritten"] is True
    assert_same_as_reference(dest, result, ref, True, workdir)


def test_wrong_guess_with_two_threads(tmp_path, images):
    img = images["oci"]
    mode, fmt = "uncompressed", "oci-archive"
    ref = reference(tmp_path, [img], mode, fmt)
    sizes = dict((li["diff_id"], li["uncompressed_size"] // 3) for li in img["layers"])
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt, sizes=sizes)
    items = list(contents(img, mode).items())
    threads = [threading.Thread(target=lambda group=group: [write_layer(placed, k, d, 2048) for k, d in group])
               for group in (items[0::2], items[1::2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = placed.finish()
    assert result["rewritten"] is True
    assert_same_as_reference(dest, result, ref, True, workdir)


@pytest.mark.parametrize("guess", ["exact", "small", "big"])
def test_several_platforms_with_a_shared_layer(tmp_path, images, guess):
    imgs = [images["oci"], images["arm64"]]
    mode, fmt = "uncompressed", "oci-archive"
    shared = images["arm64"]["layers"][0]["diff_id"]
    assert shared == images["oci"]["layers"][0]["diff_id"]
    real = _real_size(images["oci"], shared)
    sizes = {"exact": {}, "small": {shared: real - 100}, "big": {shared: real + 100}}[guess]
    ref = reference(tmp_path, imgs, mode, fmt)
    dest, placed, workdir = open_placed(tmp_path, imgs, mode, fmt, sizes=sizes)
    merged = contents(images["oci"], mode)
    merged.update(contents(images["arm64"], mode))
    for key, data in merged.items():
        write_layer(placed, key, data)
    result = placed.finish()
    assert result["rewritten"] is (guess != "exact")
    assert len(result["manifests"]) == 2 and result["index_digest"]
    assert_same_as_reference(dest, result, ref, guess != "exact", workdir)


@pytest.mark.parametrize("mode,fmt", [("uncompressed", "docker-archive"), ("uncompressed", "oci-archive"),
                                      ("compressed", "docker-archive"), ("compressed", "oci-archive")])
@pytest.mark.parametrize("garbage", ["prefix", "longer", "all"])
def test_restarted_writer(tmp_path, images, mode, fmt, garbage):
    """A download that restarts from zero opens a new writer: the layer starts again from its first byte."""
    img = images["oci"]
    ref = reference(tmp_path, [img], mode, fmt)
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    items = contents(img, mode)
    key = key_of(img["layers"][1], mode)
    data = items[key]
    first = placed.writer(key)
    if garbage == "prefix":
        first.write(data[:len(data) // 3])                      # the right bytes, cut off
    elif garbage == "longer":
        first.write(b"\xaa" * (len(data) // 2))                 # wrong bytes, then the real layer
    else:
        first.write(b"\x55" * len(data))                        # a whole wrong layer
    for other, other_data in items.items():
        if other != key:
            write_layer(placed, other, other_data)
    write_layer(placed, key, data, 3000)
    # the abandoned writer cannot write any more
    with pytest.raises(ValueError):
        first.write(b"late")
    result = placed.finish()
    assert result["rewritten"] is False
    assert_same_as_reference(dest, result, ref, False, workdir)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_restarted_writer_after_a_spill(tmp_path, images, fmt):
    """The first attempt grew past the guessed size (spill file); the second attempt spills again."""
    img = images["oci"]
    mode = "uncompressed"
    ref = reference(tmp_path, [img], mode, fmt)
    key = _big_key(img)
    real = _real_size(img, key)
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt, sizes={key: real // 2})
    items = contents(img, mode)
    first = placed.writer(key)
    first.write(items[key][:real - 1000])          # beyond its place: spilled
    assert os.listdir(str(workdir)) == [key.split(":")[1] + ".spill"]
    for k, d in items.items():
        write_layer(placed, k, d)
    result = placed.finish()
    assert result["rewritten"] is True
    assert_same_as_reference(dest, result, ref, True, workdir)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_restarted_writer_spilled_then_fits(tmp_path, images, fmt):
    """The first attempt wrote more bytes than the place holds (spill file), the second attempt fits
    exactly: the archive needs no rewrite and the first attempt's spill file must not stay behind."""
    img = images["oci"]
    mode = "uncompressed"
    ref = reference(tmp_path, [img], mode, fmt)
    key = _big_key(img)
    real = _real_size(img, key)
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    items = contents(img, mode)
    first = placed.writer(key)
    first.write(b"\x11" * (real + 10))              # a wrong, longer body (e.g. a corrupted first attempt)
    assert os.listdir(str(workdir)) == [key.split(":")[1] + ".spill"]
    for k, d in items.items():
        write_layer(placed, k, d)
    result = placed.finish()
    assert result["rewritten"] is False
    assert_same_as_reference(dest, result, ref, False, workdir)


@pytest.mark.parametrize("mode,fmt", [("uncompressed", "docker-archive"), ("compressed", "oci-archive")])
@pytest.mark.parametrize("state", ["fresh", "partial", "spilled", "restarted-after-spill", "all-written"])
def test_abort_removes_everything(tmp_path, images, mode, fmt, state):
    img = images["oci"]
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    assert os.path.exists(dest)
    items = list(contents(img, mode).items())
    if state == "partial":
        placed.writer(items[1][0]).write(items[1][1][:1000])
    elif state == "spilled":
        sink = placed.writer(items[1][0])
        sink.write(b"z" * (len(items[1][1]) + 5000))        # more than its place holds
        assert os.listdir(str(workdir)) == [items[1][0].split(":")[1] + ".spill"]
    elif state == "restarted-after-spill":
        placed.writer(items[1][0]).write(b"z" * (len(items[1][1]) + 5000))
        placed.writer(items[1][0]).write(items[1][1][:100])    # the retry has not reached the end yet
    elif state == "all-written":
        for key, data in items:
            write_layer(placed, key, data)
    placed.abort()
    assert not os.path.exists(dest)
    assert os.listdir(str(workdir)) == []
    assert sorted(os.listdir(str(tmp_path))) == ["work"]


@pytest.mark.parametrize("mode,fmt", [("uncompressed", "docker-archive"), ("compressed", "docker-archive"),
                                      ("uncompressed", "oci-archive"), ("compressed", "oci-archive")])
@pytest.mark.parametrize("how", ["never-opened", "not-closed"])
def test_finish_with_a_missing_layer(tmp_path, images, mode, fmt, how):
    img = images["oci"]
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    items = list(contents(img, mode).items())
    missing_key, missing_data = items[-1]
    for key, data in items[:-1]:
        write_layer(placed, key, data)
    if how == "not-closed":
        placed.writer(missing_key).write(missing_data)
    with pytest.raises(layout.ArchiveError) as err:
        placed.finish()
    assert missing_key.split(":")[1] in str(err.value)
    placed.abort()
    assert not os.path.exists(dest)
    assert os.listdir(str(workdir)) == []


def test_unknown_key_is_refused(tmp_path, images):
    img = images["oci"]
    dest, placed, _workdir = open_placed(tmp_path, [img], "uncompressed", "docker-archive")
    try:
        with pytest.raises(layout.ArchiveError):
            placed.writer("sha256:" + "0" * 64)
        with pytest.raises(layout.ArchiveError):
            placed.writer(img["layers"][0]["digest"])        # a blob digest where diff_ids name the files
    finally:
        placed.abort()
    assert not os.path.exists(dest)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("delta", [-1, 1])
def test_compressed_blob_of_the_wrong_length_is_an_error(tmp_path, images, fmt, delta):
    """In compressed mode the place is the manifest's blob size: a blob of another length cannot be what
    the manifest describes, and finish() must not hand out an archive with it."""
    img = images["oci"]
    mode = "compressed"
    dest, placed, workdir = open_placed(tmp_path, [img], mode, fmt)
    items = contents(img, mode)
    key = img["layers"][1]["digest"]
    for k, d in items.items():
        write_layer(placed, k, d + b"\0" if (k == key and delta > 0) else (d[:-1] if k == key else d))
    with pytest.raises(layout.ArchiveError):
        placed.finish()
    placed.abort()
    assert not os.path.exists(dest)
    assert os.listdir(str(workdir)) == []


def test_can_place(images):
    docker_c = placed_input(images["docker"], "compressed")
    oci_c = placed_input(images["oci"], "compressed")
    oci_u = placed_input(images["oci"], "uncompressed")
    docker_u = placed_input(images["docker"], "uncompressed")
    # the layout of these cannot be known before the layers exist
    assert placing.can_place(oci_u, "oci-dir", "uncompressed") is False
    assert placing.can_place(oci_c, "oci-dir", "compressed") is False
    assert placing.can_place(oci_u, "docker-archive", "uncompressed", "gzip") is False
    assert placing.can_place(oci_u, "oci-archive", "uncompressed", "gzip") is False
    assert placing.can_place(docker_c, "oci-archive", "compressed") is False
    assert placing.can_place([oci_c, docker_c], "oci-archive", "compressed") is False
    # these can
    assert placing.can_place(docker_c, "docker-archive", "compressed") is True
    assert placing.can_place(oci_c, "oci-archive", "compressed") is True
    assert placing.can_place(oci_c, "docker-archive", "compressed") is True
    assert placing.can_place(docker_u, "oci-archive", "uncompressed") is True
    assert placing.can_place(docker_u, "docker-archive", "uncompressed", "none") is True
    assert placing.can_place([oci_u, placed_input(images["arm64"], "uncompressed")], "oci-archive", "uncompressed") is True


def test_open_placed_refuses_what_it_cannot_lay_out(tmp_path, images):
    for img, mode, fmt in ((images["docker"], "compressed", "oci-archive"),
                           (images["oci"], "uncompressed", "oci-dir")):
        with pytest.raises(layout.ArchiveError):
            placing.open_placed(str(tmp_path / "x.tar"), placed_input(img, mode), format=fmt, layers=mode,
                                workdir=str(tmp_path))
    # uncompressed layers need a (guessed) size
    unsized = placed_input(images["oci"], "uncompressed")
    for layer in unsized["layers"]:
        layer.pop("uncompressed_size")
    with pytest.raises(layout.ArchiveError):
        placing.open_placed(str(tmp_path / "x.tar"), unsized, format="docker-archive", layers="uncompressed",
                            workdir=str(tmp_path))
    assert sorted(os.listdir(str(tmp_path))) == []


@pytest.mark.parametrize("mode", ["uncompressed", "compressed"])
def test_finish_refuses_a_layer_abandoned_without_a_new_writer(tmp_path, images, mode):
    """An abandoned writer is closed but its layer is not finished: finish() refuses, abort() cleans up."""
    img = images["oci"]
    dest, placed, workdir = open_placed(tmp_path, [img], mode, "oci-archive")
    items = list(contents(img, mode).items())
    for key, data in items[:-1]:
        write_layer(placed, key, data)
    last_key, last_data = items[-1]
    sink = placed.writer(last_key)
    sink.write(last_data[:10])
    sink.abandon()
    with pytest.raises(layout.ArchiveError) as err:
        placed.finish()
    assert last_key.split(":")[1] in str(err.value)
    placed.abort()
    assert not os.path.exists(dest)
    assert os.listdir(str(workdir)) == []


@pytest.mark.parametrize("size", [2 ** 64, 2 ** 90])
def test_sizes_no_file_can_hold_are_an_archive_error(tmp_path, images, size):
    """A manifest that lies about a blob size: a clean ArchiveError and no file, not a traceback."""
    img = images["oci"]
    spec = placed_input(img, "compressed")
    spec["layers"][0]["size"] = size
    manifest = json.loads(spec["manifest"].decode())
    manifest["layers"][0]["size"] = size
    spec["manifest"] = jsonutil.dumps(manifest)
    del spec["manifest_digest"]
    dest = str(tmp_path / "placed.tar")
    with pytest.raises(layout.ArchiveError):
        placing.open_placed(dest, [spec], format="oci-archive", layers="compressed", workdir=str(tmp_path))
    assert not os.path.exists(dest)
