"""docker_registry_image with layers written straight into their place in the archive.

The reference is the same image job with ``placement="never"`` (layers to work files, then the archive is
assembled), run through ``testbed.jobrun``: for every image kind, layers mode, archive format and cache state the two archives
must be the same bytes. The registry's access log shows the 4-byte ranged probes (status 206, size 4) that
guess the uncompressed sizes from the gzip trailer.
"""
import importlib.util
import json
import os
import threading
import time
import zlib

import pytest

from helpers import assert_clean_failure, auth_args, sha256_file
from testbed.jobrun import run_image_job
from testbed.proxy import FaultProxy

PLACE = {"placement": "always"}
NO_PLACE = {"placement": "never"}
GZIP_TYPES = ("application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip")

DOCKER_MANIFEST_KINDS = ("docker-simple", "multigzip")   # the others have OCI manifests


def _placeable(kind, fmt, mode):
    if mode == "uncompressed":
        return kind != "zstd"                     # no size in a zstd frame: nothing to lay out with
    # a docker schema2 manifest converted to OCI takes its layer types from the content: not placeable
    return not (fmt == "oci-archive" and kind in DOCKER_MANIFEST_KINDS)


# (kind, format, layers, placed): multigzip's guess is wrong (rewritten), uncompressed blobs need no probe
CASES = [(kind, fmt, mode, _placeable(kind, fmt, mode))
         for kind in ("docker-simple", "oci-simple", "zstd", "multigzip", "uncompressed")
         for fmt in ("docker-archive", "oci-archive") for mode in ("uncompressed", "compressed")]


def run(reg, info, dest, env, **extra):
    args = dict(auth_args(reg), image=info.image(reg.host), dest=str(dest))
    args.update(extra)
    result = run_image_job(args, **env)
    assert result["rc"] == 0, json.dumps(result)[-1500:]
    assert result["changed"] is True
    return result


def blob_gets(reg):
    return [r for r in reg.requests() if r["method"] == "GET" and "/blobs/" in r["path"]]


def probes(reg):
    """The 4-byte ranged blob requests logged since the last ``clear_log``, as {digest: count}."""
    out = {}
    for r in blob_gets(reg):
        if r["status"] == 206:
            assert r["size"] == 4, r
            digest = r["path"].rsplit("/", 1)[1]
            out[digest] = out.get(digest, 0) + 1
    return out


def expected_probes(info, mode, stored=False):
    """Layers whose size is guessed with a ranged request: gzip blobs, uncompressed mode, not in the store."""
    layers = info.default["layers"]
    if mode != "uncompressed" or stored or any("zstd" in l["media_type"] for l in layers):
        return {}
    return dict((l["digest"], 1) for l in layers if l["media_type"] in GZIP_TYPES)


def full_gets(reg):
    return sorted(r["path"].rsplit("/", 1)[1] for r in blob_gets(reg) if r["status"] == 200)


def layer_digests(info):
    return sorted(l["digest"] for l in info.default["layers"])


def last_member_isize(blob):
    """What the gzip trailer says: the size of the last member only."""
    return int.from_bytes(blob[-4:], "little")


def inflate_all(blob):
    out = []
    while blob:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(blob))
        blob = d.unused_data
    return b"".join(out)


@pytest.mark.parametrize("kind,fmt,mode,placed", CASES)
def test_placed_archive_equals_assembled(registry_anonymous, seeded, tmp_path, kind, fmt, mode, placed):
    reg = registry_anonymous
    info = seeded(reg)[kind]
    if kind == "multigzip" and mode == "uncompressed":
        # the trailer only knows the last member: the placed archive has to be written again
        blob = info.blobs[info.default["layers"][0]["digest"]]
        assert last_member_isize(blob) < len(inflate_all(blob))
    reg.clear_log()
    one = run(reg, info, tmp_path / "placed.tar", PLACE, format=fmt, layers=mode)
    logged = probes(reg)
    gets = full_gets(reg)
    reg.clear_log()
    two = run(reg, info, tmp_path / "assembled.tar", NO_PLACE, format=fmt, layers=mode)
    assert probes(reg) == {}                          # no guessing without placement
    assert sha256_file(str(tmp_path / "placed.tar")) == sha256_file(str(tmp_path / "assembled.tar"))
    assert one["bytes_written"] == two["bytes_written"] == os.path.getsize(str(tmp_path / "placed.tar"))
    assert one["layers"] == two["layers"]
    assert one["bytes_downloaded"] == two["bytes_downloaded"]
    assert logged == (expected_probes(info, mode) if placed else {})
    # every layer blob downloaded once in full (plus the config)
    assert [g for g in gets if g in layer_digests(info)] == layer_digests(info)
    assert sorted(os.listdir(str(tmp_path))) == ["assembled.tar", "placed.tar"]


def _watch_fetch(reg, info, tmp_path, env, fmt, mode, stall_digest, skip):
    """Run the module through a proxy that holds the download of one layer blob; while it is held, look at
    the work directory. Returns (result, names in the work dir, size of its ``archive`` file or None)."""
    dest = tmp_path / "img.tar"
    seen = {}
    with FaultProxy(reg.url) as proxy:
        rule = proxy.add_rule("stall", method="GET", path=stall_digest.split(":")[1], skip=skip, count=1, seconds=2)
        out = {}
        args = dict(image=info.repository + ":" + info.tag, registry=proxy.url, dest=str(dest), format=fmt,
                    layers=mode)
        worker = threading.Thread(target=lambda: out.update(run_image_job(args, **env)))
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while not rule.hits and worker.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rule.hits == 1, proxy.requests()
            work = tmp_path / ".img.tar.hocker-work"
            seen["names"] = sorted(os.listdir(str(work)))
            staged = work / "archive"
            seen["size"] = os.path.getsize(str(staged)) if staged.exists() else None
        finally:
            worker.join()
    assert out["rc"] == 0, out
    return out, seen, dest


@pytest.mark.parametrize("kind,fmt,mode,placed", [
    ("oci-simple", "docker-archive", "uncompressed", True),
    ("oci-simple", "oci-archive", "compressed", True),
    ("docker-simple", "oci-archive", "compressed", False),
])
def test_archive_is_laid_out_before_the_layers_arrive(registry_anonymous, seeded, tmp_path, kind, fmt, mode, placed):
    reg = registry_anonymous
    info = seeded(reg)[kind]
    digest = info.default["layers"][-1]["digest"]
    skip = 1 if mode == "uncompressed" else 0     # the ranged probe of that blob comes first
    result, seen, dest = _watch_fetch(reg, info, tmp_path, PLACE, fmt, mode, digest, skip)
    if placed:
        # the whole archive exists at its final size while a layer is still on its way
        assert seen["size"] == os.path.getsize(str(dest)) == result["bytes_written"], seen
    else:
        assert seen["size"] is None, seen
    if not placed:
        return
    os.unlink(str(dest))
    _result, seen, _dest = _watch_fetch(reg, info, tmp_path, NO_PLACE, fmt, mode, digest, 0)
    assert seen["size"] is None, seen


@pytest.mark.parametrize("kind,fmt,mode", [
    ("oci-simple", "docker-archive", "uncompressed"),
    ("multigzip", "oci-archive", "uncompressed"),
    ("docker-simple", "docker-archive", "compressed"),
    ("oci-simple", "oci-archive", "compressed"),
])
def test_cache_dir_cold_and_warm(registry_anonymous, seeded, tmp_path, kind, fmt, mode):
    reg = registry_anonymous
    info = seeded(reg)[kind]
    store = str(tmp_path / "store")
    reference = run(reg, info, tmp_path / "ref.tar", NO_PLACE, format=fmt, layers=mode)
    reg.clear_log()
    cold = run(reg, info, tmp_path / "cold.tar", PLACE, format=fmt, layers=mode, cache_dir=store)
    assert probes(reg) == expected_probes(info, mode)
    assert cold["cache_hits"] == 0
    reg.clear_log()
    warm = run(reg, info, tmp_path / "warm.tar", PLACE, format=fmt, layers=mode, cache_dir=store)
    assert probes(reg) == {}                  # the sizes come from the stored blobs
    assert [g for g in full_gets(reg) if g in layer_digests(info)] == []
    assert warm["cache_hits"] == len(info.default["layers"])
    warm_unplaced = run(reg, info, tmp_path / "warm-unplaced.tar", NO_PLACE, format=fmt, layers=mode,
                        cache_dir=store)
    want = sha256_file(str(tmp_path / "ref.tar"))
    for name in ("cold.tar", "warm.tar", "warm-unplaced.tar"):
        assert sha256_file(str(tmp_path / name)) == want, name
    assert reference["bytes_written"] == cold["bytes_written"] == warm["bytes_written"] == \
        warm_unplaced["bytes_written"]
    assert sorted(os.listdir(str(tmp_path))) == ["cold.tar", "ref.tar", "store", "warm-unplaced.tar", "warm.tar"]


def test_registry_ignoring_ranges(fresh_registry, tmp_path):
    """A registry answering the probe with 200 and the whole blob: no placement, the same archive, and the
    probe's body is not read (each blob comes over the wire once)."""
    from testbed.builder import seed
    reg = fresh_registry("anonymous")
    info = seed(reg, kinds=["big"], big_size=40 * 1024 * 1024)["big"]
    layers = info.default["layers"]
    sizes = dict((l["digest"], l["size"]) for l in layers)
    assert min(sizes.values()) > 6 * 1024 * 1024   # more than the socket buffers take in
    dest = tmp_path / "placed.tar"
    with FaultProxy(reg.url) as proxy:
        base = dict(image=info.repository + ":" + info.tag, registry=proxy.url, layers="uncompressed")
        proxy.add_rule("ignore_range", method="GET", path=r"/blobs/")
        placed = run_image_job(dict(base, dest=str(dest)), **PLACE)
        assert placed["rc"] == 0, placed
        logged = [r for r in proxy.requests() if r["method"] == "GET" and "/blobs/" in r["path"]]
        proxy.clear()
        unplaced = run_image_job(dict(base, dest=str(tmp_path / "assembled.tar")), **NO_PLACE)
        assert unplaced["rc"] == 0, unplaced
    assert sha256_file(str(dest)) == sha256_file(str(tmp_path / "assembled.tar"))
    assert placed["bytes_written"] == unplaced["bytes_written"]
    assert placed["bytes_downloaded"] == unplaced["bytes_downloaded"]
    ranged = [r for r in logged if any(k.lower() == "range" for k in r["headers"])]
    plain = [r for r in logged if not any(k.lower() == "range" for k in r["headers"])]
    # one probe per layer, answered 200 (the whole blob offered) and dropped after the headers
    assert sorted(r["path"].rsplit("/", 1)[1] for r in ranged) == sorted(sizes), ranged
    for r in ranged:
        assert r["status"] == 200 and r["fault"] == "ignore_range"
        assert r["bytes_sent"] < sizes[r["path"].rsplit("/", 1)[1]], r
    # and each layer blob downloaded in full exactly once
    full = [r for r in plain if r["path"].rsplit("/", 1)[1] in sizes]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in full) == sorted(sizes)
    for r in full:
        assert r["bytes_sent"] == sizes[r["path"].rsplit("/", 1)[1]]


@pytest.mark.parametrize("kind,fmt,mode,layer_index,where", [
    ("docker-simple", "docker-archive", "uncompressed", -1, "middle"),
    ("multigzip", "oci-archive", "uncompressed", 0, "end"),      # spilled before the damage shows
    ("oci-simple", "oci-archive", "compressed", -1, "middle"),
    ("docker-simple", "docker-archive", "compressed", 0, "end"),
])
def test_corrupted_blob_fails_cleanly(registry_anonymous, seeded, tmp_path, kind, fmt, mode, layer_index, where):
    reg = registry_anonymous
    info = seeded(reg)[kind]
    layer = info.default["layers"][layer_index]
    # past the 4 bytes a probe answers, so that only the full download is damaged
    offset = layer["size"] // 2 if where == "middle" else layer["size"] - 6
    assert offset >= 4
    dest = tmp_path / "img.tar"
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("flip", method="GET", path=layer["digest"].split(":")[1], offset=offset)
        args = dict(image=info.repository + ":" + info.tag, registry=proxy.url, dest=str(dest), format=fmt,
                    layers=mode, retries=0)
        broken = run_image_job(args, **PLACE)
        flipped = [r for r in proxy.requests() if r["fault"] == "flip" and r["bytes_sent"] > offset]
    assert flipped, "the damaged body was never sent"
    assert_clean_failure(broken)
    assert layer["digest"] in broken["msg"] and "verification" in broken["msg"], broken["msg"]
    assert not dest.exists()
    # no spill file, no partial archive: at most the work dir with the other layers' partial downloads, for
    # the next run to resume; never the damaged one
    left = sorted(os.listdir(str(tmp_path)))
    assert left in ([], [".img.tar.hocker-work", ".img.tar.hocker-work.lock"]), left
    if left:
        kept = os.listdir(str(tmp_path / ".img.tar.hocker-work"))
        assert all(name.endswith(".partial") for name in kept), kept
        assert layer["digest"].split(":")[1] + ".partial" not in kept


def test_podman_loads_placed_archives(registry_anonymous, seeded, tmp_path, podman):
    reg = registry_anonymous
    infos = seeded(reg)
    loaded = []
    for kind, mode in (("multigzip", "uncompressed"), ("oci-simple", "uncompressed"), ("zstd", "compressed")):
        info = infos[kind]
        dest = tmp_path / ("%s-%s.tar" % (kind, mode))
        run(reg, info, dest, PLACE, layers=mode)
        podman.load(str(dest))
        loaded.append(info.default["config_digest"])
    ids = sorted(i["id"] for i in podman.images())
    assert ids == sorted(loaded), json.dumps(podman.images())


@pytest.mark.parametrize("offset,mask", [(0, 0x01), (0, 0xFF), (3, 0x01)])
def test_wrong_trailer_from_the_registry(registry_anonymous, seeded, tmp_path, offset, mask):
    """The probe's 4 bytes are damaged (a guess a bit off, or 16 MiB too big): the placed archive notices
    and is written again, the same bytes as the assembled one."""
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    layer = info.default["layers"][-1]
    with FaultProxy(reg.url) as proxy:
        # the probe is the first GET of the blob: the sizes are guessed before anything is fetched
        rule = proxy.add_rule("flip", method="GET", path=layer["digest"].split(":")[1], count=1, offset=offset,
                              mask=mask)
        base = dict(image=info.repository + ":" + info.tag, registry=proxy.url, layers="uncompressed")
        placed = run_image_job(dict(base, dest=str(tmp_path / "placed.tar")), **PLACE)
        assert placed["rc"] == 0, placed
        probe = [r for r in proxy.requests() if r["fault"] == "flip"]
        unplaced = run_image_job(dict(base, dest=str(tmp_path / "assembled.tar")), **NO_PLACE)
        assert unplaced["rc"] == 0, unplaced
    assert rule.hits == 1 and probe[0]["status"] == 206 and probe[0]["bytes_sent"] == 4, probe
    assert sha256_file(str(tmp_path / "placed.tar")) == sha256_file(str(tmp_path / "assembled.tar"))
    assert placed["bytes_written"] == unplaced["bytes_written"]
    assert sorted(os.listdir(str(tmp_path))) == ["assembled.tar", "placed.tar"]


@pytest.mark.parametrize("kind", ["docker-simple", "multigzip"])
def test_placed_with_either_inflater(registry_anonymous, seeded, tmp_path, kind):
    """ISA-L (when installed) and zlib inflate into the places alike."""
    # pinned in tests/requirements-ci.txt: a venv without it is a broken test set-up, not a skip
    assert importlib.util.find_spec("isal") is not None
    reg = registry_anonymous
    info = seeded(reg)[kind]
    run(reg, info, tmp_path / "isal.tar", PLACE, layers="uncompressed")
    run(reg, info, tmp_path / "zlib.tar", dict(PLACE, inflater="zlib"), layers="uncompressed")
    assert sha256_file(str(tmp_path / "isal.tar")) == sha256_file(str(tmp_path / "zlib.tar"))


@pytest.mark.parametrize("fault", [dict(after_bytes=2), dict(), dict(status=429, retry_after="30")])
def test_probe_failures_are_only_a_lost_guess(registry_anonymous, seeded, tmp_path, fault):
    """A probe whose connection breaks mid-body, that is reset before any answer or that is rate limited:
    no traceback, no retry or Retry-After wait for a probe, the image is still fetched (the old flow), and
    the archive is the one the assembled flow writes."""
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    layer = info.default["layers"][-1]
    kind = "status" if "status" in fault else "reset"
    with FaultProxy(reg.url) as proxy:
        rule = proxy.add_rule(kind, method="GET", path=layer["digest"].split(":")[1], count=1, **fault)
        base = dict(image=info.repository + ":" + info.tag, registry=proxy.url, layers="uncompressed")
        placed = run_image_job(dict(base, dest=str(tmp_path / "placed.tar")), **PLACE)
        assert placed["rc"] == 0, placed
        assert rule.hits == 1
        unplaced = run_image_job(dict(base, dest=str(tmp_path / "assembled.tar")), **NO_PLACE)
        assert unplaced["rc"] == 0, unplaced
    assert placed["elapsed"] < 30   # the probe's Retry-After was not waited for
    assert not any("retry" in w for w in placed.get("warnings") or []), placed.get("warnings")
    assert sha256_file(str(tmp_path / "placed.tar")) == sha256_file(str(tmp_path / "assembled.tar"))
    assert sorted(os.listdir(str(tmp_path))) == ["assembled.tar", "placed.tar"]
