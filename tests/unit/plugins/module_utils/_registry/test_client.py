"""The client and the download chain against an in-process registry (testbed.fakeregistry), with the test
bed's fault proxy in front where the network has to misbehave."""
import gzip
import hashlib
import json
import os
import random
import threading

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import download
from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.client import RegistryClient
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    AuthenticationError, DigestMismatch, ManifestError, NotFound, TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import Unpacker
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore
from testbed.fakeregistry import FakeRegistry, digest_of
from testbed.proxy import FaultProxy

REPO = "team/app"
DEEP = b"[" * 20000 + b"]" * 20000


def image(reg, size=300000):
    """A small OCI image on ``reg``: (manifest digest, layer bytes, layer digest)."""
    layer = gzip.compress(random.Random(7).randbytes(size), mtime=0)
    layer_digest = reg.add_blob(REPO, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(gzip.decompress(layer))]}}).encode()
    config_digest = reg.add_blob(REPO, config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                            "size": len(layer)}]}
    return reg.add_manifest(REPO, "v1", manifest), layer, layer_digest


@pytest.fixture
def fake():
    with FakeRegistry() as reg:
        yield reg


def client_for(url, store=None, credentials=None, retries=2, warnings=None):
    ref = parse_reference(REPO + ":v1", registry=url)
    return RegistryClient(ref, credentials=credentials, store=store, retries=retries,
                          warn=(warnings.append if warnings is not None else None), timeout=5)


def no_sleep(client):
    client.transport.sleep = lambda seconds: None
    return client


# ------------------------------------------------------------------------------------------ hostile answers
@pytest.mark.parametrize("status", [200, 401, 404, 500])
def test_deeply_nested_json_is_a_clean_error(fake, status):
    fake.answer("GET", "/manifests/", status=status, body=DEEP, headers={"Content-Type": "application/json"})
    client = no_sleep(client_for(fake.url, retries=0))
    with pytest.raises((ManifestError, NotFound, AuthenticationError, TransportError)) as exc:
        client.get_manifest()
    assert "Recursion" not in str(exc.value)


def test_token_answer_nested_or_not_an_object(fake):
    image(fake)
    fake.challenge()
    for body in (DEEP, b'["token"]', b"not json"):
        fake.token(body)
        with pytest.raises(AuthenticationError) as exc:
            client_for(fake.url).get_manifest()
        assert "token service" in str(exc.value)


def test_annotations_of_the_wrong_type_in_the_store_index(tmp_path):
    store = BlobStore(str(tmp_path / "store"))
    with open(os.path.join(store.path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"annotations": ["x"]}, {"annotations": "y"}, 3]}, f)
    assert store.lookup_image("registry/app:v1") is None
    store.record_image("registry/app:v1", {"mediaType": "m", "digest": "sha256:" + "a" * 64, "size": 1})
    assert store.lookup_image("registry/app:v1")["digest"] == "sha256:" + "a" * 64


def test_damaged_store_index_is_rebuilt_from_the_blobs(fake, tmp_path):
    digest, _layer, _ld = image(fake)
    warnings = []
    store = BlobStore(str(tmp_path / "store"), warn=warnings.append)
    client_for(fake.url, store=store).get_manifest()
    with open(os.path.join(store.path, "index.json"), "wb") as f:
        f.write(DEEP)
    index = store.read_index()
    assert [m["digest"] for m in index["manifests"]] == [digest]
    assert warnings and "rebuilt" in warnings[0]
    assert os.path.exists(os.path.join(store.path, "index.json.damaged"))


# ------------------------------------------------------------------------------------------ credentials
def test_a_redirected_401_never_receives_the_credentials(fake):
    """A blob redirected to another origin that answers 401 with a challenge of its own: the registry's
    credentials are not sent to that realm, the registry's state is unchanged, the message names the host."""
    _digest, _layer, layer_digest = image(fake)
    fake.basic("user", "pass-word")
    with FakeRegistry() as evil:
        evil.answer(None, ".", status=401, headers={"WWW-Authenticate": 'Bearer realm="%s/token"' % evil.url})
        fake.answer("GET", "/blobs/", status=307, headers={"Location": evil.url + "/bucket/object"})
        client = client_for(fake.url, credentials=Credentials("user", "pass-word"))
        with pytest.raises(AuthenticationError) as exc:
            client.open_blob(layer_digest)
        assert evil.host in str(exc.value) and "never sent" in str(exc.value)
        assert [r["path"] for r in evil.requests] == ["/bucket/object"]
        assert "Authorization" not in evil.requests[0]["headers"]
        assert client._auth.scheme != "bearer"   # the foreign challenge was not adopted


# ------------------------------------------------------------------------------------------ messages
def test_persistent_5xx_says_how_many_tries(fake):
    fake.answer("GET", "/manifests/", status=503)
    client = no_sleep(client_for(fake.url, retries=2))
    with pytest.raises(TransportError) as exc:
        client.get_manifest()
    assert "HTTP 503" in str(exc.value) and "after 3 tries" in str(exc.value)


def test_plain_http_to_a_tls_port(fake):
    fake.answer("GET", "/manifests/", status=400, body="Client sent an HTTP request to an HTTPS server.\n")
    with pytest.raises(TransportError) as exc:
        client_for(fake.url).get_manifest()
    assert "speaks https, not http" in str(exc.value)


def test_refused_connection_says_so():
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = no_sleep(client_for("http://127.0.0.1:%d" % port, retries=1))
    with pytest.raises(TransportError) as exc:
        client.get_manifest()
    text = str(exc.value)
    assert "connection refused" in text and "NewConnectionError" not in text and "after 2 tries" in text


# ------------------------------------------------------------------------------------------ HEAD first
def test_tag_rerun_with_a_store_is_one_head(fake, tmp_path):
    digest, _layer, _ld = image(fake)
    store = BlobStore(str(tmp_path / "store"))
    first = client_for(fake.url, store=store)
    assert first.get_manifest().digest == digest
    again = client_for(fake.url, store=store)
    assert again.get_manifest().digest == digest
    counts = again.request_counts()
    assert counts["head"] == 1 and counts["manifest_get"] == 0, counts
    assert again.head_manifest()[0] == digest and again.request_counts()["head"] == 1   # asked once per run


# ------------------------------------------------------------------------------------------ download chain
def test_download_resumes_after_a_reset_and_verifies(fake, tmp_path):
    _digest, layer, layer_digest = image(fake, 3 << 20)    # reads are 1 MiB: the reset comes after two
    with FaultProxy(fake.url) as proxy:
        proxy.add_rule("reset", method="GET", path="/blobs/", count=1, after_bytes=(5 << 20) // 2)
        client = no_sleep(client_for(proxy.url))
        partial = str(tmp_path / "blob.partial")
        result = download.download(client, {"digest": layer_digest, "size": len(layer)}, partial)
        ranged = [r for r in proxy.requests() if r["method"] == "GET" and "/blobs/" in r["path"]]
    assert result.resumed and result.size == len(layer)
    assert open(partial, "rb").read() == layer
    assert len(ranged) == 2 and any(k.lower() == "range" for k in ranged[1]["headers"])


def test_download_resumes_a_partial_left_by_an_earlier_run(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(layer[:50000])
    client = client_for(fake.url)
    result = download.download(client, {"digest": layer_digest, "size": len(layer)}, str(partial))
    assert result.resumed and result.fetched == len(layer) - 50000
    assert partial.read_bytes() == layer


def test_stale_partial_restarts_once_from_zero(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(b"\0" * 5000)         # bytes that are not the blob's
    warnings = []
    client = client_for(fake.url, warnings=warnings)
    result = download.download(client, {"digest": layer_digest, "size": len(layer)}, str(partial))
    assert not result.resumed and partial.read_bytes() == layer
    assert any("again from the start" in w for w in warnings)


def test_range_ignored_restarts_the_sink(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(layer[:1000])
    with FaultProxy(fake.url) as proxy:
        proxy.add_rule("ignore_range", method="GET", path="/blobs/")
        sinks = []

        def factory():
            sinks.append(Unpacker(None, layer_digest))
            return sinks[-1]
        result = download.download(client_for(proxy.url), {"digest": layer_digest, "size": len(layer)}, str(partial),
                                   sink_factory=factory)
    assert len(sinks) == 2 and result.sink_result.diff_id == digest_of(gzip.decompress(layer))
    assert partial.read_bytes() == layer


def test_corrupt_blob_leaves_nothing(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    with FaultProxy(fake.url) as proxy:
        proxy.add_rule("flip", method="GET", path="/blobs/", offset=777)
        partial = str(tmp_path / "blob.partial")
        with pytest.raises(DigestMismatch):
            download.download(client_for(proxy.url), {"digest": layer_digest, "size": len(layer)}, partial)
    assert not os.path.exists(partial)


def test_longer_than_its_descriptor(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    with pytest.raises(DigestMismatch) as exc:
        download.download(client_for(fake.url), {"digest": layer_digest, "size": len(layer) - 10},
                          str(tmp_path / "p"))
    assert "longer" in str(exc.value)


def test_foreign_urls_first_then_the_registry(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    warnings = []
    descriptor = {"digest": layer_digest, "size": len(layer), "urls": [fake.url + "/nowhere/blob"],
                  "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
    fake.answer("GET", "^/nowhere/", status=404)
    result = download.download(client_for(fake.url, warnings=warnings), descriptor, str(tmp_path / "p"))
    assert result.size == len(layer)
    assert any("trying the next source" in w for w in warnings)
    # a foreign URL in an ordinary layer is never followed
    assert download.foreign_urls(dict(descriptor, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")) == []


def test_cancel_stops_a_download(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(download.Cancelled):
        download.download(client_for(fake.url), {"digest": layer_digest, "size": len(layer)}, None, cancel=cancel)


def test_fetch_to_store_commits_verified_blobs_once(fake, tmp_path):
    _digest, layer, layer_digest = image(fake)
    store = BlobStore(str(tmp_path / "store"))
    client = client_for(fake.url)
    path, result = download.fetch_to_store(client, store, {"digest": layer_digest, "size": len(layer)})
    assert result is not None and open(path, "rb").read() == layer
    before = client.request_counts()["blob_get"]
    path2, result2 = download.fetch_to_store(client, store, {"digest": layer_digest, "size": len(layer)})
    assert result2 is None and path2 == path and client.request_counts()["blob_get"] == before
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == layer_digest.split(":")[1]
