"""Every module prints nothing on stdout but its one JSON result: Ansible parses stdout as JSON, and anything
else there (a print, a library's progress line, a warning written to stdout) breaks the task or, worse,
hides in async job files and ``-vvv`` output.

Each module of plugins/modules runs the way Ansible runs it (testbed.modrun), with its required options
derived from its documentation (``ansible-doc --json``): with no arguments at all, in check mode, and for the
registry modules for real. Modules added later are picked up by name.
"""
import json
import os
import subprocess
import sys

import pytest

from testbed.modrun import run_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYROOT = os.path.join(ROOT, ".build", "pyroot")
MODULES = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                 if n.endswith(".py") and not n.startswith("_"))
#: options a module needs that its documentation does not mark as required (a one-of choice)
EXTRA_ARGS = {"docker_registry_layer": {"index": 0}}


@pytest.fixture(scope="module")
def docs():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=PYROOT)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "--json", "-t", "module"]
                         + ["hocker.registry." + m for m in MODULES], capture_output=True, text=True, env=env,
                         check=True).stdout
    return {name.split(".")[-1]: entry["doc"] for name, entry in json.loads(out).items()}


@pytest.fixture(scope="module")
def material(registry_anonymous, seeded, tmp_path_factory):
    """Values for required options: an image, a scratch directory, an archive."""
    ref = seeded(registry_anonymous)["docker-simple"].image(registry_anonymous.host)
    base = tmp_path_factory.mktemp("stdout")
    archive = str(base / "archive.tar")
    result = run_module("docker_registry_image", {"image": ref, "dest": archive})
    assert result["rc"] == 0, result
    return {"image": ref, "base": base, "archive": archive}


def derived_args(module, doc, material, tag):
    args = dict(EXTRA_ARGS.get(module, {}))
    for name, option in (doc.get("options") or {}).items():
        if not option.get("required"):
            continue
        if name == "image":
            args[name] = material["image"]
        elif name == "src":
            args[name] = material["archive"]
        elif option.get("type") == "path" or name in ("dest", "path"):
            args[name] = str(material["base"] / ("%s-%s-%s" % (module, name, tag)))
        else:
            pytest.fail("%s: no value for its required option %s: add one to EXTRA_ARGS" % (module, name))
    return args


def assert_json_only(result, what):
    text = result["stdout_raw"]
    assert text.strip(), "%s printed nothing on stdout (stderr: %s)" % (what, result["stderr"][-2000:])
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        pytest.fail("%s printed more than its JSON result on stdout (%s):\n%s" % (what, exc, text[:3000]))
    assert isinstance(parsed, dict), text[:500]
    return parsed


@pytest.mark.parametrize("module", MODULES)
def test_stdout_is_one_json_document(module, docs, material):
    assert module in docs, "ansible-doc has no documentation for %s" % module
    # a failure: no arguments at all
    failed = assert_json_only(run_module(module, {}), module + " without arguments")
    assert failed.get("failed") is True and failed.get("msg")
    # check mode with the required options
    assert_json_only(run_module(module, derived_args(module, docs[module], material, "check"), check=True),
                     module + " in check mode")
    # a real run, for the modules that only read registries and write their dest
    if module.startswith("docker_registry_"):
        done = assert_json_only(run_module(module, derived_args(module, docs[module], material, "run")),
                                module + " for real")
        assert not done.get("failed"), done
