"""The option adapter: every shared option checked in one place, with one clear message each; credentials
typed into URLs masked before anything can echo them; client construction from a plain mapping."""
import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import options as o
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference
from testbed.fakeregistry import FakeRegistry


@pytest.mark.parametrize("values,words", [
    ({"timeout": 0}, "timeout must be from 1 to 3600"),
    ({"timeout": -5}, "timeout must be from 1 to 3600"),
    ({"timeout": 10 ** 12}, "timeout must be from 1 to 3600"),
    ({"timeout": "soon"}, "timeout must be a whole number"),
    ({"retries": -1}, "retries must be from 0 to 100"),
    ({"retries": 10 ** 9}, "retries must be from 0 to 100"),
    ({"cache_dir": ""}, "cache_dir must be a non-empty path"),
    ({"cache_dir": "a\0b"}, "NUL"),
    ({"ca_path": "x\0"}, "NUL"),
    ({"client_cert": "/c.pem"}, "client_cert and client_key go together"),
    ({"token": "t", "username": "u", "password": "p"}, "exclude each other"),
    ({"username": "u"}, "username needs password"),
    ({"offline": True}, "offline needs cache_dir"),
])
def test_bad_values_have_clear_messages(values, words):
    with pytest.raises(InvalidReference) as exc:
        o.ClientOptions.from_mapping(dict({"image": "app"}, **values))
    assert words in str(exc.value)


def test_defaults_and_platforms():
    opts = o.ClientOptions.from_mapping({"image": "app", "timeout": None, "platform": "arm64"})
    assert (opts.timeout, opts.retries, opts.validate_certs, opts.offline) == (60, 3, True, False)
    assert str(opts.wanted_platform()) == "linux/arm64"
    assert o.ClientOptions.from_mapping({"image": "app", "platform": "ALL"}).all_platforms


@pytest.mark.parametrize("raw,masked", [
    ("https://user:s3cret@reg.example.com", "https://<credentials removed>@reg.example.com"),
    ("user:s3cret@reg.example.com:5000/v2", "<credentials removed>@reg.example.com:5000/v2"),
    ("https://reg.example.com", "https://reg.example.com"),
    ("https://bob:s3cr@t!@reg.example.com", "https://<credentials removed>@reg.example.com"),
])
def test_urls_lose_their_credentials(raw, masked):
    assert o.url_without_credentials(raw) == masked
    params = o.mask_credentials({"registry": raw, "registry_mirrors": [raw]})
    assert "s3cret" not in repr(params)


@pytest.mark.parametrize("raw,leaks", [
    ("user:s3cret@reg.example.com/app:1", False),
    ("https://user:s3cret@reg.example.com/app", False),
    ("user:s3cr@t@reg.example.com/app:1@sha256:" + "a" * 64, False),
    ("app@sha256:" + "a" * 64, None),
])
def test_images_lose_their_credentials(raw, leaks):
    masked = o.image_without_credentials(raw)
    if leaks is None:
        assert masked == raw       # a digest is not a credential
    else:
        assert "s3cret" not in masked and o.MASK in masked


def test_ca_path_directory_without_certificates(tmp_path):
    with pytest.raises(InvalidReference) as exc:
        o.tls_settings(o.ClientOptions.from_mapping({"image": "app", "ca_path": str(tmp_path)}))
    assert "*.crt" in str(exc.value)
    with pytest.raises(InvalidReference):
        o.tls_settings(o.ClientOptions.from_mapping({"image": "app", "ca_path": str(tmp_path / "missing.pem")}))


def test_build_client_from_a_mapping(tmp_path):
    with FakeRegistry() as reg:
        secrets = []
        opts = o.ClientOptions.from_mapping({"image": "team/app:v1", "registry": reg.url, "retries": 0,
                                             "cache_dir": str(tmp_path / "store")})
        reference, client = o.build_client(opts, secret=secrets.append)
        assert str(reference) == "%s/team/app:v1" % reg.host
        assert client.store is not None and client.transport.retries == 0
        # check mode never opens (or creates) the store
        _ref, checked = o.build_client(o.ClientOptions.from_mapping({"image": "x", "registry": reg.url,
                                                                     "cache_dir": str(tmp_path / "other")}),
                                       check_mode=True)
        assert checked.store is None and not (tmp_path / "other").exists()
