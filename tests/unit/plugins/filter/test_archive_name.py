"""The archive_name filter: the file name the image_deploy role gives an image's archive."""
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.hocker.registry.plugins.filter.archive_name import FilterModule, archive_name

HEX = "a" * 64


@pytest.mark.parametrize("image,kwargs,name", [
    ("hello-world", {}, "hello-world_latest.tar"),
    ("library/debian:12", {}, "debian_12.tar"),
    ("docker.io/owner/app:1", {}, "owner_app_1.tar"),
    ("ghcr.io/owner/app:1.2", {}, "ghcr.io_owner_app_1.2.tar"),
    ("127.0.0.1:5000/testbed/docker-simple:v1", {}, "127.0.0.1_5000_testbed_docker-simple_v1.tar"),
    ("localhost/app", {}, "localhost_app_latest.tar"),
    ("app@sha256:" + HEX, {}, "app@sha256_%s.tar" % HEX),
    ("app:1@sha256:" + HEX, {}, "app_1.tar"),
    ("team/app", {"registry": "https://reg.example.com:8443", "tag": "2"}, "reg.example.com_8443_team_app_2.tar"),
    ("library/redis", {"registry": "https://registry-1.docker.io/v2/"}, "redis_latest.tar"),
])
def test_archive_name(image, kwargs, name):
    assert archive_name(image, **kwargs) == name


@pytest.mark.parametrize("image,kwargs", [
    ("http://reg/app", {}),
    ("ghcr.io/owner/app", {"registry": "https://reg.example.com"}),
    ("app:1", {"tag": "2"}),
    ("", {}),
])
def test_archive_name_errors(image, kwargs):
    with pytest.raises(AnsibleFilterError, match="hocker.registry.archive_name"):
        archive_name(image, **kwargs)


def test_filter_module():
    assert FilterModule().filters() == {"archive_name": archive_name}
