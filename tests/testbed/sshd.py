"""A private OpenSSH server on a loopback port, and an Ansible inventory of N hosts reached through it.

``SSHServer(workdir=None, hosts=3, port=0, python=None, detach=False)`` runs Debian's ``/usr/sbin/sshd``
(package ``openssh-server``) with everything in ``workdir``: its own host key, a client key generated for the
tests, its own ``AuthorizedKeysFile`` (``StrictModes no``), ``PidFile``, log and configuration. Nothing
outside ``workdir`` is read or written except ``/run/sshd`` (the privilege separation directory sshd insists
on, created when missing); the system's sshd, ``/etc/ssh`` and ``~/.ssh`` are never used.

Every host of the inventory (``host1`` .. ``hostN``) is this one server (``ansible_host=127.0.0.1``,
``ansible_port=<port>``, ``ansible_user=root``, ``ansible_connection=ssh``), each with its own:

- ``hocker_store_dir`` (a blob store path) and ``hocker_dest_dir`` (a directory for archives), both created;
- ``ansible_remote_tmp`` (so that the files Ansible puts on a host stay in ``workdir`` and per host);
- ``ansible_control_path_dir`` (so that each host gets its own ssh connection, as different machines would,
  instead of all of them sharing one multiplexed connection to 127.0.0.1).

Attributes: ``.port``, ``.host`` (127.0.0.1), ``.client_key``, ``.known_hosts``, ``.ssh_config`` (a client
configuration naming ``host1`` .. ``hostN``: ``ssh -F <ssh_config> host2 true`` works), ``.inventory``
(the YAML inventory path), ``.hosts`` (names), ``.host_dir(name)``, ``.store_dir(name)``, ``.dest_dir(name)``,
``.tmp_dir(name)``, ``.pid``, ``.log`` (sshd's log).

``.ssh(name, command, input=None)`` runs a command on a host with the plain ssh client (CompletedProcess).
``.sessions()`` lists the pids of sshd's per-connection processes (to cut connections in tests).

``detach=True`` starts sshd in its own session (it survives this process; used by ``cli.py sshd up``);
otherwise it is stopped when this process exits at the latest. ``state()`` / ``SSHServer.from_state()``.

Command line (also ``python tests/testbed/cli.py sshd ...``)::

    python tests/testbed/sshd.py up [--hosts N] [--workdir DIR] [--state PATH]   # prints the inventory path
    python tests/testbed/sshd.py status [--state PATH]
    python tests/testbed/sshd.py down [--state PATH]
"""
import argparse
import atexit
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref

SSHD = "/usr/sbin/sshd"          # sshd must be started by its absolute path (it re-executes itself)
PRIVSEP_DIR = "/run/sshd"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_STATE = os.path.join(ROOT, ".build", "testbed", "sshd-state.json")
DEFAULT_WORKDIR = os.path.join(ROOT, ".build", "testbed", "sshd")

_live = weakref.WeakSet()


@atexit.register
def _stop_all():
    for server in list(_live):
        try:
            server.stop()
        except Exception:  # pylint: disable=broad-except
            pass


def _free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _yaml_str(value):
    return json.dumps(value)   # a JSON string is a YAML string


class SSHServer(object):
    def __init__(self, workdir=None, hosts=3, port=0, python=None, detach=False, bind="127.0.0.1", user="root"):
        if hosts < 1:
            raise ValueError("hosts must be at least 1")
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(workdir) if workdir else None
        self.nhosts = hosts
        self.bind = bind
        self.user = user
        self._want_port = port
        self.port = None
        self.python = python or sys.executable
        self.detach = detach
        self._proc = None
        self._attached_pid = None

    # ---- paths ---------------------------------------------------------------------------------------
    def _path(self, *parts):
        return os.path.join(self.workdir, *parts)

    @property
    def host(self):
        return self.bind

    @property
    def host_key(self):
        return self._path("ssh_host_ed25519_key")

    @property
    def client_key(self):
        return self._path("client_ed25519")

    @property
    def authorized_keys(self):
        return self._path("authorized_keys")

    @property
    def known_hosts(self):
        return self._path("known_hosts")

    @property
    def sshd_config(self):
        return self._path("sshd_config")

    @property
    def ssh_config(self):
        return self._path("ssh_config")

    @property
    def inventory(self):
        return self._path("inventory.yml")

    @property
    def pidfile(self):
        return self._path("sshd.pid")

    @property
    def log(self):
        return self._path("sshd.log")

    @property
    def hosts(self):
        return ["host%d" % i for i in range(1, self.nhosts + 1)]

    def host_dir(self, name):
        return self._path("hosts", name)

    def store_dir(self, name):
        return os.path.join(self.host_dir(name), "store")

    def dest_dir(self, name):
        return os.path.join(self.host_dir(name), "dest")

    def tmp_dir(self, name):
        return os.path.join(self.host_dir(name), "tmp")

    def control_dir(self, name):
        # unix socket paths are limited to 108 bytes: ssh's %C hash is 40 characters
        base = self._path("cp")
        if len(base) > 48:
            base = "/tmp/hkssh-" + hashlib.sha256(self.workdir.encode()).hexdigest()[:12]
        return os.path.join(base, name)

    @property
    def pid(self):
        if self._attached_pid is not None:
            return self._attached_pid
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self):
        pid = self.pid
        return pid is not None and _pid_alive(pid) and (self._proc is None or self._proc.poll() is None)

    # ---- life cycle ----------------------------------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if self.running:
            return self
        if not os.path.exists(SSHD):
            raise RuntimeError("%s not found (apt-get install openssh-server)" % SSHD)
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="hocker-sshd-")
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        if not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, 0o755)
        self._keys()
        for name in self.hosts:
            for d in (self.store_dir(name), self.dest_dir(name), self.tmp_dir(name), self.control_dir(name)):
                os.makedirs(d, exist_ok=True)
            os.chmod(self.control_dir(name), 0o700)
        for attempt in range(5):
            self.port = self._want_port or _free_port(self.bind)
            self._write_config()
            try:
                self._spawn()
                self._wait_ready()
                break
            except _PortInUse:
                if self._want_port or attempt == 4:
                    raise
        if not self.detach:
            _live.add(self)
        self._write_client_files()
        self._check_login()
        return self

    def _keys(self):
        for key in (self.host_key, self.client_key):
            if not os.path.exists(key):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hocker-testbed", "-f", key],
                               check=True, capture_output=True)
        with open(self.client_key + ".pub") as f:
            pub = f.read().strip()
        with open(self.authorized_keys, "w") as f:
            f.write(pub + "\n")
        os.chmod(self.authorized_keys, 0o600)

    def _write_config(self):
        lines = [
            "# written by tests/testbed/sshd.py: a private sshd for the tests",
            "Port %d" % self.port,
            "ListenAddress %s" % self.bind,
            "HostKey %s" % self.host_key,
            "PidFile %s" % self.pidfile,
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "AuthorizedPrincipalsFile none",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "IgnoreRhosts yes",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "UseDNS no",
            # Compression: OpenSSH's default (yes), which Ansible's default ssh_args (-C) ask for
            # each host of a fleet has its own connection, several of them at once
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
        ]
        with open(self.sshd_config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _spawn(self):
        log = open(self.log, "ab")
        self._log_offset = log.tell()
        try:
            # -D: no daemon (the pid is ours), -e: log to stderr (our log file)
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.sshd_config], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, cwd=self.workdir, close_fds=True,
                                          start_new_session=self.detach)
        finally:
            log.close()

    def _tail(self):
        try:
            with open(self.log, "rb") as f:
                f.seek(self._log_offset)
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                tail = self._tail()
                self._proc = None
                if "Address already in use" in tail:
                    raise _PortInUse(tail)
                raise RuntimeError("sshd exited with %s:\n%s" % (rc, tail))
            try:
                with socket.create_connection((self.bind, self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not answer on %s:%d:\n%s" % (self.bind, self.port, self._tail()))
            time.sleep(0.05)

    def _write_client_files(self):
        common = [
            "    HostName %s" % self.bind,
            "    Port %d" % self.port,
            "    User %s" % self.user,
            "    IdentityFile %s" % self.client_key,
            "    IdentitiesOnly yes",
            "    UserKnownHostsFile %s" % self.known_hosts,
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking no",
            "    BatchMode yes",
            "    LogLevel ERROR",
        ]
        with open(self.ssh_config, "w") as f:
            f.write("# written by tests/testbed/sshd.py\nHost %s\n%s\n" % (" ".join(self.hosts), "\n".join(common)))
        ssh_args = "-F %s -o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=no " \
                   "-o IdentitiesOnly=yes" % (self.ssh_config, self.known_hosts)
        out = ["# written by tests/testbed/sshd.py: every host is the private sshd on %s:%d" % (self.bind, self.port),
               "all:", "  vars:",
               "    ansible_connection: ssh",
               "    ansible_host: %s" % self.bind,
               "    ansible_port: %d" % self.port,
               "    ansible_user: %s" % self.user,
               "    ansible_ssh_private_key_file: %s" % _yaml_str(self.client_key),
               "    ansible_ssh_common_args: %s" % _yaml_str(ssh_args),
               "    ansible_python_interpreter: %s" % _yaml_str(self.python),
               "  hosts:"]
        for name in self.hosts:
            out += ["    %s:" % name,
                    "      hocker_store_dir: %s" % _yaml_str(self.store_dir(name)),
                    "      hocker_dest_dir: %s" % _yaml_str(self.dest_dir(name)),
                    "      ansible_remote_tmp: %s" % _yaml_str(self.tmp_dir(name)),
                    "      ansible_control_path_dir: %s" % _yaml_str(self.control_dir(name))]
        with open(self.inventory, "w") as f:
            f.write("\n".join(out) + "\n")

    def _check_login(self):
        proc = self.ssh(self.hosts[0], "true")
        if proc.returncode != 0:
            raise RuntimeError("cannot log in to the test sshd: %s\n%s"
                               % (proc.stderr.decode(errors="replace"), self._tail()))

    def ssh(self, name, command, input=None, timeout=120):
        """Run ``command`` on host ``name`` with the plain ssh client; returns the CompletedProcess."""
        return subprocess.run(["ssh", "-F", self.ssh_config, name, command], input=input, capture_output=True,
                              timeout=timeout, check=False)

    def sessions(self):
        """Pids of sshd's per-connection processes (children of the listener)."""
        pid = self.pid
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
        return found

    def reset_hosts(self, names=None):
        """Empty the store, dest and remote tmp directories of ``names`` (default: every host)."""
        for name in names or self.hosts:
            for d in (self.store_dir(name), self.dest_dir(name), self.tmp_dir(name)):
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)

    # ---- ansible-playbook ------------------------------------------------------------------------------
    def playbook_command(self, playbook, limit=None, check=False, extra_vars=None, forks=None, verbosity=0,
                         inventory=None):
        cmd = [os.path.join(os.path.dirname(self.python), "ansible-playbook"), "-i", inventory or self.inventory,
               playbook]
        if limit:
            cmd += ["--limit", limit if isinstance(limit, str) else ",".join(limit)]
        if check:
            cmd.append("--check")
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if forks:
            cmd += ["--forks", str(forks)]
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        return cmd

    def playbook_env(self, results_file, env=None):
        """Environment for ansible-playbook: this collection importable, every task result written as JSON
        lines to ``results_file`` (tests/testbed/callbacks/hocker_results.py)."""
        from testbed.modrun import ensure_pyroot
        full = dict(os.environ)
        full.update({
            "ANSIBLE_COLLECTIONS_PATH": ensure_pyroot(),
            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HERE, "callbacks"),
            "ANSIBLE_CALLBACKS_ENABLED": "hocker_results",
            "HOCKER_RESULTS_FILE": results_file,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCAL_TEMP": self._path("controller-tmp"),
        })
        full.update(env or {})
        return full

    def run_playbook(self, playbook, limit=None, check=False, extra_vars=None, env=None, forks=None, timeout=1800,
                     verbosity=0, inventory=None):
        """Run ``playbook`` (a path, or YAML text) against the inventory (or ``inventory``); returns a
        PlaybookRun."""
        if "\n" in playbook or not os.path.exists(playbook):
            fd, path = tempfile.mkstemp(dir=self.workdir, prefix="playbook-", suffix=".yml")
            with os.fdopen(fd, "w") as f:
                f.write(playbook)
            playbook = path
        fd, results = tempfile.mkstemp(dir=self.workdir, prefix="results-", suffix=".jsonl")
        os.close(fd)
        proc = subprocess.run(self.playbook_command(playbook, limit, check, extra_vars, forks, verbosity, inventory),
                              capture_output=True, env=self.playbook_env(results, env), timeout=timeout, check=False)
        return PlaybookRun(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                           proc.stderr.decode("utf-8", "replace"), results)

    def stop(self):
        pid = self.pid
        if pid is not None and _pid_alive(pid) and self._is_ours(pid):
            for child in self.sessions():
                _signal(child, signal.SIGTERM)
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pid_alive(pid):
                if self._proc is not None and self._proc.poll() is not None:
                    break
                time.sleep(0.05)
            if _pid_alive(pid):
                _signal(pid, signal.SIGKILL)
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        self._attached_pid = None
        _live.discard(self)
        if self.workdir:
            for name in self.hosts:
                shutil.rmtree(self.control_dir(name), ignore_errors=True)
            base = os.path.dirname(self.control_dir(self.hosts[0]))
            if base.startswith("/tmp/hkssh-"):
                shutil.rmtree(base, ignore_errors=True)
            if self._own_workdir and not self.detach:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _is_ours(self, pid):
        # sshd rewrites its title: "sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ..."
        cmd = b" ".join(_cmdline(pid))
        return b"sshd" in cmd and self.sshd_config.encode() in cmd

    # ---- state (CLI) -----------------------------------------------------------------------------------
    def state(self):
        return {"workdir": self.workdir, "hosts": self.nhosts, "port": self.port, "bind": self.bind,
                "user": self.user, "python": self.python, "pid": self.pid, "inventory": self.inventory,
                "ssh_config": self.ssh_config, "client_key": self.client_key}

    @classmethod
    def from_state(cls, st):
        server = cls(st["workdir"], hosts=st["hosts"], port=st["port"], python=st["python"], detach=True,
                     bind=st["bind"], user=st["user"])
        server.port = st["port"]
        server._attached_pid = st["pid"]
        return server


class _PortInUse(Exception):
    pass


class PlaybookRun(object):
    """The outcome of ``run_playbook``: ``rc``, ``stdout``, ``stderr`` and ``results`` (dicts with host, task,
    action, status, result)."""

    def __init__(self, rc, stdout, stderr, results_file):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.results = []
        with open(results_file) as f:
            for line in f:
                if line.strip():
                    self.results.append(json.loads(line))
        os.unlink(results_file)

    def result(self, host, task):
        """The last result of the task named ``task`` on ``host`` (KeyError when there is none)."""
        found = [r["result"] for r in self.results if r["host"] == host and r["task"] == task
                 and r["status"] in ("ok", "failed", "unreachable", "skipped")]
        if not found:
            raise KeyError("no result for task %r on %s" % (task, host))
        return found[-1]

    def status(self, host, task):
        """``ok``, ``failed``, ``skipped`` or ``unreachable``: the last outcome of ``task`` on ``host``."""
        found = [r["status"] for r in self.results if r["host"] == host and r["task"] == task
                 and r["status"] in ("ok", "failed", "unreachable", "skipped")]
        if not found:
            raise KeyError("no result for task %r on %s" % (task, host))
        return found[-1]

    def __repr__(self):
        return "<PlaybookRun rc=%d>\n%s\n%s" % (self.rc, self.stdout[-6000:], self.stderr[-3000:])


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ---- command line ---------------------------------------------------------------------------------------
def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def cmd_up(args):
    st = _load(args.state)
    if st:
        server = SSHServer.from_state(st)
        if server.running and server._is_ours(server.pid) and st["hosts"] == args.hosts:
            print("sshd: already up on %s:%d\ninventory: %s" % (server.bind, server.port, server.inventory))
            return 0
        server.stop()
    server = SSHServer(args.workdir, hosts=args.hosts, python=args.python, detach=True)
    server.start()
    os.makedirs(os.path.dirname(args.state), exist_ok=True)
    with open(args.state + ".tmp", "w") as f:
        json.dump(server.state(), f, indent=2, sort_keys=True)
    os.replace(args.state + ".tmp", args.state)
    print("sshd: started on %s:%d (pid %d), %d hosts\ninventory: %s" % (
        server.bind, server.port, server.pid, server.nhosts, server.inventory))
    return 0


def cmd_status(args):
    st = _load(args.state)
    if not st:
        print("sshd: not up (no state in %s)" % args.state)
        return 3
    server = SSHServer.from_state(st)
    ok = server.running and server._is_ours(server.pid) and server.ssh("host1", "true").returncode == 0
    print("sshd: %s on %s:%d pid=%s hosts=%d inventory=%s"
          % ("up" if ok else "DOWN", server.bind, server.port, server.pid, server.nhosts, server.inventory))
    return 0 if ok else 1


def cmd_down(args):
    st = _load(args.state)
    if st:
        server = SSHServer.from_state(st)
        server.stop()
        if args.remove and os.path.isdir(st["workdir"]):
            shutil.rmtree(st["workdir"], ignore_errors=True)
        os.unlink(args.state)
    print("sshd: stopped")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="sshd.py", description="the test bed's private sshd and its inventory")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "status", "down"):
        sp = sub.add_parser(name)
        sp.add_argument("--state", default=DEFAULT_STATE, help="state file (default %(default)s)")
        if name == "up":
            sp.add_argument("--hosts", type=int, default=3, help="inventory hosts (default %(default)s)")
            sp.add_argument("--workdir", default=DEFAULT_WORKDIR, help="keys, config, inventory and host "
                                                                       "directories (default %(default)s)")
            sp.add_argument("--python", default=sys.executable, help="the hosts' ansible_python_interpreter")
        if name == "down":
            sp.add_argument("--keep", dest="remove", action="store_false",
                            help="keep the work directory (inventory, host stores)")
    args = p.parse_args(argv)
    args.state = os.path.abspath(args.state)
    return {"up": cmd_up, "status": cmd_status, "down": cmd_down}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
