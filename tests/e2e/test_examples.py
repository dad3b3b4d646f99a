"""Every documented example runs as written, against the local test registries (see testbed/examples.py for
what is rewritten: registry addresses, credentials, absolute paths, hosts).

Each EXAMPLES block of a module or plugin and each YAML playbook or task list of a role README is one test:
the images it names are pushed to the test registry it is rewritten to, and ``ansible-playbook`` must
succeed. Examples the test bed cannot run are listed in NOT_RUNNABLE with the reason (shown as skips).
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from testbed import builder, examples

ROOT = examples.ROOT
PYROOT = os.path.join(ROOT, ".build", "pyroot")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

#: example id -> why the test bed cannot run it (keep this short: at most a few)
NOT_RUNNABLE = {}

EXAMPLES = examples.collect()


@pytest.fixture(scope="session")
def example_registries(registry_anonymous, registry_basic, registry_token):
    return examples.Registries(registry_anonymous, registry_basic, registry_token)


@pytest.fixture(scope="session")
def example_host(tmp_path_factory, registry_basic):
    """What a host would have set up once: stored credentials and the CA of the basic-auth registry."""
    base = tmp_path_factory.mktemp("example-host")
    docker_config = base / "docker"
    docker_config.mkdir()
    token = base64.b64encode(("%s:%s" % (registry_basic.username, registry_basic.password)).encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {registry_basic.host: {"auth": token}}}))
    # the per-user certs.d root every run consults: ~/.config/containers/certs.d/<host:port>/
    certs_d = base / "home" / ".config" / "containers" / "certs.d" / registry_basic.host
    certs_d.mkdir(parents=True)
    with open(registry_basic.ca_path, "rb") as src:
        (certs_d / "ca.crt").write_bytes(src.read())
    return {"DOCKER_CONFIG": str(docker_config), "HOME": str(base / "home")}


@pytest.fixture
def scratch():
    """The example's root for the absolute paths it names: short, as a host's paths are (podman refuses a
    runroot of more than 50 characters, unix sockets take at most 108 bytes)."""
    path = tempfile.mkdtemp(prefix="hkex-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pushed():
    """{(registry url, repository, tag): digest} of the images pushed for examples so far."""
    return {}


def push_wanted(rewriter, registries, pushed):
    obj, _extra = builder.build_kind("oci-index")
    for mode, repo, tag in rewriter.wanted:
        reg = registries[mode]
        key = (reg.url, repo, tag)
        if key not in pushed:
            builder.push_image(reg.push_session(), reg.url, repo, obj, tags=[tag])
            pushed[key] = obj.digest
        rewriter.digests[(mode, repo)] = pushed[key]


def podman_env(base):
    """Podman storage of its own for the examples (vfs, cgroupfs, file events: what works in CI)."""
    os.makedirs(base, exist_ok=True)
    storage = os.path.join(base, "storage.conf")
    runroot = "/tmp/hkex-%d" % os.getpid()
    with open(storage, "w") as f:
        f.write('[storage]\ndriver = "vfs"\ngraphroot = "%s/root"\nrunroot = "%s"\n' % (base, runroot))
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    return {"CONTAINERS_STORAGE_CONF": storage, "CONTAINERS_CONF": conf}


def run_playbook(plays, workdir, env, extra_vars, inventory):
    playbook = os.path.join(workdir, "playbook.yml")
    with open(playbook, "w") as f:
        yaml.safe_dump(plays, f, sort_keys=False)
    hosts = os.path.join(workdir, "inventory.yml")
    with open(hosts, "w") as f:
        yaml.safe_dump(inventory, f, sort_keys=False)
    with open(os.path.join(workdir, "extra-vars.json"), "w") as f:
        json.dump(extra_vars, f)
    home = env.get("HOME") or os.path.join(workdir, "home")   # the example host's home: its certs.d
    os.makedirs(home, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env)
    full_env.update({
        "HOME": home,
        "ANSIBLE_ASYNC_DIR": os.path.join(workdir, "async"),
        "ANSIBLE_COLLECTIONS_PATH": PYROOT,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    })
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", hosts, playbook, "-e",
                           "@" + os.path.join(workdir, "extra-vars.json")],
                          capture_output=True, text=True, env=full_env, cwd=workdir, timeout=900, check=False)
    return proc, playbook


def test_every_module_has_examples():
    modules = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                     if n.endswith(".py") and not n.startswith("_"))
    documented = {e.name for e in EXAMPLES if e.kind == "module"}
    assert modules and set(modules) <= documented, "modules without EXAMPLES: %s" % (set(modules) - documented)


def test_not_runnable_list_is_current():
    ids = {e.id for e in EXAMPLES}
    stale = set(NOT_RUNNABLE) - ids
    assert not stale, "NOT_RUNNABLE names examples that no longer exist: %s" % sorted(stale)
    assert len(NOT_RUNNABLE) <= 3, "more than a few examples are not run: make the test bed give what they need"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example(example, example_registries, example_host, pushed, scratch, tmp_path, request):
    if example.id in NOT_RUNNABLE:
        pytest.skip("not runnable on the test bed: %s" % NOT_RUNNABLE[example.id])
    data, rewriter = examples.prepare(example, example_registries, scratch)
    push_wanted(rewriter, example_registries, pushed)
    env = dict(example_host)
    # runtimes: when the example names one, or loads images (a role may load through image_load); the
    # sockets it names (k3s's containerd, /var/run/docker.sock) are the private daemons' sockets
    loads = example.kind == "role" or examples.uses(example.text, "image_load", "load")
    if loads or examples.uses(example.text, "docker", "containerd", "ctr"):
        dockerd = request.getfixturevalue("dockerd")
        env["DOCKER_HOST"] = "unix://" + dockerd.socket
        env["CONTAINERD_ADDRESS"] = dockerd.containerd.socket
        rewriter.sockets = {"docker": dockerd.socket, "containerd": dockerd.containerd.socket}
    if loads or examples.uses(example.text, "podman"):
        env.update(podman_env(str(tmp_path / "podman")))
    plays = examples.finish(example, data, rewriter)
    extra_vars = {
        "ansible_python_interpreter": sys.executable,
        "ansible_become_method": "su",          # we are root; no sudo on the test machine
    }
    # what the play would have from the inventory or a vault: credentials, the images a host deploys
    extra_vars.update(rewriter.variables)
    proc, playbook = run_playbook(plays, str(tmp_path), env, extra_vars, examples.inventory(rewriter.groups))
    if proc.returncode != 0:
        with open(playbook) as f:
            shown = f.read()
        given = ", ".join(sorted(rewriter.variables)) or "none"
        pytest.fail("example %s (%s) failed (rc=%d)\n--- rewritten playbook ---\n%s\n--- variables given: %s\n"
                    "--- output ---\n%s\n%s" % (
                        example.id, example.source, proc.returncode, shown, given,
                        proc.stdout[-6000:], proc.stderr[-3000:]))
    assert "failed=0" in proc.stdout and "unreachable=0" in proc.stdout, proc.stdout[-3000:]
