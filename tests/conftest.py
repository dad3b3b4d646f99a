"""Shared pytest set-up: make the collection importable as ansible_collections.hocker.registry and the
test bed importable as ``testbed``.

``testbed.fixtures`` imports the real registries (bcrypt, PyJWT, cryptography) only inside the fixtures that
start one, so that the unit tests run with tests/unit/requirements.txt alone."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYROOT = os.path.join(ROOT, ".build", "pyroot")


def _ensure_pyroot():
    coll = os.path.join(PYROOT, "ansible_collections", "hocker")
    link = os.path.join(coll, "registry")
    if not os.path.islink(link):
        os.makedirs(coll, exist_ok=True)
        try:
            os.symlink(ROOT, link)
        except FileExistsError:
            pass


_ensure_pyroot()
for p in (PYROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)
pytest_plugins = ["testbed.fixtures"]
