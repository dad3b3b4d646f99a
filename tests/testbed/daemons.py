"""Start and stop a private dockerd and/or containerd in the background (for integration targets and molecule).

    python tests/testbed/daemons.py up --workdir DIR [--dockerd] [--containerd]
    python tests/testbed/daemons.py status --workdir DIR
    python tests/testbed/daemons.py down --workdir DIR [--keep]

``up`` starts the daemons of ``testbed.loaders`` as detached processes (``--dockerd`` starts dockerd with its
own containerd, so ``--containerd`` is then implied), waits until they answer, records them in
``DIR/daemons.json`` and prints that JSON:

    {"workdir": DIR,
     "dockerd": {"pid": N, "socket": PATH, "host": "unix://PATH", "runtime_args": ["-H", "unix://PATH"]},
     "containerd": {"pid": N, "socket": PATH, "runtime_args": ["--address", PATH]}}

``down`` stops exactly the recorded processes (checked by their command line), dockerd first, and removes DIR
unless ``--keep``. ``status`` exits 0 when every recorded daemon is alive, 1 otherwise. DIR should be short:
unix socket paths are limited to 108 bytes.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
    sys.path.pop(0)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from testbed.loaders import PrivateContainerd, PrivateDockerd  # noqa: E402

STATE = "daemons.json"


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def _ours(pid, workdir):
    cmd = _cmdline(pid)
    if not cmd or workdir not in cmd:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _state_path(workdir):
    return os.path.join(workdir, STATE)


def load_state(workdir):
    path = _state_path(workdir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write(workdir, state):
    tmp = _state_path(workdir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(tmp, _state_path(workdir))


def cmd_up(args):
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    state = load_state(workdir) or {"workdir": workdir}
    if all(state.get(k) and _ours(state[k]["pid"], workdir) for k in _wanted(args)):
        print(json.dumps(state, sort_keys=True))
        return 0
    _stop(state, workdir)
    state = {"workdir": workdir}
    try:
        if args.dockerd:
            daemon = PrivateDockerd(os.path.join(workdir, "docker"))
            daemon.start()   # a daemon that does not become ready is stopped by start() itself
            state["dockerd"] = {"pid": daemon.proc.pid, "socket": daemon.socket, "host": "unix://" + daemon.socket,
                                "runtime_args": ["-H", "unix://" + daemon.socket]}
            containerd = daemon.containerd
        else:
            containerd = PrivateContainerd(os.path.join(workdir, "containerd")).start()
        state["containerd"] = {"pid": containerd.proc.pid, "socket": containerd.socket,
                               "runtime_args": ["--address", containerd.socket]}
    finally:
        _write(workdir, state)
    print(json.dumps(state, sort_keys=True))
    return 0


def _wanted(args):
    return ["dockerd", "containerd"] if args.dockerd else ["containerd"]


def _stop(state, workdir):
    for key in ("dockerd", "containerd"):
        entry = state.get(key)
        if not entry or not _ours(entry["pid"], workdir):
            continue
        pid = entry["pid"]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _ours(pid, workdir):
            time.sleep(0.1)
        if _ours(pid, workdir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cmd_status(args):
    workdir = os.path.abspath(args.workdir)
    state = load_state(workdir)
    if not state:
        print("not up (no %s in %s)" % (STATE, workdir))
        return 1
    rc = 0
    for key in ("dockerd", "containerd"):
        if key in state:
            alive = _ours(state[key]["pid"], workdir)
            rc = rc if alive else 1
            print("%-10s %-4s pid=%s socket=%s" % (
                key, "up" if alive else "DOWN", state[key]["pid"], state[key]["socket"]))
    return rc


def cmd_down(args):
    workdir = os.path.abspath(args.workdir)
    state = load_state(workdir)
    if state:
        _stop(state, workdir)
    if not args.keep and os.path.isdir(workdir):
        shutil.rmtree(workdir, ignore_errors=True)
    print("stopped")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="daemons.py", description="private dockerd / containerd for tests")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "status", "down"):
        sp = sub.add_parser(name)
        sp.add_argument("--workdir", required=True, help="directory of the daemons (keep it short)")
        if name == "up":
            sp.add_argument("--dockerd", action="store_true", help="start dockerd (with its own containerd)")
            sp.add_argument("--containerd", action="store_true", help="start containerd (implied by --dockerd)")
        if name == "down":
            sp.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    if args.cmd == "up" and not (args.dockerd or args.containerd):
        p.error("up: give --dockerd and/or --containerd")
    return {"up": cmd_up, "status": cmd_status, "down": cmd_down}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
