import shutil

import pytest

from testbed.loaders import Podman, PrivateDockerd, ctr_remove_all

NS = "hocker-test"


@pytest.fixture(params=["anonymous", "basic", "token", "mtls"])
def any_registry(request, seeded):
    """Each registry mode, seeded with the default images: (registry, {kind: ImageInfo})."""
    reg = request.getfixturevalue("registry_" + request.param)
    return reg, seeded(reg)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    # short path: unix socket paths are limited to 108 bytes
    workdir = str(tmp_path_factory.mktemp("dockerd"))
    daemon = PrivateDockerd(workdir)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def clean_dockerd(dockerd):
    dockerd.remove_all()
    yield dockerd
    dockerd.remove_all()


@pytest.fixture
def containerd(dockerd):
    ctr_remove_all(dockerd.containerd, NS)
    yield dockerd.containerd
    ctr_remove_all(dockerd.containerd, NS)


@pytest.fixture
def podman(tmp_path):
    p = Podman(str(tmp_path / "podman"))
    yield p
    p.close()
