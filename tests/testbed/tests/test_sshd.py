"""Self-tests of the test bed's private sshd (testbed/sshd.py): logging in with the generated key, the
inventory of hosts reached through it (one ssh connection per host), the CLI, and that the user's own ssh
files are left alone."""
import json
import os
import subprocess
import sys

from testbed.sshd import SSHServer

CLI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli.py")
USER_SSH = os.path.expanduser("~/.ssh")


def _listing(path):
    if not os.path.isdir(path):
        return None
    return sorted((name, os.stat(os.path.join(path, name)).st_mtime_ns) for name in os.listdir(path))


def test_login_and_inventory(sshd_server):
    server = sshd_server
    assert server.running and server.port
    proc = server.ssh("host2", "echo $USER")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["root"]
    # the host key the client recorded is the private server's
    with open(server.known_hosts) as f:
        recorded = f.read()
    with open(server.host_key + ".pub") as f:
        assert f.read().split()[1] in recorded

    inventory = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i",
                                server.inventory, "--list"], capture_output=True, check=True)
    data = json.loads(inventory.stdout)
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == ["host1", "host2", "host3"]
    for name, hv in hostvars.items():
        assert hv["ansible_host"] == "127.0.0.1" and hv["ansible_port"] == server.port
        assert hv["ansible_connection"] == "ssh" and hv["ansible_user"] == "root"
        assert hv["hocker_store_dir"] == server.store_dir(name) and os.path.isdir(hv["hocker_store_dir"])
        assert hv["hocker_dest_dir"] == server.dest_dir(name) and os.path.isdir(hv["hocker_dest_dir"])
        assert hv["ansible_python_interpreter"] == sys.executable


def test_playbook_over_ssh(sshd_server, tmp_path):
    before = _listing(USER_SSH)
    server = sshd_server
    server.reset_hosts()
    playbook = json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "marker", "ansible.builtin.copy": {"content": "{{ inventory_hostname }}\n",
                                                    "dest": "{{ hocker_dest_dir }}/marker"}},
        {"name": "requests", "ansible.builtin.command": "{{ ansible_python_interpreter }} -c 'import requests'",
         "changed_when": False},
    ]}])
    run = server.run_playbook(playbook)
    assert run.rc == 0, run
    for name in server.hosts:
        assert run.result(name, "marker")["changed"] is True
        with open(os.path.join(server.dest_dir(name), "marker")) as f:
            assert f.read() == name + "\n"
        # each host got its own multiplexed connection
        assert os.listdir(server.control_dir(name)), name
        # Ansible's files went to the host's own remote tmp directory, and were removed
        assert os.listdir(server.tmp_dir(name)) == []
    assert _listing(USER_SSH) == before


def test_cli_up_status_down(tmp_path):
    before = _listing(USER_SSH)
    state = str(tmp_path / "state.json")
    workdir = str(tmp_path / "sshd")
    base = [sys.executable, CLI, "sshd"]
    up = subprocess.run(base + ["up", "--hosts", "2", "--workdir", workdir, "--state", state], capture_output=True,
                        check=False)
    try:
        assert up.returncode == 0, up.stderr
        assert "inventory: %s/inventory.yml" % workdir in up.stdout.decode()
        with open(state) as f:
            st = json.load(f)
        assert st["hosts"] == 2
        status = subprocess.run(base + ["status", "--state", state], capture_output=True, check=False)
        assert status.returncode == 0 and b" up " in status.stdout, status.stdout
        server = SSHServer.from_state(st)
        assert server.ssh("host2", "true").returncode == 0
    finally:
        down = subprocess.run(base + ["down", "--state", state], capture_output=True, check=False)
    assert down.returncode == 0, down.stderr
    assert not os.path.exists(state) and not os.path.exists(workdir)
    assert not SSHServer.from_state(st).running
    status = subprocess.run(base + ["status", "--state", state], capture_output=True, check=False)
    assert status.returncode == 3
    assert _listing(USER_SSH) == before
