"""Issue 14, what a real registry in the test bed cannot show: which requests the client makes for index
entries without platform (configs read only when needed), the referrers API with pagination and its
fallbacks, schema 1 through parse_manifest and its conversion, the content tree kept byte for byte, and the
layout plan of registry content kept as it is.

The client talks to a fake transport: a dict of canned answers by (method, path).
"""
import hashlib
import json
import os
import tarfile
import types

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import kept, layout, schema1image, tarwriter
from ansible_collections.hocker.registry.plugins.module_utils._registry import manifest as mt
from ansible_collections.hocker.registry.plugins.module_utils._registry.client import RegistryClient
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, ManifestError, OfflineError, PlatformError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.pipeline import unique_layers
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import parse_platform
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "schema1")
BASE = "http://reg.test"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------------------
# a fake registry
# ---------------------------------------------------------------------------------------------------------
class FakeResponse:
    def __init__(self, method, url, status, body=b"", headers=None):
        self.status_code = status
        self.body = body
        self.headers = dict(headers or {})
        self.url = url
        self.request = types.SimpleNamespace(method=method)
        self.tries = 1

    def iter_content(self, _size):
        yield self.body

    def close(self):
        pass


class FakeTransport:
    retries = 0

    def __init__(self):
        self.routes = {}
        self.seen = []
        self.counts = {}
        self.bytes_downloaded = 0

    def add(self, path, body, media_type=None, status=200, headers=None, method="GET"):
        headers = dict(headers or {})
        if media_type:
            headers["Content-Type"] = media_type
        self.routes[(method, path)] = (status, body, headers)

    def request(self, method, url, headers=None, stream=True, auth_origin=None, retry=True):
        path = url[len(BASE):]
        self.seen.append((method, path))
        status, body, answer = self.routes.get((method, path), (404, b'{"errors":[{"code":"NOT_FOUND"}]}', {}))
        return FakeResponse(method, url, status, body if method != "HEAD" else b"", answer)

    def read_body(self, response, _limit, _what):
        return response.body

    def add_downloaded(self, count):
        self.bytes_downloaded += count

    def close(self):
        pass

    def gets(self, fragment):
        return sum(1 for method, path in self.seen if method == "GET" and fragment in path)


class Registry:
    """Canned content of one repository, ``app``."""

    def __init__(self):
        self.transport = FakeTransport()

    def client(self, ref="app:v1", **kw):
        return RegistryClient(parse_reference(ref, registry=BASE), transport=self.transport, **kw)

    def blob(self, data, media_type="application/octet-stream"):
        self.transport.add("/v2/app/blobs/" + sha(data), data)
        return {"mediaType": media_type, "digest": sha(data), "size": len(data)}

    def manifest(self, obj, media_type, tag=None):
        raw = json.dumps(obj, indent=2).encode()
        for ref in [sha(raw)] + ([tag] if tag else []):
            self.transport.add("/v2/app/manifests/" + ref, raw, media_type, headers={"Docker-Content-Digest": sha(raw)})
        return {"mediaType": media_type, "digest": sha(raw), "size": len(raw)}

    def image(self, platform, layers=(b"layer",), config_extra=None):
        os_name, arch, *variant = platform.split("/")
        cfg = {"os": os_name, "architecture": arch, "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}
        if variant:
            cfg["variant"] = variant[0]
        cfg.update(config_extra or {})
        config = self.blob(canonical(cfg), mt.OCI_CONFIG)
        descs = [self.blob(x, mt.OCI_LAYER) for x in layers]
        return self.manifest({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": descs},
                             mt.OCI_MANIFEST)

    def index(self, entries, tag="v1", **extra):
        return self.manifest(dict({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}, **extra),
                             mt.OCI_INDEX, tag)


def placed(descriptor, platform):
    os_name, arch, *variant = platform.split("/")
    entry = dict(descriptor, platform={"os": os_name, "architecture": arch})
    if variant:
        entry["platform"]["variant"] = variant[0]
    return entry


@pytest.fixture
def reg():
    return Registry()


# ---------------------------------------------------------------------------------------------------------
# index entries without platform
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def unplaced(reg):
    amd, arm = reg.image("linux/amd64", [b"a"]), reg.image("linux/arm64/v8", [b"b"])
    reg.index([amd, arm])
    return reg, amd, arm


def config_gets(reg):
    return reg.transport.gets("/blobs/")


def test_unplaced_entries_stop_at_the_first_exact_match(unplaced):
    reg, amd, _arm = unplaced
    resolved = reg.client().resolve(parse_platform("linux/amd64"))
    assert resolved.manifest_digest == amd["digest"] and resolved.platform == "linux/amd64"
    assert config_gets(reg) == 1                      # the arm64 entry's config was not needed
    assert resolved.config_bytes is not None          # the probed config is reused, not fetched again
    assert reg.transport.gets("/manifests/" + amd["digest"]) == 1


def test_unplaced_entries_read_until_a_match(unplaced):
    reg, _amd, arm = unplaced
    resolved = reg.client().resolve(parse_platform("linux/arm64"))
    assert resolved.manifest_digest == arm["digest"] and resolved.platform == "linux/arm64/v8"
    assert config_gets(reg) == 2


def test_unplaced_entries_all_read_to_list_platforms(unplaced):
    reg, amd, _arm = unplaced
    resolved = reg.client().resolve(parse_platform("linux/amd64"), list_platforms=True)
    assert resolved.manifest_digest == amd["digest"]
    assert resolved.platforms == ["linux/amd64", "linux/arm64/v8"]


def test_unplaced_entries_no_match_lists_what_the_configs_say(unplaced):
    reg = unplaced[0]
    with pytest.raises(PlatformError, match="linux/amd64, linux/arm64/v8"):
        reg.client().resolve(parse_platform("linux/s390x"))


def test_a_placed_match_needs_no_config(reg):
    amd, arm = reg.image("linux/amd64"), reg.image("linux/arm64/v8", [b"other"])
    reg.index([placed(amd, "linux/amd64"), arm])
    resolved = reg.client().resolve(parse_platform("linux/amd64"))
    assert resolved.manifest_digest == amd["digest"]
    assert config_gets(reg) == 0 and reg.transport.gets("/manifests/" + arm["digest"]) == 0
    # a platform only the unplaced entry has: its config says so
    assert reg.client().resolve(parse_platform("linux/arm64")).manifest_digest == arm["digest"]


def test_attestations_and_artifacts_are_no_platforms(reg):
    att = reg.image("unknown/unknown", [b"statement"])
    art = reg.manifest({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/x-test",
                        "config": reg.blob(b"{}", "application/vnd.oci.empty.v1+json"),
                        "layers": [reg.blob(b"sbom")]}, mt.OCI_MANIFEST)
    reg.index([dict(att, annotations={"vnd.docker.reference.type": "attestation-manifest"}),
               dict(art, artifactType="application/x-test")])
    for check in (True, False):
        with pytest.raises(PlatformError, match="no platforms"):
            reg.client().resolve(parse_platform("linux/amd64"), check_config=check)
    assert reg.transport.gets("/manifests/sha256:") == 0   # nothing below the index was needed


def test_an_unplaced_artifact_without_artifact_type_has_no_platform(reg):
    art = reg.manifest({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                        "config": reg.blob(b'{"name": "chart"}', "application/vnd.cncf.helm.config.v1+json"),
                        "layers": []}, mt.OCI_MANIFEST)
    amd = reg.image("linux/amd64")
    reg.index([art, amd])
    resolved = reg.client().resolve(parse_platform("linux/amd64"), list_platforms=True)
    assert resolved.manifest_digest == amd["digest"] and resolved.platforms == ["linux/amd64"]
    assert reg.transport.gets("/blobs/") == 1   # the artifact's config is never read


def test_resolve_all_includes_unplaced_entries(unplaced):
    reg, amd, arm = unplaced
    top, images = reg.client().resolve_all()
    assert top.is_index
    assert [(p, m.digest) for p, m in images] == [("linux/amd64", amd["digest"]), ("linux/arm64/v8", arm["digest"])]


# ---------------------------------------------------------------------------------------------------------
# referrers
# ---------------------------------------------------------------------------------------------------------
SUBJECT = "sha256:" + "ab" * 32


def referrer(n):
    return {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:%064x" % n, "size": 100 + n,
            "artifactType": "application/x-sig"}


def test_referrers_api_pages(reg):
    first = "/v2/app/referrers/" + SUBJECT
    reg.transport.add(first, canonical({"schemaVersion": 2, "manifests": [referrer(1)]}), mt.OCI_INDEX,
                      headers={"Link": '<%s?last=1>; rel="next"' % first})
    reg.transport.add(first + "?last=1", canonical({"schemaVersion": 2, "manifests": [referrer(2)]}), mt.OCI_INDEX)
    assert reg.client().referrers(SUBJECT) == [referrer(1), referrer(2)]
    assert reg.transport.gets("/manifests/") == 0


@pytest.mark.parametrize("status", [404, 400, 405])
def test_referrers_tag_schema_when_the_api_is_missing(reg, status):
    reg.transport.add("/v2/app/referrers/" + SUBJECT, b"", status=status)
    reg.manifest({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [referrer(3)]}, mt.OCI_INDEX,
                 tag="sha256-" + "ab" * 32)
    assert reg.client().referrers(SUBJECT) == [referrer(3)]


def test_no_referrers(reg):
    assert reg.client().referrers(SUBJECT) == []   # neither the API nor the tag


def test_referrers_tag_must_be_an_index(reg):
    image = reg.image("linux/amd64", [b"x"])
    reg.transport.routes[("GET", "/v2/app/manifests/sha256-" + "ab" * 32)] = \
        reg.transport.routes[("GET", "/v2/app/manifests/" + image["digest"])]
    with pytest.raises(ManifestError, match="not an index"):
        reg.client().referrers(SUBJECT)


def test_referrers_entries_are_validated(reg):
    reg.transport.add("/v2/app/referrers/" + SUBJECT, canonical({"manifests": [{"digest": "../x", "size": 1}]}))
    with pytest.raises(ManifestError, match="referrer 0"):
        reg.client().referrers(SUBJECT)


def test_referrers_offline(reg, tmp_path):
    from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore
    with pytest.raises(OfflineError, match="referrers"):
        reg.client(store=BlobStore(str(tmp_path / "store")), offline=True).referrers(SUBJECT)


# ---------------------------------------------------------------------------------------------------------
# schema 1
# ---------------------------------------------------------------------------------------------------------
def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("case", ["signed", "unsigned", "legacy"])
def test_parse_manifest_reads_schema1(case):
    meta = json.loads(fixture(case + ".meta.json"))
    served = fixture(case + (".served.json" if case != "unsigned" else ".json"))
    manifest = mt.parse_manifest(served, meta["media_type"], meta["digest"])
    assert manifest.is_schema1 and not manifest.is_index and not manifest.is_artifact
    assert manifest.digest == meta["digest"] and manifest.raw == served
    assert manifest.data == json.loads(served)            # as served, signatures included
    assert [d["digest"] for d in manifest.layers] == meta["layers"]
    assert manifest.config == {}
    stored = manifest.descriptor()
    assert sha(manifest.stored_bytes) == stored["digest"] == meta["digest"]
    assert stored["size"] == len(manifest.stored_bytes)
    again = mt.parse_manifest(manifest.stored_bytes, stored["mediaType"], meta["digest"])
    assert again.digest == meta["digest"] and again.layers == manifest.layers


def test_parse_manifest_schema1_digest_and_damage():
    meta = json.loads(fixture("signed.meta.json"))
    served = fixture("signed.served.json")
    with pytest.raises(DigestMismatch):
        mt.parse_manifest(served, None, "sha256:" + "0" * 64)
    with pytest.raises(ManifestError, match="schema 1"):
        mt.parse_manifest(served.replace(b'"fsLayers"', b'"fsLayerz"'), None)
    assert mt.parse_manifest(served, None, meta["digest"]).digest == meta["digest"]   # shape alone
    with pytest.raises(DigestMismatch):   # "signatures" in a schema 2 manifest does not excuse a mismatch
        mt.parse_manifest(canonical({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [],
                                     "annotations": {"signatures": "x"}}), None, "sha256:" + "0" * 64)


@pytest.mark.parametrize("case", ["signed", "unsigned", "legacy"])
def test_schema1_converted_like_skopeo(case):
    meta = json.loads(fixture(case + ".meta.json"))
    manifest = mt.parse_manifest(fixture(case + ".json"), None, meta["digest"])
    facts = dict((digest, (diff_id, size))
                 for digest, diff_id, size in zip(meta["layers"], meta["diff_ids"], meta["sizes"]))
    converted = schema1image.converted(manifest, facts)
    assert converted.config == fixture(case + ".config.json").rstrip(b"\n")
    assert converted.manifest.raw == fixture(case + ".schema2.json").rstrip(b"\n")
    assert converted.config_digest == converted.manifest.config["digest"]
    assert [(d["digest"], d["size"], diff_id) for d, diff_id in converted.pairs] == list(
        zip(meta["layers"], meta["sizes"], meta["diff_ids"]))
    with pytest.raises(ManifestError, match="not fetched"):
        schema1image.converted(manifest, {})


def test_resolve_schema1_names_its_platform_without_a_config(reg):
    served = fixture("signed.served.json")
    reg.transport.add("/v2/app/manifests/v1", served, mt.DOCKER_SCHEMA1[1])
    warnings = []
    client = reg.client(warn=warnings.append)
    resolved = client.resolve(parse_platform("linux/amd64"))
    assert resolved.platform == "linux/amd64" and resolved.config_digest is None
    assert reg.transport.gets("/blobs/") == 0
    assert any("schema 1" in w and "deprecated" in w for w in warnings)
    with pytest.raises(PlatformError, match="linux/amd64 only"):
        reg.client().resolve(parse_platform("linux/arm64"))


def test_unique_layers_without_diff_ids():
    a, b = {"digest": "sha256:" + "a" * 64}, {"digest": "sha256:" + "b" * 64}
    unique, same = unique_layers([(a, None), (b, None), (a, None)], True)
    assert sorted(unique) == [a["digest"], b["digest"]] and same == {}


# ---------------------------------------------------------------------------------------------------------
# content kept byte for byte
# ---------------------------------------------------------------------------------------------------------
def test_artifact_detection():
    def manifest(config_type, artifact_type=None, media_type=mt.OCI_MANIFEST):
        data = {"schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": config_type, "digest": sha(b"{}"), "size": 2}, "layers": []}
        if artifact_type:
            data["artifactType"] = artifact_type
        return mt.parse_manifest(canonical(data), media_type)

    assert not manifest(mt.OCI_CONFIG).is_artifact
    assert not manifest(mt.OCI_CONFIG, "application/x-image-like").is_artifact   # containers/image's rule
    assert not manifest(mt.DOCKER_CONFIG, media_type=mt.DOCKER_MANIFEST).is_artifact
    empty = manifest("application/vnd.oci.empty.v1+json", "application/x-report")
    assert empty.is_artifact and empty.artifact_type == "application/x-report"
    helm = manifest("application/vnd.cncf.helm.config.v1+json")
    assert helm.is_artifact and helm.artifact_type == "application/vnd.cncf.helm.config.v1+json"


def test_tree_keeps_everything_below_an_index(reg):
    amd = reg.image("linux/amd64", [b"a", b"b", b"a"])
    att = reg.image("unknown/unknown", [b"statement"])
    empty = reg.blob(b"{}", "application/vnd.oci.empty.v1+json")
    art = reg.manifest({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/x-sbom",
                        "config": empty, "layers": [reg.blob(b"sbom"), empty]}, mt.OCI_MANIFEST)
    nested = reg.manifest({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [art]}, mt.OCI_INDEX)
    top = reg.index([dict(att, annotations={"vnd.docker.reference.type": "attestation-manifest"}),
                     placed(amd, "linux/amd64"), nested], artifactType="application/x-bundle")
    client = reg.client()
    tree = kept.walk(client, client.get_manifest())
    assert tree.first_image.digest == amd["digest"]    # not the attestation, listed first
    assert [m.digest for m in tree.manifests] == [top["digest"], att["digest"], amd["digest"], nested["digest"],
                                                  art["digest"]]
    assert config_gets(reg) == 0                       # walking fetches manifests only
    layer_digests = [d["digest"] for d in tree.layer_blobs()]
    assert layer_digests == [sha(b"statement"), sha(b"a"), sha(b"b"), sha(b"sbom")]   # each once, no config
    configs = kept.fetch_configs(client, tree)
    report = tree.layer_report(configs)
    assert [(r["digest"], r["diff_id"]) for r in report] == [
        (sha(b"statement"), sha(b"statement")), (sha(b"a"), sha(b"a")), (sha(b"b"), sha(b"b")), (sha(b"a"), sha(b"a")),
        (sha(b"sbom"), None), (empty["digest"], None)]
    assert tree.top_descriptor() == dict(top, artifactType="application/x-bundle")
    assert [r["diff_id"] for r in tree.layer_report()] == [None] * 6    # check mode: no configs


def test_tree_refuses_schema1_below_an_index(reg):
    served = fixture("unsigned.json")
    reg.transport.add("/v2/app/manifests/" + sha(served), served, mt.DOCKER_SCHEMA1[0])
    reg.index([{"mediaType": mt.DOCKER_SCHEMA1[0], "digest": sha(served), "size": len(served)}])
    client = reg.client()
    with pytest.raises(ManifestError, match="schema 1"):
        kept.walk(client, client.get_manifest())


def copy_content(tmp_path):
    layer = b"not a tar at all"
    path = tmp_path / "blob"
    path.write_bytes(layer)
    config = b"{}"
    manifest = canonical({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/x-t",
                          "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(config),
                                     "size": 2},
                          "layers": [{"mediaType": "text/plain", "digest": sha(layer), "size": len(layer)}]})
    index = canonical({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "annotations": {"a": "b"},
                       "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest)}]})
    top = {"mediaType": mt.OCI_INDEX, "digest": sha(index), "size": len(index)}
    blobs = [layout.Layer(sha(layer), None, len(layer), "text/plain", str(path))]
    return layout.Copy(top, [(sha(index), index), (sha(manifest), manifest), (sha(config), config)], blobs), index


@pytest.mark.parametrize("fmt", ["oci-archive", "oci-dir"])
def test_copy_layout_keeps_the_registry_index(tmp_path, fmt):
    content, index = copy_content(tmp_path)
    dest = str(tmp_path / "out")
    result = tarwriter.write_archive(dest, content, format=fmt, layers="uncompressed", repo_tags=["reg.test/app:v1"],
                                     origin={"inputs": {}})
    assert result["index_digest"] == sha(index)
    if fmt == "oci-archive":
        with tarfile.open(dest) as tar:
            files = dict((m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile())
    else:
        files = {}
        for root, _dirs, names in os.walk(dest):
            for name in names:
                with open(os.path.join(root, name), "rb") as handle:
                    files[os.path.relpath(os.path.join(root, name), dest)] = handle.read()
    blobs = dict((name, data) for name, data in files.items() if name.startswith("blobs/"))
    assert all(sha(data) == "sha256:" + name.rsplit("/", 1)[1] for name, data in blobs.items())
    assert len(blobs) == 4 and files["blobs/sha256/" + sha(index)[7:]] == index
    entries = json.loads(files["index.json"])["manifests"]
    assert [(e["digest"], e["mediaType"], e["annotations"]["org.opencontainers.image.ref.name"]) for e in entries] \
        == [(sha(index), mt.OCI_INDEX, "v1")]


def test_copy_layout_refusals(tmp_path):
    content, _index = copy_content(tmp_path)
    with pytest.raises(layout.ArchiveError, match="oci-archive or oci-dir"):
        layout.plan(content, format="docker-archive")
    with pytest.raises(layout.ArchiveError, match="does not match"):
        layout.Copy(content.top, [(content.top["digest"], b"{}")], [])
    with pytest.raises(layout.ArchiveError, match="not part of"):
        layout.Copy(content.top, content.metadata[1:], [])


def test_copy_can_be_placed(tmp_path):
    from ansible_collections.hocker.registry.plugins.module_utils._registry import placed as placed_archive
    content, _index = copy_content(tmp_path)
    assert placed_archive.can_place(content, "oci-archive", "uncompressed")
    assert not placed_archive.can_place(content, "oci-dir", "compressed")
    archive = placed_archive.open_placed(str(tmp_path / "placed.tar"), content, format="oci-archive",
                                         layers="uncompressed", workdir=str(tmp_path))
    sink = archive.writer(content.layers[0].digest)
    with open(content.layers[0].path, "rb") as handle:
        sink.write(handle.read())
    sink.close()
    assert archive.finish()["rewritten"] is False
    tarwriter.write_archive(str(tmp_path / "written.tar"), content, format="oci-archive")
    assert (tmp_path / "placed.tar").read_bytes() == (tmp_path / "written.tar").read_bytes()
