"""Long downloads under Ansible's ``async``/``poll``: a task that outlives several polls finishes and returns
the module's whole result, both polled (``async: 120, poll: 2``) and fire-and-forget (``poll: 0`` then
``async_status``).

The image is 32 MiB in 5 gzip layers, served through a fault proxy that holds every layer for 3 seconds after
its first MiB, so the download spans several polls whatever the machine's speed.
"""
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from testbed import builder
from testbed.proxy import FaultProxy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYROOT = os.path.join(ROOT, ".build", "pyroot")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def big_image(registry_anonymous):
    obj, _extra = builder.build_kind("big", big_size=32 * MiB)
    builder.push_image(registry_anonymous.push_session(), registry_anonymous.url, "testbed-async/big", obj,
                       tags=["v1"])
    return obj


def test_image_download_under_async_and_poll(registry_anonymous, big_image, tmp_path):
    with FaultProxy(registry_anonymous.url) as proxy:
        proxy.add_rule("stall", method="GET", path=r"/blobs/sha256:", after_bytes=MiB, seconds=3)
        image = "%s/testbed-async/big:v1" % proxy.url.split("://", 1)[1]
        polled, background = str(tmp_path / "polled.tar"), str(tmp_path / "background.tar")
        play = [{
            "name": "Long downloads under async",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {"name": "Polled", "hocker.registry.docker_registry_image": {"image": image, "dest": polled},
                 "async": 120, "poll": 2, "register": "polled"},
                {"name": "Started in the background",
                 "hocker.registry.docker_registry_image": {"image": image, "dest": background},
                 "async": 120, "poll": 0, "register": "job"},
                {"name": "Waited for", "ansible.builtin.async_status": {"jid": "{{ job.ansible_job_id }}"},
                 "register": "waited", "until": "waited.finished", "retries": 120, "delay": 1},
                {"name": "Write both results",
                 "ansible.builtin.copy": {"content": "{{ {'polled': polled, 'waited': waited} | to_json }}",
                                          "dest": str(tmp_path / "results.json")}},
            ],
        }]
        playbook = tmp_path / "async.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        # the job files go to a directory of this test (an absolute path: "~" would be expanded once with
        # the HOME given here and once with the passwd entry's)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=PYROOT, HOME=str(tmp_path), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_ASYNC_DIR=str(tmp_path / "async"), ANSIBLE_LOCALHOST_WARNING="0",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
        proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                               str(playbook), "-e", "ansible_python_interpreter=" + sys.executable],
                              capture_output=True, text=True, env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("polled", "waited"):
        result = results[key]
        assert result["finished"] == 1 and not result.get("failed"), result
        assert result["changed"] is True
        assert result["digest"] == big_image.digest
        assert len(result["layers"]) == 5
        assert result["bytes_downloaded"] >= 32 * MiB
        # the download outlived the 2-second poll interval: Ansible polled it while it ran
        assert result["elapsed"] > 3, result["elapsed"]
    for path in (polled, background):
        with tarfile.open(path) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
            assert len(manifest[0]["Layers"]) == 5
            assert all(tar.getmember(layer).size > 6 * MiB for layer in manifest[0]["Layers"])
