"""Self-tests of the fault proxy: every fault is observed by a real HTTP client talking through the proxy to a
real registry."""
import hashlib
import json
import random
import time
import types
import uuid

import pytest
import requests
import urllib3

from testbed import builder
from testbed.certs import make_certs
from testbed.proxy import SIGNATURE_PARAM, FaultProxy

MiB = 1024 * 1024
ACCEPT = ", ".join([builder.OCI_INDEX, builder.DOCKER_LIST, builder.OCI_MANIFEST, builder.DOCKER_MANIFEST])
BLOB_REPO = "proxy/blobs"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def upstream(registry_anonymous):
    reg = registry_anonymous
    info = builder.seed(reg, kinds=["docker-simple"], repo_prefix="proxy/")["docker-simple"]
    blob = random.Random("proxy-blob").randbytes(4 * MiB)
    digest = builder.push_blob(reg.push_session(), reg.url, BLOB_REPO, blob)
    return types.SimpleNamespace(reg=reg, info=info, blob=blob, digest=digest)


@pytest.fixture
def proxy(upstream):
    with FaultProxy(upstream.reg.url) as p:
        yield p


def blob_url(base, up):
    return "%s/v2/%s/blobs/%s" % (base, BLOB_REPO, up.digest)


def read_raw(url, session=None, **kw):
    """GET ``url`` streaming; returns ``(response, body bytes received, exception or None)``."""
    s = session or requests.Session()
    r = s.get(url, stream=True, headers={"Accept-Encoding": "identity"}, **kw)
    got = bytearray()
    exc = None
    try:
        while True:
            data = r.raw.read1(65536, decode_content=False)  # read() would drop a partial buffer on error
            if not data:
                break
            got += data
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
        exc = e
    finally:
        r.close()
    return r, bytes(got), exc


def test_passthrough_and_stats(proxy, upstream):
    info = upstream.info
    path = "/v2/%s/manifests/%s" % (info.repository, info.tag)
    r = requests.get(proxy.url + path, headers={"Accept": ACCEPT})
    assert r.status_code == 200 and r.content == info.raw
    assert r.headers["Docker-Content-Digest"] == info.digest
    r = requests.get(blob_url(proxy.url, upstream))
    assert r.status_code == 200 and r.content == upstream.blob
    h = requests.head(blob_url(proxy.url, upstream))
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(upstream.blob)
    bpath = "/v2/%s/blobs/%s" % (BLOB_REPO, upstream.digest)
    st = proxy.stats
    assert st["requests"][("GET", path)] == 1
    assert st["requests"][("GET", bpath)] == 1 and st["requests"][("HEAD", bpath)] == 1
    assert st["bytes_sent"][bpath] == len(upstream.blob)
    assert st["bytes_sent"][path] == len(info.raw)
    assert proxy.count("GET", r"/manifests/") == 1
    assert proxy.bytes_sent(r"/blobs/") == len(upstream.blob)
    logged = proxy.requests()[0]
    assert logged["headers"]["Accept"] == ACCEPT and logged["status"] == 200 and logged["fault"] is None


def test_range_passthrough(proxy, upstream):
    r = requests.get(blob_url(proxy.url, upstream), headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 1000-1999/%d" % len(upstream.blob)
    assert r.content == upstream.blob[1000:2000]
    r = requests.get(blob_url(proxy.url, upstream), headers={"Range": "bytes=%d-" % (3 * MiB)})
    assert r.status_code == 206 and r.content == upstream.blob[3 * MiB:]


def test_ignore_range_answers_the_whole_blob(proxy, upstream):
    proxy.add_rule("ignore_range", path=r"/blobs/", count=1)
    r = requests.get(blob_url(proxy.url, upstream), headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 200 and "Content-Range" not in r.headers
    assert r.content == upstream.blob
    # the rule is used up: the next request gets its range again
    r = requests.get(blob_url(proxy.url, upstream), headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == upstream.blob[1000:2000]


def test_reset_after_n_bytes(proxy, upstream):
    rule = proxy.add_rule("reset", "GET", r"/blobs/sha256:", count=1, after_bytes=100000)
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(upstream.blob)
    assert got == upstream.blob[:100000]
    assert isinstance(exc, urllib3.exceptions.ProtocolError)
    assert isinstance(exc.args[1], ConnectionResetError)
    assert rule.hits == 1
    # count=1: the next request goes through
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert exc is None and got == upstream.blob
    assert proxy.requests()[0]["fault"] == "reset" and proxy.requests()[1]["fault"] is None


def test_reset_before_response(proxy, upstream):
    proxy.add_rule("reset", "GET", r"/blobs/", count=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(blob_url(proxy.url, upstream))
    assert requests.get(blob_url(proxy.url, upstream)).content == upstream.blob


def test_truncate_keeps_declared_length(proxy, upstream):
    proxy.add_rule("truncate", "GET", r"/blobs/", count=1, after_bytes=5000)
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert int(r.headers["Content-Length"]) == len(upstream.blob)
    assert got == upstream.blob[:5000]
    assert isinstance(exc, urllib3.exceptions.ProtocolError)
    assert "IncompleteRead" in str(exc)


@pytest.mark.parametrize("status,retry_after", [(429, "3"), (500, None), (502, None), (503, "1"), (408, None)])
def test_status_faults(proxy, upstream, status, retry_after):
    proxy.add_rule("status", "GET", r"/manifests/", count=1, status=status, retry_after=retry_after)
    url = "%s/v2/%s/manifests/%s" % (proxy.url, upstream.info.repository, upstream.info.tag)
    r = requests.get(url, headers={"Accept": ACCEPT})
    assert r.status_code == status
    assert r.headers.get("Retry-After") == retry_after
    assert r.json()["errors"][0]["code"]
    if status == 429:
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    r = requests.get(url, headers={"Accept": ACCEPT})
    assert r.status_code == 200 and r.content == upstream.info.raw


def test_status_with_custom_body_and_http_date(proxy, upstream):
    proxy.add_rule("status", status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT",
                   body='{"message":"toomanyrequests: slow down"}', headers={"RateLimit-Remaining": "0;w=21600"})
    r = requests.get(proxy.url + "/v2/")
    assert r.status_code == 429 and r.json() == {"message": "toomanyrequests: slow down"}
    assert r.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert r.headers["RateLimit-Remaining"] == "0;w=21600"


def test_flip_changes_digest(proxy, upstream):
    proxy.add_rule("flip", "GET", r"/blobs/", count=1, offset=123457)
    r = requests.get(blob_url(proxy.url, upstream))
    assert r.status_code == 200 and len(r.content) == len(upstream.blob)
    assert sha(r.content) != upstream.digest
    body, blob = r.content, upstream.blob
    assert body[:123457] == blob[:123457] and body[123458:] == blob[123458:]  # exactly one byte differs
    assert r.content[123457] == upstream.blob[123457] ^ 0xFF


def test_wrong_content_length(proxy, upstream):
    n = len(upstream.blob)
    proxy.add_rule("content_length", "GET", r"/blobs/", count=1, value=n - 10)
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert int(r.headers["Content-Length"]) == n - 10
    assert exc is None and got == upstream.blob[:n - 10] and sha(got) != upstream.digest
    proxy.add_rule("content_length", "GET", r"/blobs/", count=1, delta=+10)
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert int(r.headers["Content-Length"]) == n + 10
    assert got == upstream.blob and isinstance(exc, urllib3.exceptions.ProtocolError)


def test_stall_after_bytes_streams_and_stop_interrupts(upstream):
    px = FaultProxy(upstream.reg.url)
    try:
        px.add_rule("stall", "GET", r"/blobs/", after_bytes=MiB, seconds=600)
        r = requests.get(blob_url(px.url, upstream), stream=True, timeout=(10, 120))
        first = r.raw.read(MiB, decode_content=False)
        # the first MiB arrived while the rest of the 4 MiB body is held back: the body is streamed
        assert first == upstream.blob[:MiB]
        for _attempt in range(200):  # the proxy thread updates its counter right after the write
            if px.bytes_sent(r"/blobs/") == MiB:
                break
            time.sleep(0.05)
        assert px.bytes_sent(r"/blobs/") == MiB
    finally:
        px.stop()  # wakes the stalled handler
    with pytest.raises((urllib3.exceptions.HTTPError, OSError)):
        r.raw.read(4 * MiB, decode_content=False)
    r.close()


def test_stall_before_response_hits_client_timeout(upstream):
    px = FaultProxy(upstream.reg.url)
    try:
        px.add_rule("stall", "GET", r"/manifests/", seconds=600)
        with pytest.raises(requests.ReadTimeout):
            requests.get("%s/v2/%s/manifests/v1" % (px.url, upstream.info.repository), timeout=(10, 1))
    finally:
        px.stop()


@pytest.mark.parametrize("mode", ["anonymous", "basic", "token"])
def test_redirect_blob_to_second_host_logs_headers(registry_anonymous, registry_basic, registry_token, mode):
    reg = {"anonymous": registry_anonymous, "basic": registry_basic, "token": registry_token}[mode]
    s = reg.push_session()
    data = b"redirected blob %s\n" % mode.encode() * 1000
    digest = builder.push_blob(s, reg.url, "proxy/redirect", data)
    with FaultProxy(reg.url, upstream_ca=reg.ca_path if reg.url.startswith("https") else None) as px:
        px.add_rule("redirect_blob", "GET", r"/blobs/sha256:")
        s = reg.session()
        url = "%s/v2/proxy/redirect/blobs/%s" % (px.url, digest)
        r = s.get(url)
        assert r.status_code == 200 and r.content == data
        assert [h.status_code for h in r.history][-1] == 307
        assert r.url.startswith(px.blob_url) and px.blob_url.startswith("http://127.0.0.2:")
        assert "Docker-Content-Digest" not in r.headers  # object storage does not send it
        main = [e for e in px.requests() if e["method"] == "GET" and "/blobs/" in e["path"]]
        if mode != "anonymous":
            assert main[-1]["headers"].get("Authorization")
        blob = px.blob_requests()
        assert len(blob) == 1
        assert "Authorization" not in blob[0]["headers"]
        assert blob[0]["headers"]["Host"] == px.blob_url.split("//")[1]
        assert SIGNATURE_PARAM in blob[0]["query"]
        # a client that forwards the Authorization header is refused, like S3 does
        loc = r.history[-1].headers["Location"]
        bad = requests.get(loc, headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert bad.status_code == 400 and b"InvalidArgument" in bad.content
        assert px.blob_requests()[-1]["headers"]["Authorization"] == "Basic Zm9vOmJhcg=="
        # a URL without a valid signature is denied
        assert requests.get(px.blob_url + "/v2/proxy/redirect/blobs/" + digest).status_code == 403
        # Range works through the redirect
        r = s.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]


def test_faults_on_the_blob_host(proxy, upstream):
    proxy.add_rule("redirect_blob", "GET", r"/blobs/")
    proxy.add_rule("reset", "GET", r"/blobs/", server="blob", count=1, after_bytes=4096)
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert got == upstream.blob[:4096] and isinstance(exc, urllib3.exceptions.ProtocolError)
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert exc is None and got == upstream.blob


def test_tls_proxy_and_https_to_http_redirect(upstream, tmp_path):
    certs = make_certs(str(tmp_path / "certs"))
    with FaultProxy(upstream.reg.url, tls=(certs.server_cert, certs.server_key)) as px:
        assert px.url.startswith("https://127.0.0.1:")
        info = upstream.info
        r = requests.get("%s/v2/%s/manifests/%s" % (px.url, info.repository, info.tag),
                         headers={"Accept": ACCEPT}, verify=certs.ca_cert)
        assert r.status_code == 200 and r.content == info.raw
        px.add_rule("redirect_blob", "GET", r"/blobs/")
        r = requests.get(blob_url(px.url, upstream), verify=certs.ca_cert, allow_redirects=False)
        assert r.status_code == 307 and r.headers["Location"].startswith("http://127.0.0.2:")
        # the downgrade really leads to a plain-http server that serves the blob
        assert requests.get(r.headers["Location"]).content == upstream.blob


def test_generic_redirect_template(proxy, upstream):
    proxy.add_rule("redirect", "GET", r"/blobs/", count=1, status=302, location=upstream.reg.url + "{path}")
    r = requests.get(blob_url(proxy.url, upstream))
    assert r.history[0].status_code == 302
    assert r.url == blob_url(upstream.reg.url, upstream) and r.content == upstream.blob


def test_redirect_loop(proxy, upstream):
    proxy.add_rule("loop", "GET", r"/blobs/")
    with pytest.raises(requests.TooManyRedirects):
        requests.get(blob_url(proxy.url, upstream))
    assert proxy.count("GET", r"/blobs/") > 30
    r = requests.get(blob_url(proxy.url, upstream), allow_redirects=False)
    assert r.status_code == 302 and "testbed-loop=1" in r.headers["Location"]


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_manifest(proxy, upstream, chunked):
    size = 5 * MiB
    proxy.add_rule("oversize", "GET", r"/manifests/", count=1, size=size, chunked=chunked)
    r = requests.get("%s/v2/%s/manifests/v1" % (proxy.url, upstream.info.repository), headers={"Accept": ACCEPT})
    assert r.status_code == 200 and len(r.content) == size
    assert r.headers["Content-Type"] == builder.OCI_MANIFEST
    if chunked:
        assert "Content-Length" not in r.headers and r.headers["Transfer-Encoding"] == "chunked"
    else:
        assert int(r.headers["Content-Length"]) == size
    assert json.loads(r.content)["schemaVersion"] == 2


def test_oversized_error_body(proxy, upstream):
    proxy.add_rule("oversize", "GET", r"/manifests/", count=1, status=500, size=2 * MiB)
    r = requests.get("%s/v2/%s/manifests/v1" % (proxy.url, upstream.info.repository))
    assert r.status_code == 500 and len(r.content) == 2 * MiB
    assert r.json()["errors"][0]["code"] == "INTERNAL_ERROR"


def test_rule_count_skip_and_clear(proxy, upstream):
    rule = proxy.add_rule("status", "GET", r"/v2/$", count=1, skip=1, status=500)
    codes = [requests.get(proxy.url + "/v2/").status_code for _i in range(3)]
    assert codes == [200, 500, 200]
    assert rule.hits == 1 and rule.exhausted
    proxy.add_rule("status", "GET", r"/v2/$", status=503)
    assert requests.get(proxy.url + "/v2/").status_code == 503
    proxy.clear()
    assert proxy.rules == [] and proxy.requests() == []
    assert requests.get(proxy.url + "/v2/").status_code == 200
    with pytest.raises(ValueError):
        proxy.add_rule("explode")


def test_header_rewrites(proxy, upstream):
    proxy.add_rule("pass", "GET", r"/blobs/", set_headers={"Content-Encoding": "gzip"},
                   remove_headers=["Docker-Content-Digest"])
    r, got, exc = read_raw(blob_url(proxy.url, upstream))
    assert r.headers["Content-Encoding"] == "gzip" and "Docker-Content-Digest" not in r.headers
    assert got == upstream.blob and exc is None


def test_push_through_proxy_streams_request_bodies(proxy, upstream):
    s = requests.Session()
    repo = "proxy/push-" + uuid.uuid4().hex[:8]
    data = random.Random("push").randbytes(300000)
    digest = builder.push_blob(s, proxy.url, repo, data, chunked=True, chunk_size=100000)
    assert proxy.count("PATCH", r"/blobs/uploads/") == 3  # Locations were rewritten to the proxy
    assert requests.get("%s/v2/%s/blobs/%s" % (upstream.reg.url, repo, digest)).content == data

    # a request body without Content-Length (chunked transfer encoding) is streamed too
    r = s.post("%s/v2/%s/blobs/uploads/" % (proxy.url, repo))
    assert r.status_code == 202 and r.headers["Location"].startswith(proxy.url)
    other = data[::-1]

    def gen():
        for i in range(0, len(other), 65536):
            yield other[i:i + 65536]

    r = s.patch(r.headers["Location"], data=gen(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + sha(other))
    assert r.status_code == 201, r.text
    assert requests.get("%s/v2/%s/blobs/%s" % (upstream.reg.url, repo, sha(other))).content == other


def test_stop_is_idempotent_and_frees_the_port(upstream):
    px = FaultProxy(upstream.reg.url)
    url = px.url
    assert requests.get(url + "/v2/").status_code == 200
    px.stop()
    px.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/v2/", timeout=5)


def test_registry_object_as_upstream_mtls(registry_mtls):
    reg = registry_mtls
    info = builder.seed(reg, kinds=["oci-simple"], repo_prefix="proxy-mtls/")["oci-simple"]
    with FaultProxy(reg) as px:
        # the proxy presents the client certificate upstream; its own side is plain http
        r = requests.get("%s/v2/%s/manifests/%s" % (px.url, info.repository, info.tag), headers={"Accept": ACCEPT})
        assert r.status_code == 200 and r.content == info.raw
        assert px.count("GET", r"/manifests/") == 1
