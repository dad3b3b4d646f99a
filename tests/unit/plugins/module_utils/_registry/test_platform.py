import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference, PlatformError
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import (
    Platform, descriptor_platform, host_platform, is_attestation, parse_platform, select)


def cands(*texts):
    return [(parse_platform(t), t) for t in texts]


@pytest.mark.parametrize("want,offered,expected", [
    ("linux/amd64", ["linux/arm64/v8", "linux/amd64"], "linux/amd64"),
    ("linux/arm64", ["linux/amd64", "linux/arm64/v8"], "linux/arm64/v8"),
    ("linux/arm64/v8", ["linux/amd64", "linux/arm64"], "linux/arm64"),
    ("linux/arm", ["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7"),
    ("linux/arm/v7", ["linux/arm/v6", "linux/arm/v5"], "linux/arm/v6"),
    ("linux/arm64", ["linux/arm/v7", "linux/arm/v6"], "linux/arm/v7"),
    ("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2"], "linux/amd64/v2"),
    ("linux/amd64", ["linux/386"], "linux/386"),
    ("linux/x86_64", ["linux/amd64"], "linux/amd64"),
    ("linux/aarch64", ["linux/arm64/v8"], "linux/arm64/v8"),
    ("linux/armhf", ["linux/arm/v7"], "linux/arm/v7"),
    ("linux/amd64", ["linux/amd64", "linux/amd64"], "linux/amd64"),
])
def test_select(want, offered, expected):
    plat, item = select(cands(*offered), parse_platform(want))
    assert item == expected


def test_first_of_equal_wins():
    offered = [(parse_platform("linux/amd64"), "first"), (parse_platform("linux/amd64"), "second")]
    assert select(offered, parse_platform("linux/amd64"))[1] == "first"


def test_exact_variant_beats_fallback_regardless_of_order():
    offered = cands("linux/arm/v6", "linux/arm/v7")
    assert select(offered, parse_platform("linux/arm/v7"))[1] == "linux/arm/v7"


@pytest.mark.parametrize("want,offered", [
    ("linux/amd64", ["linux/arm64", "linux/arm/v7"]),
    ("windows/amd64", ["linux/amd64"]),
    ("linux/arm/v6", ["linux/arm/v7"]),
    ("linux/386", ["linux/amd64"]),
])
def test_no_match_lists_offer(want, offered):
    with pytest.raises(PlatformError) as info:
        select(cands(*offered), parse_platform(want))
    for text in offered:
        assert text in str(info.value)


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64", ""])
def test_parse_invalid(text):
    with pytest.raises(InvalidReference):
        parse_platform(text)


def test_host_platform_is_linux():
    plat = host_platform()
    assert plat.os == "linux"
    assert plat.architecture


def test_attestation_detection():
    assert is_attestation({"platform": {"os": "unknown", "architecture": "unknown"}})
    assert is_attestation({"annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                           "platform": {"os": "linux", "architecture": "amd64"}})
    assert not is_attestation({"platform": {"os": "linux", "architecture": "amd64"}})


def test_descriptor_platform():
    assert str(descriptor_platform({"platform": {"os": "linux", "architecture": "arm", "variant": "v7"}})) == \
        "linux/arm/v7"
    assert descriptor_platform({}) is None


def test_normalization():
    assert str(Platform("linux", "aarch64", "8").normalized()) == "linux/arm64"
    assert str(Platform("linux", "arm").normalized()) == "linux/arm/v7"
    assert str(Platform("linux", "amd64", "v1").normalized()) == "linux/amd64"
    assert str(Platform("macos", "arm64").normalized()) == "darwin/arm64"
