"""meta/execution-environment.yml works with ansible-builder (offline: no image is built).

* ``ansible-builder create`` accepts tests/ee/execution-environment.yml, an execution environment that
  installs the collection built from this checkout, and writes a build context that installs it;
* ansible-builder's introspection (what the image build runs to collect requirements) reads the installed
  collection's meta/execution-environment.yml and finds every requirement of meta/ee-requirements.txt.
"""
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def run(*cmd, cwd=None):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(cmd), proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


def test_ansible_builder_create_and_introspect(tmp_path):
    with open(os.path.join(ROOT, "galaxy.yml")) as f:
        galaxy = yaml.safe_load(f)
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), ROOT)
    tarball = tmp_path / ("%s-%s-%s.tar.gz" % (galaxy["namespace"], galaxy["name"], galaxy["version"]))
    assert tarball.is_file()

    # ansible-builder create with the test definition, the tarball beside it
    ee_dir = tmp_path / "ee"
    ee_dir.mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "ee", "execution-environment.yml"), str(ee_dir))
    shutil.copy(str(tarball), str(ee_dir / "hocker-registry.tar.gz"))
    context = tmp_path / "context"
    run(os.path.join(BIN, "ansible-builder"), "create", "-f", str(ee_dir / "execution-environment.yml"),
        "-c", str(context), "--output-filename", "Containerfile")
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect" in containerfile                     # the build collects the collection's requirements
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements["collections"] == [{"name": "collections/hocker-registry.tar.gz", "type": "file"}]
    assert (context / "_build" / "collections" / "hocker-registry.tar.gz").read_bytes() == tarball.read_bytes()

    # the introspection of the installed collection
    collections = tmp_path / "collections"
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections),
        str(tarball))
    found = yaml.safe_load(run(os.path.join(BIN, "ansible-builder"), "introspect", "--sanitize", str(collections)))
    python = [line.split("#")[0].strip() for line in found["python"]]
    with open(os.path.join(ROOT, "meta", "ee-requirements.txt")) as f:
        wanted = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert wanted and python == wanted, found
    assert all("from collection hocker.registry" in line for line in found["python"])
