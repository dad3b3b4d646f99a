"""The client's transport behaviour through the fault proxy: retries, rate limits, redirects, size caps,
registry warnings and digest checks, as the modules see them."""
import json

from helpers import assert_clean_failure
from testbed.certs import make_certs
from testbed.modrun import run_module
from testbed.proxy import FaultProxy


def manifest_args(proxy, info, **extra):
    args = {"registry": proxy.url, "image": info.repository + ":" + info.tag}
    args.update(extra)
    return args


def test_retry_after_honoured(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("status", method="GET", path="/manifests/", count=2, status=503, retry_after="1")
        result = run_module("docker_registry_manifest", manifest_args(proxy, info))
        assert result["rc"] == 0, result
        assert proxy.count("GET", "/manifests/") == 3
        assert "retry 2 of 3" in json.dumps(result.get("warnings"))
        assert result["elapsed"] >= 2


def test_rate_limited_for_good(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("status", method="GET", path="/manifests/", status=429, retry_after="0",
                       set_headers={"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"})
        result = run_module("docker_registry_manifest", manifest_args(proxy, info, retries=1))
        assert_clean_failure(result)
        assert "rate limiting" in result["msg"] and "ratelimit-remaining: 0;w=21600" in result["msg"]
        assert proxy.count("GET", "/manifests/") == 2


def test_connection_reset_retried(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("reset", method="GET", path="/manifests/", count=1)
        proxy.add_rule("truncate", method="GET", path="/blobs/", count=1, after_bytes=10)
        result = run_module("docker_registry_config", manifest_args(proxy, info))
        assert result["rc"] == 0, result
        assert result["config_digest"] == info.default["config_digest"]


def test_blob_redirect_never_carries_authorization(registry_token, seeded, tmp_path):
    reg = registry_token
    info = seeded(reg)["oci-simple"]
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("redirect_blob", method="GET", path="/blobs/")
        dest = tmp_path / "layer"
        result = run_module("docker_registry_layer", manifest_args(proxy, info, index=0, dest=str(dest),
                                                                   username=reg.username, password=reg.password))
        assert result["rc"] == 0, result
        blob_host = proxy.blob_requests()
        assert blob_host, "the redirect was not followed"
        assert all("Authorization" not in r["headers"] for r in blob_host)
        assert all(r["status"] in (200, 206) for r in blob_host)


def test_https_to_http_redirect_refused(registry_anonymous, seeded, tmp_path):
    info = seeded(registry_anonymous)["oci-simple"]
    certs = make_certs(str(tmp_path / "certs"))
    with FaultProxy(registry_anonymous.url, tls=(certs.server_cert, certs.server_key)) as proxy:
        proxy.add_rule("redirect_blob", method="GET", path="/blobs/")
        result = run_module("docker_registry_config", manifest_args(proxy, info, ca_path=certs.ca_cert))
        assert_clean_failure(result)
        assert "refusing the redirect" in result["msg"] and "insecure" in result["msg"]
        assert not proxy.blob_requests()


def test_redirect_loop_bounded(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("loop", method="GET", path="/manifests/")
        result = run_module("docker_registry_manifest", manifest_args(proxy, info))
        assert_clean_failure(result)
        assert "redirect" in result["msg"]
        assert proxy.count("GET", "/manifests/") <= 12


def test_oversized_manifest_and_error_bodies(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("oversize", method="GET", path="/manifests/", size=5 * 1024 * 1024, chunked=True)
        result = run_module("docker_registry_manifest", manifest_args(proxy, info), measure_rss=True)
        assert_clean_failure(result)
        assert "4 MiB limit" in result["msg"]
        proxy.clear()
        proxy.add_rule("oversize", method="GET", path="/manifests/", size=3 * 1024 * 1024, status=500)
        result = run_module("docker_registry_manifest", manifest_args(proxy, info, retries=0))
        assert_clean_failure(result)
        assert "HTTP 500" in result["msg"]
        assert len(result["msg"]) < 2000


def test_registry_warning_header_passed_on(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("pass", method="GET", path="/manifests/",
                       set_headers={"Warning": '299 - "this repository is deprecated"'})
        result = run_module("docker_registry_manifest", manifest_args(proxy, info))
        assert result["rc"] == 0
        assert "this repository is deprecated" in json.dumps(result.get("warnings"))


def test_digest_header_mismatch_warns_for_tags(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    wrong = "sha256:" + "1" * 64
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("pass", method="GET", path="/manifests/", set_headers={"Docker-Content-Digest": wrong})
        result = run_module("docker_registry_manifest", manifest_args(proxy, info))
        assert result["rc"] == 0
        assert result["digest"] == info.digest
        assert wrong in json.dumps(result.get("warnings"))


def test_tampered_manifest_by_digest_fails(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-simple"]
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("flip", method="GET", path="/manifests/", offset=40, mask=0x01)
        result = run_module("docker_registry_manifest", {"registry": proxy.url,
                                                         "image": info.repository + "@" + info.digest})
        assert_clean_failure(result)
        assert "does not match the requested digest" in result["msg"]


def test_tls_sniff_picks_the_scheme_of_loopback_registries(registry_anonymous, registry_basic, registry_mtls):
    """The cheap handshake that decides https or http for a loopback registry named in the image."""
    from testbed.registry import free_port
    from ansible_collections.hocker.registry.plugins.module_utils._registry.transport import Transport

    transport = Transport()
    assert transport.speaks_tls("https://%s/v2/" % registry_anonymous.host) is False
    assert transport.speaks_tls("https://%s/v2/" % registry_basic.host) is True
    assert transport.speaks_tls("https://%s/v2/" % registry_mtls.host) is True   # even without a client cert
    assert transport.speaks_tls("https://127.0.0.1:%d/v2/" % free_port("127.0.0.1")) is None   # nobody there
    assert transport.speaks_tls("http://%s/v2/" % registry_anonymous.host) is None


def test_loopback_registry_found_without_scheme(registry_anonymous, registry_basic, seeded):
    """A loopback registry named in the image: plain http found by the sniff, https kept for a TLS one."""
    from helpers import auth_args
    for reg in (registry_anonymous, registry_basic):
        info = seeded(reg)["oci-simple"]
        result = run_module("docker_registry_manifest", dict(auth_args(reg), image=info.image(reg.host)))
        assert result["rc"] == 0, result
        assert result["config_digest"] == info.default["config_digest"]
        assert result["image"].startswith(reg.host + "/")
