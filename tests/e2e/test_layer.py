"""docker_registry_layer and the blob store against real registries and the fault proxy."""
import hashlib
import json
import os
import signal
import time

import pytest

from helpers import assert_clean_failure, auth_args, sha256_file
from testbed.modrun import run_module
from testbed.proxy import FaultProxy

BLOB_PATH = r"/blobs/sha256:"


def layer_args(reg, image, dest, **extra):
    args = dict(auth_args(reg), image=image, dest=str(dest))
    args.update(extra)
    return args


@pytest.fixture(scope="module")
def big(registry_anonymous, seeded):
    return seeded(registry_anonymous, kinds=["big"])["big"]


def biggest_layer(info):
    layers = info.default["layers"]
    position = max(range(len(layers)), key=lambda i: layers[i]["size"])
    return position, layers[position]


@pytest.mark.parametrize("kind", ["docker-simple", "multigzip", "zstd", "uncompressed", "oci-index"])
def test_decompress_matches_diff_id(registry_anonymous, seeded, tmp_path, kind):
    reg = registry_anonymous
    info = seeded(reg)[kind]
    for position, layer in enumerate(info.default["layers"]):
        dest = tmp_path / ("layer%d.tar" % position)
        result = run_module("docker_registry_layer", layer_args(reg, info.image(reg.host), dest, index=position,
                                                                decompress=True))
        assert result["rc"] == 0, result
        assert sha256_file(str(dest)) == layer["diff_id"] == result["diff_id"]
        assert result["layer_digest"] == layer["digest"]
        assert result["media_type"] == layer["media_type"]


def test_compressed_check_real_idempotent_every_mode(any_registry, tmp_path):
    reg, images = any_registry
    info = images["docker-simple"]
    layer = info.default["layers"][0]
    dest = tmp_path / "l.tar.gz"
    args = layer_args(reg, info.image(reg.host), dest, layer=layer["digest"])
    check = run_module("docker_registry_layer", args, check=True, diff=True)
    assert check["changed"] is True and not dest.exists()
    assert check["diff"]["after"]["digest"] == layer["digest"]
    real = run_module("docker_registry_layer", args)
    assert real["changed"] is True and sha256_file(str(dest)) == layer["digest"]
    assert real["size"] == layer["size"] and real["resumed"] is False
    again = run_module("docker_registry_layer", args)
    assert again["changed"] is False
    assert again["bytes_downloaded"] < layer["size"] or layer["size"] < 4096
    bare = run_module("docker_registry_layer", dict(args, layer=layer["digest"].split(":", 1)[1]))
    assert bare["changed"] is False


def test_negative_index_and_bad_selection(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["many-layers"]
    layers = info.default["layers"]
    dest = tmp_path / "top"
    result = run_module("docker_registry_layer", layer_args(reg, info.image(reg.host), dest, index=-1))
    assert result["layer_digest"] == layers[-1]["digest"]
    out_of_range = run_module("docker_registry_layer", layer_args(reg, info.image(reg.host), tmp_path / "x",
                                                                  index=len(layers)))
    assert_clean_failure(out_of_range)
    assert "out of range" in out_of_range["msg"]
    missing = run_module("docker_registry_layer", layer_args(reg, info.image(reg.host), tmp_path / "y",
                                                             layer="sha256:" + "0" * 64))
    assert_clean_failure(missing)
    assert not (tmp_path / "y").exists()


def test_big_layer_flat_memory(registry_anonymous, big, tmp_path):
    reg = registry_anonymous
    position, layer = biggest_layer(big)
    assert layer["size"] > 50 * 1024 * 1024
    dest = tmp_path / "big.tar.gz"
    result = run_module("docker_registry_layer", layer_args(reg, big.image(reg.host), dest, index=position),
                        measure_rss=True)
    assert result["rc"] == 0, result
    assert sha256_file(str(dest)) == layer["digest"]
    unpacked = run_module("docker_registry_layer", layer_args(reg, big.image(reg.host), tmp_path / "d.tar",
                                                              index=position, decompress=True), measure_rss=True)
    assert unpacked["rc"] == 0, unpacked
    assert sha256_file(str(tmp_path / "d.tar")) == layer["diff_id"]
    tiny = run_module("docker_registry_manifest", dict(image=big.image(reg.host)), measure_rss=True)
    # memory does not grow with the layer: a 60 MB layer costs no more than a few MiB over a manifest fetch
    for run in (result, unpacked):
        assert run["max_rss_kb"] < tiny["max_rss_kb"] + 16 * 1024, (run["max_rss_kb"], tiny["max_rss_kb"])
        assert run["max_rss_kb"] < 100 * 1024


@pytest.mark.parametrize("decompress", [False, True])
def test_reset_resumes_in_same_run(registry_anonymous, big, tmp_path, decompress):
    reg = registry_anonymous
    position, layer = biggest_layer(big)
    half = layer["size"] // 2
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("reset", method="GET", path=BLOB_PATH + layer["digest"].split(":")[1], count=1,
                       after_bytes=half)
        dest = tmp_path / "l"
        result = run_module("docker_registry_layer", dict(image=big.repository + ":" + big.tag,
                                                          registry=proxy.url, index=position, dest=str(dest),
                                                          decompress=decompress))
        assert result["rc"] == 0, result
        assert result["resumed"] is True
        assert sha256_file(str(dest)) == layer["diff_id" if decompress else "digest"]
        assert sorted(os.listdir(str(tmp_path))) == ["l"]
        gets = [r for r in proxy.requests() if r["method"] == "GET" and layer["digest"] in r["path"]]
        assert len(gets) == 2
        assert "Range" not in gets[0]["headers"]
        # the resume starts where the partial file ended: at most one read buffer before the cut
        start = int(gets[1]["headers"]["Range"].split("=")[1].rstrip("-"))
        assert gets[0]["bytes_sent"] - 1024 * 1024 <= start <= gets[0]["bytes_sent"]
        total = sum(r["bytes_sent"] for r in gets)
        assert total < layer["size"] + 1024 * 1024, total
        assert "resuming" in json.dumps(result.get("warnings", [])), result.get("warnings")


@pytest.mark.parametrize("decompress", [False, True])
def test_sigkill_then_resume_from_partial(registry_anonymous, big, tmp_path, decompress):
    reg = registry_anonymous
    position, layer = biggest_layer(big)
    dest = tmp_path / "l"
    partial = tmp_path / ".l.part"
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("stall", method="GET", path=BLOB_PATH + layer["digest"].split(":")[1], count=1,
                       after_bytes=layer["size"] // 3, seconds=60)
        args = dict(image=big.repository + ":" + big.tag, registry=proxy.url, index=position, dest=str(dest),
                    decompress=decompress)

        def kill_when_stalled(proc):
            deadline = time.time() + 120
            while time.time() < deadline:
                if partial.exists() and partial.stat().st_size >= layer["size"] // 3 - 1024 * 1024:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            os.kill(proc.pid, signal.SIGKILL)

        killed = run_module("docker_registry_layer", args, popen_hook=kill_when_stalled)
        assert killed["rc"] == -signal.SIGKILL
        assert not dest.exists()
        kept = partial.stat().st_size
        assert kept > 0
        proxy.reset_stats()
        second = run_module("docker_registry_layer", args)
        assert second["rc"] == 0, second
        assert second["resumed"] is True
        assert second["bytes_downloaded"] <= layer["size"] - kept + 64 * 1024
        assert sha256_file(str(dest)) == layer["diff_id" if decompress else "digest"]
        assert not partial.exists()
        assert proxy.bytes_sent(layer["digest"]) == layer["size"] - kept
        # nothing of the killed run is left behind
        assert os.listdir(str(tmp_path)) == ["l"]


@pytest.mark.parametrize("decompress", [False, True])
def test_flipped_byte_caught_and_good_dest_untouched(registry_anonymous, seeded, tmp_path, decompress):
    reg = registry_anonymous
    info = seeded(reg)["docker-simple"]
    layer = info.default["layers"][0]
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("flip", method="GET", path=BLOB_PATH + layer["digest"].split(":")[1], offset=10)
        args = dict(image=info.repository + ":" + info.tag, registry=proxy.url, index=0, retries=1,
                    decompress=decompress)
        fresh = tmp_path / "fresh"
        bad = run_module("docker_registry_layer", dict(args, dest=str(fresh)))
        assert_clean_failure(bad)
        assert "failed verification" in bad["msg"] and layer["digest"] in bad["msg"]
        assert sorted(os.listdir(str(tmp_path))) == []
        good = tmp_path / "good"
        good.write_bytes(info.blobs[layer["digest"]])
        forced = run_module("docker_registry_layer", dict(args, dest=str(good), force=True))
        assert_clean_failure(forced)
        assert sha256_file(str(good)) == layer["digest"]   # untouched
        assert sorted(os.listdir(str(tmp_path))) == ["good"]


def test_shared_layers_downloaded_once_with_cache_dir(fresh_registry, tmp_path):
    from testbed.builder import seed
    reg = fresh_registry("anonymous")
    images = seed(reg, kinds=["docker-simple", "shared-base"])
    store = tmp_path / "store"
    first, second = images["docker-simple"], images["shared-base"]
    for n, layer in enumerate(first.default["layers"]):
        assert run_module("docker_registry_layer", dict(image=first.image(reg.host), index=n, cache_dir=str(store),
                                                        dest=str(tmp_path / ("a%d" % n))))["rc"] == 0
    reg.clear_log()
    shared = set(l["digest"] for l in first.default["layers"])
    new = [l for l in second.default["layers"] if l["digest"] not in shared]
    assert new and len(new) < len(second.default["layers"])
    for n, layer in enumerate(second.default["layers"]):
        result = run_module("docker_registry_layer", dict(image=second.image(reg.host), index=n,
                                                          cache_dir=str(store), dest=str(tmp_path / ("b%d" % n))))
        assert result["rc"] == 0, result
        assert sha256_file(str(tmp_path / ("b%d" % n))) == layer["digest"]
    blob_gets = [r for r in reg.requests() if r["method"] == "GET" and "/blobs/" in r["path"]
                 and second.default["config_digest"] not in r["path"]]
    assert sorted(set(r["path"].rsplit("/", 1)[1] for r in blob_gets)) == sorted(l["digest"] for l in new)
    # dest files are copies, never hard links into the store
    assert os.stat(str(tmp_path / "b0")).st_nlink == 1


def test_offline_from_store_with_registry_stopped(fresh_registry, tmp_path):
    from testbed.builder import seed
    reg = fresh_registry("anonymous")
    info = seed(reg, kinds=["oci-index"])["oci-index"]
    store = str(tmp_path / "store")
    image = info.image(reg.host)
    layers = info.default["layers"]
    for n in range(len(layers)):
        assert run_module("docker_registry_layer", dict(image=image, index=n, cache_dir=store,
                                                        dest=str(tmp_path / ("on%d" % n))))["rc"] == 0
    reg.stop()
    for n, layer in enumerate(layers):
        dest = tmp_path / ("off%d" % n)
        result = run_module("docker_registry_layer", dict(image=image, index=n, cache_dir=store, offline=True,
                                                          decompress=True, dest=str(dest)))
        assert result["rc"] == 0, result
        assert sha256_file(str(dest)) == layer["diff_id"]
        assert result["bytes_downloaded"] == 0
    other = run_module("docker_registry_layer", dict(image=image, index=0, cache_dir=store, offline=True,
                                                     platform="linux/arm64", dest=str(tmp_path / "arm")))
    assert_clean_failure(other)
    assert "missing from the blob store" in other["msg"]
    never = run_module("docker_registry_layer", dict(image=image.replace(info.tag, "other"), index=0,
                                                     cache_dir=store, offline=True, dest=str(tmp_path / "n")))
    assert_clean_failure(never)
    assert "not in the blob store" in never["msg"]


def test_gzip_bomb_flat_memory(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    bomb = seeded(reg, kinds=["gzip-bomb"])["gzip-bomb"]
    position, layer = biggest_layer(bomb)
    dest = tmp_path / "bomb.tar"
    # max_inflation_ratio 0: no ratio bound, to see the memory stay flat over the whole gigabyte
    result = run_module("docker_registry_layer", dict(image=bomb.image(reg.host), index=position, decompress=True,
                                                      dest=str(dest), max_inflation_ratio=0), measure_rss=True)
    assert result["rc"] == 0, result
    assert os.path.getsize(str(dest)) > 200 * 1024 * 1024
    assert result["max_rss_kb"] < 100 * 1024


def test_concurrent_runs_share_store_safely(registry_anonymous, big, tmp_path):
    import threading
    reg = registry_anonymous
    position, layer = biggest_layer(big)
    store = str(tmp_path / "store")
    results = []

    def one(n):
        results.append(run_module("docker_registry_layer", dict(image=big.image(reg.host), index=position,
                                                                cache_dir=store, dest=str(tmp_path / ("c%d" % n)))))
    threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["rc"] for r in results] == [0, 0, 0], results
    for n in range(3):
        assert sha256_file(str(tmp_path / ("c%d" % n))) == layer["digest"]
    assert sum(r["bytes_downloaded"] > layer["size"] // 2 for r in results) == 1
    digest_hex = layer["digest"].split(":")[1]
    assert hashlib.sha256(open(os.path.join(store, "blobs", "sha256", digest_hex), "rb").read()).hexdigest() == \
        digest_hex
