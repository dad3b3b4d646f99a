"""Self-tests of the image builder: deterministic tars/compression, every default kind pushed into real
registries (twice, same digests), pulled content matches, whiteout semantics checked with podman."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid

import pytest
import requests
import zstandard

from testbed import builder
from testbed.builder import (DOCKER_FOREIGN_LAYER, DOCKER_LIST, DOCKER_MANIFEST, IN_TOTO, OCI_EMPTY, OCI_INDEX,
                             OCI_MANIFEST, SCHEMA1_SIGNED, SCHEMA1_UNSIGNED, Entry)
from testbed.proxy import FaultProxy

ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def decompress(data, media_type):
    if media_type.endswith("+zstd"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    if media_type.endswith("gzip"):
        return gzip.decompress(data)  # handles multi-member streams
    return data


def members(tar_bytes):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        return tf.getmembers()


def get_manifest(session, url, repo, ref):
    r = session.get("%s/v2/%s/manifests/%s" % (url, repo, ref), headers={"Accept": ACCEPT})
    assert r.status_code == 200, r.text
    return r


def get_blob(session, url, repo, digest):
    r = session.get("%s/v2/%s/blobs/%s" % (url, repo, digest))
    assert r.status_code == 200, r.text
    return r.content


# ---- pure building blocks ------------------------------------------------------------------------------

def test_tar_is_deterministic_and_normalised():
    files = {"b/z.txt": "z", "a.txt": b"a", "b/link": Entry("b/link", type="symlink", target="z.txt"),
             "run.sh": Entry("run.sh", b"#!/bin/sh\n", mode=0o755)}
    one = builder.make_tar(files)
    two = builder.make_tar(dict(reversed(list(files.items()))))
    assert one == two
    ms = members(one)
    assert [m.name for m in ms] == ["a.txt", "b", "b/link", "b/z.txt", "run.sh"]  # parent dir added, sorted
    assert {m.mtime for m in ms} == {builder.MTIME}
    assert {(m.uid, m.gid) for m in ms} == {(0, 0)}
    assert [m for m in ms if m.name == "run.sh"][0].mode == 0o755
    assert [m for m in ms if m.name == "b/link"][0].linkname == "z.txt"


def test_gzip_is_deterministic_single_and_multi_member():
    data = b"hello world\n" * 5000
    g1 = builder.gzip_bytes(data)
    assert g1 == builder.gzip_bytes(data)
    assert g1[4:8] == b"\0\0\0\0"  # mtime 0
    assert gzip.decompress(g1) == data
    multi = builder.gzip_bytes(data, members=3)
    assert multi.count(b"\x1f\x8b\x08") >= 3
    assert multi != g1
    assert gzip.decompress(multi) == data
    # the first member alone decodes to only a third of the data: it really is several members
    d = __import__("zlib").decompressobj(31)
    assert len(d.decompress(multi)) < len(data)
    assert d.unused_data


def test_zstd_and_uncompressed_layers():
    files = {"x.txt": "x" * 1000}
    z = builder.make_layer(files, compression="zstd", fmt="oci")
    assert z.media_type == builder.OCI_LAYER_ZSTD
    assert z.data[:4] == b"\x28\xb5\x2f\xfd"
    assert sha(decompress(z.data, z.media_type)) == z.diff_id
    u = builder.make_layer(files, compression="none", fmt="oci")
    assert u.media_type == builder.OCI_LAYER_TAR
    assert u.digest == u.diff_id
    with pytest.raises(ValueError):
        builder.make_layer(files, compression="zstd", fmt="docker")


def test_build_image_config_and_manifest_agree():
    l1 = builder.make_layer({"a": "1"})
    l2 = builder.make_layer({"b": "2"})
    img = builder.build_image([l1, l2], platform="linux/arm/v7")
    cfg = img.config
    assert cfg["architecture"] == "arm" and cfg["os"] == "linux" and cfg["variant"] == "v7"
    assert cfg["rootfs"]["diff_ids"] == [l1.diff_id, l2.diff_id]
    assert cfg["created"] == builder.CREATED
    m = img.manifest
    assert m["mediaType"] == DOCKER_MANIFEST
    assert m["config"] == {"mediaType": builder.DOCKER_CONFIG, "size": len(img.config_raw), "digest": img.config_digest}
    assert [l["digest"] for l in m["layers"]] == [l1.digest, l2.digest]
    oci = builder.build_image([l1], fmt="oci", media_type_field=False)
    assert "mediaType" not in oci.manifest and oci.media_type == OCI_MANIFEST


def test_gzip_bomb_is_small_but_inflates():
    obj, extra = builder.build_kind("gzip-bomb", bomb_size=64 * 1024 * 1024)
    bomb = obj.layers[-1]
    assert bomb.size < 200 * 1024
    assert extra["inflated_size"] == bomb.tar_size > 64 * 1024 * 1024
    raw = gzip.decompress(bomb.data)
    assert len(raw) == bomb.tar_size and sha(raw) == bomb.diff_id
    assert members(raw)[0].size == 64 * 1024 * 1024


# ---- against real registries -----------------------------------------------------------------------------

def _check_pulled(reg, infos):
    s = reg.push_session()
    for kind, info in infos.items():
        schema1 = info.media_type in (SCHEMA1_SIGNED, SCHEMA1_UNSIGNED)
        for tag in info.tags:
            r = get_manifest(s, reg.url, info.repository, tag)
            if schema1:
                # distribution stores the payload and re-signs it on every GET: same payload, new signature
                assert builder.schema1_payload(r.content) == builder.schema1_payload(info.raw), kind
                assert r.headers["Content-Type"] == SCHEMA1_SIGNED
                assert builder.verify_schema1_signatures(r.content)
            else:
                assert r.content == info.raw, kind
                assert r.headers["Content-Type"] == info.media_type
            assert r.headers["Docker-Content-Digest"] == info.digest
        for digest, raw in info.manifests.items():
            got = get_manifest(s, reg.url, info.repository, digest).content
            if schema1:
                got, raw = builder.schema1_payload(got), builder.schema1_payload(raw)
            assert got == raw, (kind, digest)
        # every kind has images, artifacts or (an index of only) attestations
        assert info.platforms or info.artifacts or info.extra.get("attestation_digests"), kind
        for plat, p in info.platforms.items():
            if schema1:
                assert p["manifest_digest"] == info.digest and p["media_type"] == info.media_type
                cfg = info.configs[p["config_digest"]]   # made by the conversion: not in the registry
                assert s.head("%s/v2/%s/blobs/%s" % (reg.url, info.repository, p["config_digest"])).status_code == 404
            else:
                m = json.loads(info.manifests[p["manifest_digest"]])
                assert m["config"]["digest"] == p["config_digest"]
                cfg = get_blob(s, reg.url, info.repository, p["config_digest"])
                assert cfg == info.configs[p["config_digest"]]
            cfgj = json.loads(cfg)
            assert builder.platform_str(cfgj) == plat
            assert cfgj["rootfs"]["diff_ids"] == [l["diff_id"] for l in p["layers"]]
            for layer in p["layers"]:
                blob = get_blob(s, reg.url, info.repository, layer["digest"])
                assert sha(blob) == layer["digest"] and len(blob) == layer["size"]
                assert sha(decompress(blob, layer["media_type"])) == layer["diff_id"], (kind, layer)
        for digest, art in info.artifacts.items():
            m = json.loads(info.manifests[digest])
            assert m["config"]["digest"] == art["config_digest"]
            assert get_blob(s, reg.url, info.repository, art["config_digest"]) == info.configs[art["config_digest"]]
            for layer in art["layers"]:
                assert get_blob(s, reg.url, info.repository, layer["digest"]) == info.blobs[layer["digest"]]
        for digest, data in info.blobs.items():
            assert sha(get_blob(s, reg.url, info.repository, digest)) == digest == sha(data)


def test_seed_default_kinds_twice_same_digests(fresh_registry):
    a = fresh_registry("anonymous")
    b = fresh_registry("anonymous")
    first = builder.seed(a)
    builder.build_kind.cache_clear()  # rebuild from scratch: determinism, not caching
    second = builder.seed(b)
    assert set(first) == set(builder.KINDS) == set(second)
    for kind in builder.KINDS:
        assert first[kind].digest == second[kind].digest, kind
        assert first[kind].manifests == second[kind].manifests
        assert first[kind].configs == second[kind].configs
    _check_pulled(a, first)
    _check_pulled(b, second)
    # seeding again into the same registry is idempotent (blobs exist, same manifests)
    again = builder.seed(a, kinds=["docker-simple"])
    assert again["docker-simple"].digest == first["docker-simple"].digest


@pytest.mark.parametrize("mode", ["basic", "token", "mtls"])
def test_seed_through_authenticated_registries(registry_basic, registry_token, registry_mtls, mode):
    reg = {"basic": registry_basic, "token": registry_token, "mtls": registry_mtls}[mode]
    infos = builder.seed(reg, kinds=["docker-simple", "oci-index"], repo_prefix="builder-%s/" % mode)
    _check_pulled(reg, infos)


def test_catalogue_shapes(registry_anonymous):
    infos = builder.seed(registry_anonymous, repo_prefix="shapes/")
    assert infos["docker-simple"].media_type == DOCKER_MANIFEST
    assert len(infos["docker-simple"].default["layers"]) == 3
    assert infos["oci-simple"].media_type == OCI_MANIFEST
    assert b'"mediaType"' not in infos["oci-no-mediatype"].raw.split(b'"config"')[0]

    dl = infos["docker-list"]
    assert dl.media_type == DOCKER_LIST
    assert list(dl.platforms) == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
    assert all(p["media_type"] == DOCKER_MANIFEST for p in dl.platforms.values())

    oi = infos["oci-index"]
    idx = json.loads(oi.raw)
    assert idx["mediaType"] == OCI_INDEX and len(idx["manifests"]) == 4
    att = idx["manifests"][3]
    assert att["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert att["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    assert att["annotations"]["vnd.docker.reference.digest"] == oi.platforms["linux/amd64"]["manifest_digest"]
    assert json.loads(oi.manifests[att["digest"]])["layers"][0]["mediaType"] == IN_TOTO
    assert "unknown/unknown" not in oi.platforms

    ni = infos["nested-index"]
    top = json.loads(ni.raw)
    assert [m["mediaType"] for m in top["manifests"]] == [OCI_INDEX]
    inner = json.loads(ni.manifests[top["manifests"][0]["digest"]])
    assert [builder.platform_str(m["platform"]) for m in inner["manifests"]] == list(ni.platforms)

    assert {l["media_type"] for l in infos["zstd"].default["layers"]} == {builder.OCI_LAYER_ZSTD}
    assert {l["media_type"] for l in infos["uncompressed"].default["layers"]} == {builder.OCI_LAYER_TAR}
    mg = infos["multigzip"].default["layers"][0]
    assert infos["multigzip"].blobs[mg["digest"]].count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") == 3

    assert len(infos["many-layers"].default["layers"]) == 40

    simple = [l["digest"] for l in infos["docker-simple"].default["layers"]]
    shared = [l["digest"] for l in infos["shared-base"].default["layers"]]
    assert shared[:2] == simple[:2] and shared[2] not in simple
    assert infos["shared-base"].digest != infos["docker-simple"].digest


def test_foreign_layer_urls_and_registry_fallback(registry_anonymous):
    url = "http://127.0.0.2:8123/foreign/{digest}.tar.gz"
    info = builder.seed(registry_anonymous, kinds=["foreign"], repo_prefix="foreign-%s/" % uuid.uuid4().hex[:8],
                        foreign_url=url)["foreign"]
    m = json.loads(info.raw)
    fl = m["layers"][0]
    assert fl["mediaType"] == DOCKER_FOREIGN_LAYER
    assert fl["urls"] == [url.format(digest=fl["digest"])] == [info.extra["foreign_url"]]
    # the blob was pushed too, so a client can fall back to the registry
    s = registry_anonymous.session()
    assert get_blob(s, registry_anonymous.url, info.repository, fl["digest"]) == info.extra["foreign_blob"]
    default = builder.build_kind("foreign")[1]
    assert default["foreign_url"].startswith("http://127.0.0.1:9/")


def test_chunked_and_monolithic_uploads(registry_anonymous):
    reg = registry_anonymous
    s = reg.push_session()
    repo = "uploads/" + uuid.uuid4().hex[:8]
    data = bytes(range(256)) * 1000
    reg.clear_log()
    d1 = builder.push_blob(s, reg.url, repo, data, chunked=True, chunk_size=100000)
    assert reg.count("PATCH", r"/v2/%s/blobs/uploads/" % repo) == 3
    assert get_blob(s, reg.url, repo, d1) == data
    data2 = data[::-1]
    d2 = builder.push_blob(s, reg.url, repo, data2)
    assert reg.count("PATCH", r"/v2/%s/blobs/uploads/" % repo) == 3
    assert get_blob(s, reg.url, repo, d2) == data2
    # already present: only a HEAD
    before = reg.count("POST")
    assert builder.push_blob(s, reg.url, repo, data2) == d2
    assert reg.count("POST") == before


def test_custom_image_via_session_and_url(registry_anonymous):
    reg = registry_anonymous
    session = requests.Session()
    layers = [builder.make_layer({"hello.txt": "custom %d" % i}, fmt="oci") for i in range(2)]
    amd = builder.build_image(layers, fmt="oci")
    arm = builder.build_image(layers[:1], platform="linux/arm64/v8", fmt="oci")
    idx = builder.build_index([amd, arm], fmt="oci", annotations={"org.example": "x"})
    digest = builder.push_image(session, reg.url, "custom/image", idx, tags=["t1"])
    assert digest == idx.digest
    info = builder.image_info("custom", "custom/image", ["t1"], idx)
    _check_pulled(reg, {"custom": info})
    infos = builder.seed((session, reg.url), kinds=["uncompressed"], repo_prefix="tuple/")
    assert infos["uncompressed"].repository == "tuple/uncompressed"


def test_opt_in_kinds_small_sizes(registry_anonymous):
    infos = builder.seed(registry_anonymous, kinds=["big", "realistic"], repo_prefix="optin/",
                         big_size=5 * 1024 * 1024, realistic_size=8 * 1024 * 1024)
    big = infos["big"]
    assert len(big.default["layers"]) == 5
    for l in big.default["layers"]:
        # incompressible: gzip does not shrink it
        assert l["size"] > 1024 * 1024
    real = infos["realistic"]
    assert real.built.layers[0].tar_size > real.default["layers"][0]["size"]  # compressible
    assert real.extra["content_bytes"] >= 8 * 1024 * 1024
    _check_pulled(registry_anonymous, infos)
    # deterministic
    assert builder._build_kind("big", big_size=5 * 1024 * 1024)[0].digest == big.digest


def test_unknown_kind_rejected():
    with pytest.raises(ValueError):
        builder.seed("http://127.0.0.1:1", kinds=["nope"])


def _apply_layers(layer_tars):
    """Minimal overlay semantics: returns the set of visible regular files."""
    files = set()
    for raw in layer_tars:
        for m in members(raw):
            d, _sep, base = m.name.rpartition("/")
            prefix = d + "/" if d else ""
            if base == ".wh..wh..opq":
                files = {f for f in files if not f.startswith(prefix)}
            elif base.startswith(".wh."):
                gone = prefix + base[4:]
                files = {f for f in files if f != gone and not f.startswith(gone + "/")}
        for m in members(raw):
            if m.isfile() and not m.name.rpartition("/")[2].startswith(".wh."):
                files.add(m.name)
    return files


def test_whiteout_semantics_documented_and_real(registry_anonymous):
    info = builder.seed(registry_anonymous, kinds=["whiteout"], repo_prefix="wh/")["whiteout"]
    layers = info.default["layers"]
    tars = [gzip.decompress(info.blobs[l["digest"]]) for l in layers]
    names = [m.name for m in members(tars[1])]
    assert "etc/.wh.remove.txt" in names and "opt/data/.wh..wh..opq" in names
    assert _apply_layers(tars) == set(info.extra["visible"])
    assert not set(info.extra["hidden"]) & set(info.extra["visible"])

    # and a real runtime agrees: podman pulls it and exports the container's file system
    ref = info.image(registry_anonymous.host)
    try:
        p = subprocess.run(["podman", "pull", "-q", "--tls-verify=false", ref], capture_output=True, text=True,
                           timeout=300, check=False)
        assert p.returncode == 0, p.stderr
        c = subprocess.run(["podman", "create", ref, "true"], capture_output=True, text=True, timeout=120, check=False)
        assert c.returncode == 0, c.stderr
        cid = c.stdout.strip()
        try:
            exp = subprocess.run(["podman", "export", cid], capture_output=True, timeout=120, check=False)
            assert exp.returncode == 0, exp.stderr
        finally:
            subprocess.run(["podman", "rm", "-f", cid], capture_output=True, timeout=120, check=False)
    finally:
        subprocess.run(["podman", "rmi", "-f", ref], capture_output=True, timeout=120, check=False)
    visible = {m.name for m in members(exp.stdout) if m.isfile()}
    assert visible == set(info.extra["visible"])


def test_gzip_bomb_default_size_pushes_small_blob(registry_anonymous):
    info = builder.seed(registry_anonymous, kinds=["gzip-bomb"], repo_prefix="bomb/")["gzip-bomb"]
    bomb = info.default["layers"][-1]
    assert bomb["size"] < 2 * 1024 * 1024
    assert info.extra["inflated_size"] > 1024 * 1024 * 1024
    blob = get_blob(registry_anonymous.session(), registry_anonymous.url, info.repository, bomb["digest"])
    assert sha(blob) == bomb["digest"]
    d = __import__("zlib").decompressobj(31)
    head = d.decompress(blob[:65536], 2 * 1024 * 1024)
    assert len(head) == 2 * 1024 * 1024 and head[512:] == bytes(len(head) - 512)


# ---- issue 14: everything a registry can serve ------------------------------------------------------------

NEW_KINDS = ["index-no-platform", "index-attestations-only", "index-annotated", "artifact-empty-config",
             "artifact-custom-config", "repeated-layer", "schema1", "schema1-unsigned", "referrers"]


def test_issue14_kinds_are_default_kinds():
    assert set(NEW_KINDS) <= set(builder.KINDS)


def test_issue14_shapes(registry_anonymous, seeded):
    infos = seeded(registry_anonymous)

    npf = infos["index-no-platform"]
    idx = json.loads(npf.raw)
    assert [("platform" in m) for m in idx["manifests"]] == [False, False]
    assert list(npf.platforms) == npf.extra["platforms"] == ["linux/amd64", "linux/arm64/v8"]   # from the configs
    assert [m["digest"] for m in idx["manifests"]] == [p["manifest_digest"] for p in npf.platforms.values()]

    att = infos["index-attestations-only"]
    idx = json.loads(att.raw)
    assert att.platforms == {} and att.default is None
    assert [m["digest"] for m in idx["manifests"]] == att.extra["attestation_digests"]
    for entry, subject in zip(idx["manifests"], att.extra["subject_digests"]):
        assert entry["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert entry["annotations"]["vnd.docker.reference.digest"] == subject
        assert subject in att.manifests   # pushed by digest, outside the index

    ann = infos["index-annotated"]
    idx = json.loads(ann.raw)
    assert idx["annotations"] == ann.extra["annotations"] and idx["artifactType"] == ann.extra["artifact_type"]
    assert "&" in idx["annotations"]["org.opencontainers.image.description"]
    assert len(idx["manifests"]) == 3 and list(ann.platforms) == ["linux/amd64", "linux/arm64/v8"]
    assert idx["manifests"][2]["digest"] == ann.extra["attestation_digest"]

    art = infos["artifact-empty-config"]
    m = json.loads(art.raw)
    assert m["artifactType"] == art.extra["artifact_type"] and art.platforms == {}
    assert m["config"] == {"mediaType": OCI_EMPTY, "size": 2, "data": "e30=",
                           "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    assert art.configs[m["config"]["digest"]] == b"{}"
    assert [l["mediaType"] for l in m["layers"]] == ["application/spdx+json", "text/plain"]
    assert [l["annotations"]["org.opencontainers.image.title"] for l in m["layers"]] == ["sbom.spdx.json", "readme.txt"]
    a = art.artifacts[art.digest]
    assert a["artifact_type"] == art.extra["artifact_type"] and a["subject"] is None
    assert [l["diff_id"] for l in a["layers"]] == [None, None]
    assert json.loads(art.blobs[m["layers"][0]["digest"]])["spdxVersion"] == "SPDX-2.3"

    helm = infos["artifact-custom-config"]
    m = json.loads(helm.raw)
    assert "artifactType" not in m and m["config"]["mediaType"] == helm.extra["artifact_type"]
    assert helm.artifacts[helm.digest]["artifact_type"] == builder.HELM_CONFIG
    chart = helm.blobs[m["layers"][0]["digest"]]
    assert sha(gzip.decompress(chart)) == helm.extra["uncompressed_digest"]
    assert [x.name for x in members(gzip.decompress(chart))] == ["testbed", "testbed/Chart.yaml", "testbed/values.yaml"]

    rep = infos["repeated-layer"]
    layers = rep.default["layers"]
    digests = [l["digest"] for l in layers]
    assert len(digests) == 5 and len(set(digests)) == rep.extra["distinct"] == 3
    assert digests[0] == digests[2] and digests[1] == digests[4]
    assert json.loads(rep.configs[rep.default["config_digest"]])["rootfs"]["diff_ids"] == [l["diff_id"] for l in layers]

    for kind, media_type in (("schema1", SCHEMA1_SIGNED), ("schema1-unsigned", SCHEMA1_UNSIGNED)):
        info = infos[kind]
        assert info.media_type == media_type
        assert info.digest == sha(info.extra["payload"].encode()) == builder.schema1_digest(info.raw)
        doc = json.loads(info.raw)
        assert doc["schemaVersion"] == 1 and [l["blobSum"] for l in doc["fsLayers"]] == info.extra["fs_layers"]
        assert ("signatures" in doc) is (kind == "schema1")
        throwaway = [json.loads(h["v1Compatibility"]).get("throwaway", False) for h in doc["history"]]
        assert throwaway == info.extra["throwaway"] == [True, False, True, False]
        assert info.extra["fs_layers"][0] == info.extra["fs_layers"][2] == builder.EMPTY_GZIP_TAR_DIGEST
        assert sha(builder.EMPTY_GZIP_TAR) == builder.EMPTY_GZIP_TAR_DIGEST
        assert gzip.decompress(builder.EMPTY_GZIP_TAR) == bytes(1024)
        # schema 2 order: base first, throwaway entries gone
        assert [l["digest"] for l in info.default["layers"]] == [info.extra["fs_layers"][3], info.extra["fs_layers"][1]]
        assert info.default["media_type"] == media_type and info.default["manifest_digest"] == info.digest
    signed = json.loads(infos["schema1"].raw)
    protected = json.loads(builder._b64url_decode(signed["signatures"][0]["protected"]))
    assert set(protected) == {"formatLength", "formatTail", "time"}
    assert builder.verify_schema1_signatures(infos["schema1"].raw)

    ref = infos["referrers"]
    assert ref.extra["referrers_tag"] == "sha256-" + ref.digest.split(":")[1]
    fallback = json.loads(ref.manifests[ref.extra["referrers_index_digest"]])
    assert fallback["mediaType"] == OCI_INDEX and fallback["manifests"] == ref.extra["referrers"]
    assert [d["artifactType"] for d in fallback["manifests"]] == [builder.COSIGN_SIG, "application/spdx+json"]
    for d in fallback["manifests"]:
        manifest = json.loads(ref.manifests[d["digest"]])
        assert ref.artifacts[d["digest"]]["subject"] == ref.digest == manifest["subject"]["digest"]
        assert d["annotations"] == json.loads(ref.manifests[d["digest"]])["annotations"]


def test_issue14_registry_behaviour(registry_anonymous, seeded):
    """What the test bed's registry (distribution 2.8) does with these kinds, that clients must cope with."""
    reg = registry_anonymous
    infos = seeded(reg)
    s = reg.session()
    assert reg.config()["compatibility"] == {"schema1": {"enabled": True}}
    info = infos["schema1"]
    one = get_manifest(s, reg.url, info.repository, "v1")
    two = get_manifest(s, reg.url, info.repository, info.digest)
    assert one.content != two.content != info.raw   # re-signed by the registry on every GET
    payload = info.extra["payload"].encode()
    assert builder.schema1_payload(one.content) == builder.schema1_payload(two.content) == payload
    assert builder.verify_schema1_signatures(one.content) != builder.verify_schema1_signatures(info.raw)
    # no referrers API: the tag schema fallback is how referrers are found
    ref = infos["referrers"]
    r = s.get("%s/v2/%s/referrers/%s" % (reg.url, ref.repository, ref.digest), headers={"Accept": OCI_INDEX})
    assert r.status_code == 404
    r = get_manifest(s, reg.url, ref.repository, ref.extra["referrers_tag"])
    assert r.content == ref.manifests[ref.extra["referrers_index_digest"]]
    assert r.headers["Docker-Content-Digest"] == ref.extra["referrers_index_digest"]


def _skopeo(*args):
    return subprocess.run(["skopeo"] + list(args), capture_output=True, timeout=300, check=False)


def test_issue14_skopeo_agrees(registry_anonymous, seeded):
    reg = registry_anonymous
    infos = seeded(reg)
    for kind in NEW_KINDS:
        info = infos[kind]
        proxy = FaultProxy(reg.url)
        with proxy:
            host = reg.host
            if kind == "schema1-unsigned":
                builder.serve_manifest(proxy, info)
                host = proxy.url.split("//", 1)[1]
            ref = "docker://%s/%s:%s" % (host, info.repository, info.tag)
            raw = _skopeo("inspect", "--raw", "--tls-verify=false", ref)
            assert raw.returncode == 0, raw.stderr
            if kind == "schema1":
                assert builder.schema1_payload(raw.stdout) == builder.schema1_payload(info.raw)
            else:
                assert raw.stdout == info.raw, kind
            inspect = _skopeo("inspect", "--tls-verify=false", ref)
            if kind.startswith("artifact") or kind == "index-attestations-only":
                # skopeo 1.9 inspects images only
                assert inspect.returncode != 0, kind
                continue
            assert inspect.returncode == 0, (kind, inspect.stderr)
            data = json.loads(inspect.stdout)
            assert data["Digest"] == info.digest, kind
            assert data["Architecture"] == "amd64" and data["Os"] == "linux"
            if kind.startswith("schema1"):   # skopeo lists schema 1 layers top first, throwaway ones included
                assert data["Layers"] == list(reversed(info.extra["fs_layers"]))
            else:
                assert data["Layers"] == [l["digest"] for l in info.default["layers"]], kind
        if kind == "schema1-unsigned":
            assert proxy.count("GET", r"/manifests/") >= 1


def test_issue14_seed_twice_same_bytes(fresh_registry):
    builder.build_kind.cache_clear()
    first = {k: builder.build_kind(k) for k in NEW_KINDS}
    builder.build_kind.cache_clear()
    for kind in NEW_KINDS:
        (a, ea), (b, eb) = first[kind], builder.build_kind(kind)
        assert a.digest == b.digest and a.manifest_raw == b.manifest_raw, kind   # schema 1 signing is RFC 6979
        configs = [builder.image_info(kind, "r", ["v1"], x, e).configs for x, e in ((a, ea), (b, eb))]
        assert configs[0] == configs[1], kind


def test_cli_seeds_issue14_kinds(tmp_path):
    import sys
    import yaml
    cli = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli.py")
    state, config = str(tmp_path / "state.json"), str(tmp_path / "integration_config.yml")
    common = ["--state", state, "--config", config]
    kinds = "schema1,referrers,artifact-empty-config,index-no-platform"
    try:
        r = subprocess.run([sys.executable, cli, "up", "--modes", "anonymous", "--seed", "--kinds", kinds] + common,
                           capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0, r.stderr
        with open(state) as f:
            images = json.load(f)["registries"]["anonymous"]["images"]
        assert sorted(images) == sorted(kinds.split(","))
        assert images["referrers"]["extra"]["referrers_tag"].startswith("sha256-")
        assert images["artifact-empty-config"]["artifacts"]
        with open(config) as f:
            cfg = yaml.safe_load(f)
        assert cfg["hocker_registry_anonymous_image_schema1_digest"] == images["schema1"]["digest"]
        assert cfg["hocker_registry_anonymous_image_schema1_media_type"] == SCHEMA1_SIGNED
    finally:
        subprocess.run([sys.executable, cli, "down"] + common, capture_output=True, timeout=300, check=False)
