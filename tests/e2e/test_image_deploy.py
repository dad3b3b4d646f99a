"""The image_deploy role, run by ansible-playbook against localhost and the test bed's anonymous registry: a
second image that shares base layers with a deployed one fetches only its own blobs (the registry's access
log shows it), a second run changes nothing and fetches nothing, prune removes what no image uses.

Loading into the runtimes is covered by the molecule scenarios (extensions/molecule) and the image_load
integration target; here the role runs with image_deploy_load: none.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from testbed.modrun import PYROOT, ensure_pyroot

PLAYBOOK = """
- name: Deploy
  hosts: localhost
  gather_facts: false
  roles:
    - role: hocker.registry.image_deploy
  post_tasks:
    - name: Keep what the fetch task returned
      ansible.builtin.copy:
        content: "{{ image_deploy__fetched | to_json }}"
        dest: "{{ results_file }}"
        mode: "0600"
      check_mode: false
      changed_when: false
"""


def run_role(tmp_path, variables, check=False):
    ensure_pyroot()
    play = tmp_path / "play.yml"
    play.write_text(PLAYBOOK)
    extra = tmp_path / "vars.json"
    results_file = tmp_path / "fetched.json"
    extra.write_text(json.dumps(dict(variables, results_file=str(results_file))))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=PYROOT, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
           str(play), "-e", "@" + str(extra)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    recap = re.search(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)", proc.stdout, re.M)
    assert recap, proc.stdout[-3000:]
    return int(recap.group(2)), json.loads(results_file.read_text())["results"]


def archive_name(image):
    """The role's file name for a registry-qualified image with a tag."""
    return image.replace("/", "_").replace(":", "_") + ".tar"


def blob_gets(registry):
    """Digests of the blobs the registry served (GET), in order."""
    found = []
    for r in registry.requests():
        m = re.search(r"/blobs/(sha256:[a-f0-9]{64})$", r["path"])
        if r["method"] == "GET" and m:
            found.append(m.group(1))
    return found


@pytest.fixture
def images(registry_anonymous, seeded):
    return seeded(registry_anonymous, kinds=["docker-simple", "shared-base"])


def test_shared_base_layers_are_fetched_once(tmp_path, registry_anonymous, images):
    reg = registry_anonymous
    simple, shared = images["docker-simple"], images["shared-base"]
    simple_p = simple.platforms["linux/amd64"]
    shared_p = shared.platforms["linux/amd64"]
    simple_layers = [layer["digest"] for layer in simple_p["layers"]]
    shared_layers = [layer["digest"] for layer in shared_p["layers"]]
    base = shared.extra["shared_layers"]
    assert set(base) < set(simple_layers) and set(base) < set(shared_layers)
    dest = tmp_path / "images"
    variables = {
        "image_deploy_images": [{"image": simple.image(reg.host)}],
        "image_deploy_dest": str(dest),
        "image_deploy_cache_dir": str(tmp_path / "store"),
        "image_deploy_load": "none",
        "image_deploy_prune": True,
    }
    (tmp_path / "ansible-tmp").mkdir()

    # 1. the first image: its config and every layer
    reg.clear_log()
    changed, _results = run_role(tmp_path, variables)
    assert changed == 2    # the directory and the archive
    assert sorted(blob_gets(reg)) == sorted([simple_p["config_digest"]] + simple_layers)
    archive_simple = dest / archive_name(simple.image(reg.host))
    before = archive_simple.stat()

    # 2. a second image on the same base: only its config and its own layer cross the network
    variables["image_deploy_images"].append({"image": shared.image(reg.host), "repo_tags": ["shared:1"]})
    reg.clear_log()
    changed, results = run_role(tmp_path, variables)
    assert changed == 1
    fetched = blob_gets(reg)
    own = [d for d in shared_layers if d not in base]
    assert sorted(fetched) == sorted([shared_p["config_digest"]] + own), fetched
    assert not set(fetched) & set(base)
    assert [r["changed"] for r in results] == [False, True]
    assert results[1]["cache_hits"] == len(base)
    assert archive_simple.stat().st_mtime == before.st_mtime      # the first archive was left alone
    assert (dest / "shared_1.tar").exists() is False               # the file is named after the image
    assert (dest / archive_name(shared.image(reg.host))).exists()

    # 3. the same inputs again: no change, no blob (check mode agrees)
    reg.clear_log()
    changed, _results = run_role(tmp_path, variables, check=True)
    assert changed == 0
    changed, results = run_role(tmp_path, variables)
    assert changed == 0
    assert [r["bytes_downloaded"] for r in results] == [0, 0]
    assert blob_gets(reg) == []
    assert reg.count("GET", r"/manifests/") == 0     # HEAD requests suffice to see nothing moved

    # 4. prune: the first image is dropped from the list, its archive goes, a foreign file stays, and the
    #    store keeps only what the second image uses (the shared base layers included)
    (dest / "notes.txt").write_text("not an archive")
    variables["image_deploy_images"] = variables["image_deploy_images"][1:]
    changed, _results = run_role(tmp_path, variables)
    assert changed == 2                     # the archive removed, the store pruned
    assert sorted(os.listdir(dest)) == sorted(["notes.txt", archive_name(shared.image(reg.host))])
    stored = set(os.listdir(str(tmp_path / "store" / "blobs" / "sha256")))
    assert set(d.split(":")[1] for d in shared_layers) <= stored
    assert not set(d.split(":")[1] for d in simple_layers if d not in shared_layers) & stored
    with open(str(tmp_path / "store" / "index.json")) as handle:
        names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in json.load(handle)["manifests"]]
    assert names and all(shared.repository in n for n in names), names
