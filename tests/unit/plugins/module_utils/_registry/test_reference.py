import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import (
    is_loopback_host, parse_reference, parse_registry_url)

D = "sha256:" + "ab" * 32

VALID = [
    # image, registry, tag, expected str, scheme, familiar
    ("hello-world", None, None, "registry-1.docker.io/library/hello-world:latest", "https", "hello-world:latest"),
    ("library/debian:jessie", None, None, "registry-1.docker.io/library/debian:jessie", "https", "debian:jessie"),
    ("docker.io/library/debian:12", None, None, "registry-1.docker.io/library/debian:12", "https", "debian:12"),
    ("index.docker.io/user/app", None, None, "registry-1.docker.io/user/app:latest", "https", "user/app:latest"),
    ("docker.io/alpine", None, None, "registry-1.docker.io/library/alpine:latest", "https", "alpine:latest"),
    ("ghcr.io/o/app:1.2", None, None, "ghcr.io/o/app:1.2", "https", "ghcr.io/o/app:1.2"),
    ("localhost:5000/foo", None, None, "localhost:5000/foo:latest", "auto", "localhost:5000/foo:latest"),
    ("localhost/foo", None, None, "localhost/foo:latest", "auto", "localhost/foo:latest"),
    ("127.0.0.1:5000/a/b", None, None, "127.0.0.1:5000/a/b:latest", "auto", "127.0.0.1:5000/a/b:latest"),
    ("127.1.2.3:5000/a", None, None, "127.1.2.3:5000/a:latest", "auto", "127.1.2.3:5000/a:latest"),
    ("reg.example.com:8443/a/b/c:tag", None, None, "reg.example.com:8443/a/b/c:tag", "https",
     "reg.example.com:8443/a/b/c:tag"),
    ("foo:5000", None, None, "registry-1.docker.io/library/foo:5000", "https", "foo:5000"),
    ("test.com:5000", None, None, "registry-1.docker.io/library/test.com:5000", "https", "test.com:5000"),
    ("foo:5000/bar", None, None, "foo:5000/bar:latest", "https", "foo:5000/bar:latest"),
    ("192.168.1.1:5000/repo:5050", None, None, "192.168.1.1:5000/repo:5050", "https",
     "192.168.1.1:5000/repo:5050"),
    ("[::1]:5000/x", None, None, "[::1]:5000/x:latest", "auto", "[::1]:5000/x:latest"),
    ("[2001:db8::1]:5000/repo", None, None, "[2001:db8::1]:5000/repo:latest", "https",
     "[2001:db8::1]:5000/repo:latest"),
    ("Docker/docker", None, None, "Docker/docker:latest", "https", "Docker/docker:latest"),
    ("name@" + D, None, None, "registry-1.docker.io/library/name@" + D, "https", "name:latest"),
    ("name:tag@" + D, None, None, "registry-1.docker.io/library/name:tag@" + D, "https", "name:tag"),
    ("a_b__d-e--f/g.h", None, None, "registry-1.docker.io/a_b__d-e--f/g.h:latest", "https", "a_b__d-e--f/g.h:latest"),
    ("app", "http://127.0.0.1:5000", None, "127.0.0.1:5000/app:latest", "http", "127.0.0.1:5000/app:latest"),
    ("library/app", "http://127.0.0.1:5000/v2/", "v1", "127.0.0.1:5000/library/app:v1", "http",
     "127.0.0.1:5000/library/app:v1"),
    ("app:v1", "registry.example.com/v2", "v1", "registry.example.com/app:v1", "https",
     "registry.example.com/app:v1"),
    ("debian", "https://registry-1.docker.io/v2/", "jessie", "registry-1.docker.io/library/debian:jessie", "https",
     "debian:jessie"),
    ("debian", "index.docker.io", None, "registry-1.docker.io/library/debian:latest", "https", "debian:latest"),
    ("x", None, "t" * 128, "registry-1.docker.io/library/x:" + "t" * 128, "https", "x:" + "t" * 128),
]


@pytest.mark.parametrize("image,registry,tag,expected,scheme,familiar", VALID)
def test_valid(image, registry, tag, expected, scheme, familiar):
    ref = parse_reference(image, registry, tag)
    assert str(ref) == expected
    assert ref.scheme == scheme
    assert ref.familiar == familiar


INVALID = [
    ("", None, None, "non-empty"),
    ("docker/Docker", None, None, "lowercase"),
    ("a" * 64, None, None, "image ID"),
    ("[::1]:5000", None, None, "no repository"),
    ("fc00::1:5000/debian", None, None, "invalid registry host"),
    ("[fe80::1%eth0]:5000/debian", None, None, "invalid registry host"),
    ("foo:bar:baz", None, None, "no repository"),
    ("name@sha256:abc", None, None, "invalid digest"),
    ("name@md5:" + "a" * 32, None, None, "unsupported digest algorithm"),
    ("name@sha256:" + "A" * 64, None, None, "lowercase hex"),
    ("name:-bad", None, None, "invalid tag"),
    ("name:" + "t" * 129, None, None, "invalid tag"),
    ("a//b", None, None, "empty path component"),
    ("a/b_", None, None, "separators"),
    ("with space", None, None, "whitespace"),
    ("https://reg.example.com/app", None, None, "registry option"),
    ("ghcr.io/o/app", "https://ghcr.io", None, "names a registry"),
    ("app", "ftp://reg.example.com", None, "only http"),
    ("app", "https://reg.example.com/some/path", None, "no path"),
    ("app", "https://user:pw@reg.example.com", None, "credentials do not belong"),
    ("app:v1", None, "v2", "tag option says"),
    ("app", None, "bad tag!", "invalid tag"),
    ("localhost:99999/app", None, None, "invalid port"),
    ("x/" + "a" * 255, None, None, "longer than 255"),
]


@pytest.mark.parametrize("image,registry,tag,reason", INVALID)
def test_invalid(image, registry, tag, reason):
    with pytest.raises(InvalidReference) as info:
        parse_reference(image, registry, tag)
    assert reason in str(info.value)


def test_credentials_never_echoed_from_registry_url():
    with pytest.raises(InvalidReference) as info:
        parse_registry_url("https://bob:s3cret@reg.example.com")
    assert "s3cret" not in str(info.value)


def test_digest_wins_and_tag_kept():
    ref = parse_reference("name:tag@" + D)
    assert ref.ref == D
    assert ref.tag == "tag"
    assert ref.containerd_name == "docker.io/library/name:tag"


def test_containerd_name_for_private_registry():
    assert parse_reference("127.0.0.1:5000/app:v1").containerd_name == "127.0.0.1:5000/app:v1"


@pytest.mark.parametrize("host,expected", [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:80", True), ("127.9.9.9", True),
    ("[::1]:5000", True), ("10.0.0.1:5000", False), ("example.com", False), ("foo.localhost", True),
])
def test_loopback(host, expected):
    assert is_loopback_host(host) is expected
