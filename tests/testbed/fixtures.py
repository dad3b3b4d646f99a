"""pytest fixtures for the test bed (loaded through ``pytest_plugins = ["testbed.fixtures"]``).

Session scope (started once per test process, stopped at the end):
``registry_anonymous``, ``registry_basic``, ``registry_token``, ``registry_mtls``; ``sshd_server`` (a
private sshd and an inventory of three hosts reached through it: testbed.sshd).

Function scope: ``fresh_registry`` is a factory ``fresh_registry(mode, **kwargs) -> Registry`` whose
registries are stopped after the test (use it when a test changes the registry's contents or the token
server's switches).

When ``tests/testbed/builder.py`` exists there is also a session fixture ``seeded``: a function
``seeded(registry, kinds=None) -> dict`` calling ``testbed.builder.seed`` once per (registry, kinds).
"""
import os

import pytest


def _registry(*args, **kwargs):
    # imported here: loading these fixtures must not need the registries' libraries (unit tests run without)
    from testbed.registry import Registry
    return Registry(*args, **kwargs)


def _session_registry(tmp_path_factory, mode):
    reg = _registry(mode, workdir=str(tmp_path_factory.mktemp("registry-" + mode)))
    reg.start()
    return reg


@pytest.fixture(scope="session")
def registry_anonymous(tmp_path_factory):
    reg = _session_registry(tmp_path_factory, "anonymous")
    yield reg
    reg.stop()
    reg.remove_storage()


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory):
    reg = _session_registry(tmp_path_factory, "basic")
    yield reg
    reg.stop()
    reg.remove_storage()


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory):
    reg = _session_registry(tmp_path_factory, "token")
    yield reg
    reg.stop()
    reg.remove_storage()


@pytest.fixture(scope="session")
def registry_mtls(tmp_path_factory):
    reg = _session_registry(tmp_path_factory, "mtls")
    yield reg
    reg.stop()
    reg.remove_storage()


@pytest.fixture
def fresh_registry(tmp_path):
    started = []

    def make(mode="anonymous", **kwargs):
        workdir = kwargs.pop("workdir", None) or str(tmp_path / ("registry-%s-%d" % (mode, len(started))))
        reg = _registry(mode, workdir=workdir, **kwargs)
        started.append(reg)
        return reg.start()

    yield make
    for reg in started:
        reg.stop()
        reg.remove_storage()


if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "builder.py")):

    @pytest.fixture(scope="session")
    def seeded():
        cache = {}

        def seed(registry, kinds=None):
            from testbed.builder import seed as _seed  # lazy: builder.py is another engineer's module

            key = (registry.url, tuple(kinds) if kinds else None)
            if key not in cache:
                cache[key] = _seed(registry, kinds=kinds)
            return cache[key]

        return seed


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory):
    """A private sshd on a loopback port with an inventory of three hosts (testbed.sshd.SSHServer); each
    test that needs clean hosts calls ``sshd_server.reset_hosts()``."""
    from testbed.sshd import SSHServer

    server = SSHServer(workdir=str(tmp_path_factory.mktemp("sshd")), hosts=3)
    server.start()
    yield server
    server.stop()
