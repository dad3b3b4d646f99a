"""Start, inspect and stop long-running test registries (for ansible-test integration targets and by hand).

    python tests/testbed/cli.py up [--modes anonymous,basic,token,mtls] [--state PATH] [--seed]
                                   [--kinds k1,k2] [--config PATH]
    python tests/testbed/cli.py status [--state PATH]
    python tests/testbed/cli.py down [--state PATH]
    python tests/testbed/cli.py sshd up|status|down [...]   (the private sshd and its inventory: testbed/sshd.py)

``up`` starts the registries (and the token server) as detached processes, records them in the state file
(default ``.build/testbed/state.json``) and writes ``tests/integration/integration_config.yml``. Running
``up`` again keeps the registries that are still alive and only starts what is missing.
``status`` exits 0 when every recorded process is alive, 1 when some are gone, 3 when nothing is up.
"""
import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
# run as a script, sys.path[0] is this folder: import the package ``testbed`` instead of loose modules
if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
    sys.path.pop(0)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import requests  # noqa: E402

from testbed.registry import MODES, Registry  # noqa: E402

DEFAULT_STATE = os.path.join(ROOT, ".build", "testbed", "state.json")
DEFAULT_CONFIG = os.path.join(ROOT, "tests", "integration", "integration_config.yml")
VAR_PREFIX = "hocker_registry_"
_DROP = object()


# ---- helpers ---------------------------------------------------------------------------------
def _pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def _ours(pid, workdir):
    """True when ``pid`` is alive and is one of the processes we started for ``workdir``."""
    cmd = _pid_cmdline(pid)
    if not cmd or workdir not in cmd:
        return False
    if not ("docker-registry" in cmd or "tokenserver.py" in cmd):
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return False
    return True


def _entry_alive(entry):
    pids = entry.get("pids") or []
    return bool(pids) and all(_ours(p, entry["workdir"]) for p in pids)


def _entry_answers(entry):
    s = requests.Session()
    s.trust_env = False
    s.verify = entry["ca_path"] if entry["scheme"] == "https" else True
    if entry["mode"] == "mtls":
        s.cert = (entry["client_cert"], entry["client_key"])
    try:
        return s.get(entry["url"] + "/v2/", timeout=5).status_code in (200, 401)
    except requests.RequestException:
        return False
    finally:
        s.close()


def _kill(entry):
    pids = [p for p in (entry.get("pids") or []) if _ours(p, entry["workdir"])]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_ours(p, entry["workdir"]) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if _ours(p, entry["workdir"]):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def load_state(path):
    if not os.path.exists(path):
        return {"registries": {}}
    with open(path) as f:
        return json.load(f)


def _write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _clean(value):
    """JSON-able view of seeded image info (raw bytes and built objects are left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            c = _clean(v)
            if c is not _DROP:
                out[str(k)] = c
        return out if out or not value else _DROP
    if isinstance(value, (list, tuple)):
        out = [c for c in (_clean(v) for v in value) if c is not _DROP]
        return out if out or not value else _DROP
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return _DROP


def _var(*parts):
    return VAR_PREFIX + "_".join(re.sub(r"[^a-z0-9]+", "_", str(p).lower()).strip("_") for p in parts)


def integration_vars(state):
    """Flat variables for ansible-test integration targets."""
    out = {VAR_PREFIX + "modes": sorted(state["registries"])}
    for mode, e in sorted(state["registries"].items()):
        for key, name in (("host", "host"), ("url", "url"), ("ca_path", "ca"), ("client_cert", "client_cert"),
                          ("client_key", "client_key"), ("username", "username"), ("password", "password"),
                          ("realm", "realm")):
            if e.get(key) is not None:
                out[_var(mode, name)] = e[key]
        for kind, info in sorted((e.get("images") or {}).items()):
            if info.get("repository"):
                out[_var(mode, "image", kind, "ref")] = "%s/%s:%s" % (e["host"], info["repository"], info.get("tag"))
                out[_var(mode, "image", kind, "ref_by_digest")] = "%s/%s@%s" % (
                    e["host"], info["repository"], info.get("digest"))
            for key, val in info.items():
                out[_var(mode, "image", kind, key)] = val
            platforms = info.get("platforms") or {}
            for plat, p in platforms.items():
                for key in ("manifest_digest", "config_digest"):
                    if key in p:
                        out[_var(mode, "image", kind, plat, key)] = p[key]
    return out


def write_integration_config(state, path):
    lines = ["# written by tests/testbed/cli.py up; removed by cli.py down", "---"]
    for k, v in integration_vars(state).items():
        lines.append("%s: %s" % (k, json.dumps(v, sort_keys=True)))  # JSON values are YAML
    _write_atomic(path, "\n".join(lines) + "\n")


# ---- commands --------------------------------------------------------------------------------
def cmd_up(args):
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            sys.exit("unknown mode %r (known: %s)" % (m, ", ".join(MODES)))
    state = load_state(args.state)
    regs = state.setdefault("registries", {})
    base = os.path.join(os.path.dirname(os.path.abspath(args.state)), "registries")
    started = {}
    for mode in modes:
        e = regs.get(mode)
        if e and _entry_alive(e) and _entry_answers(e):
            print("%s: already up at %s" % (mode, e["url"]))
            continue
        if e:
            _kill(e)
        workdir = os.path.join(base, mode)
        shutil.rmtree(workdir, ignore_errors=True)
        reg = Registry(mode, workdir=workdir, detach=True)
        try:
            reg.start()
        except Exception:
            reg.stop()
            for r in started.values():
                r.stop()
            raise
        started[mode] = reg
        regs[mode] = reg.state()
        print("%s: started at %s" % (mode, reg.url))
        # record as we go, so that `down` finds whatever got started even if a later step fails
        _write_atomic(args.state, json.dumps(state, indent=2, sort_keys=True))
    if args.seed:
        if not os.path.exists(os.path.join(HERE, "builder.py")):
            sys.exit("--seed: tests/testbed/builder.py does not exist")
        from testbed.builder import seed
        kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else None
        for mode in modes:
            e = regs[mode]
            if e.get("images") and mode not in started and (kinds is None or set(kinds) <= set(e["images"])):
                continue
            reg = started.get(mode) or Registry.from_state(e)
            infos = seed(reg, kinds=kinds)
            images = dict(e.get("images") or {})
            for kind, info in infos.items():
                data = _clean(info)
                data.pop("built", None)  # the builder's internal objects
                images[kind] = data
            e["images"] = images
            print("%s: seeded %s" % (mode, ", ".join(sorted(infos))))
    _write_atomic(args.state, json.dumps(state, indent=2, sort_keys=True))
    write_integration_config(state, args.config)
    print("state: %s\nintegration config: %s" % (args.state, args.config))
    return 0


def cmd_status(args):
    state = load_state(args.state)
    regs = state.get("registries") or {}
    if not regs:
        print("not up (no state in %s)" % args.state)
        return 3
    rc = 0
    for mode, e in sorted(regs.items()):
        ok = _entry_alive(e) and _entry_answers(e)
        rc = rc if ok else 1
        extra = (" realm=%s" % e["realm"]) if e.get("realm") else ""
        print("%-10s %-5s %s%s pids=%s images=%d" % (mode, "up" if ok else "DOWN", e["url"], extra, e.get("pids"),
                                                     len(e.get("images") or {})))
    return rc


def cmd_down(args):
    state = load_state(args.state)
    for mode, e in sorted((state.get("registries") or {}).items()):
        _kill(e)
        print("%s: stopped" % mode)
        if e.get("workdir") and os.path.isdir(e["workdir"]):
            shutil.rmtree(e["workdir"], ignore_errors=True)
    for p in (args.state, args.config):
        if os.path.exists(p):
            os.unlink(p)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "sshd":
        from testbed.sshd import main as sshd_main
        return sshd_main(argv[1:])
    p = argparse.ArgumentParser(prog="cli.py", description="hocker test bed registries")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status"):
        sp = sub.add_parser(name)
        sp.add_argument("--state", default=DEFAULT_STATE, help="state file (default %(default)s)")
        sp.add_argument("--config", default=DEFAULT_CONFIG, help="integration config (default %(default)s)")
        if name == "up":
            sp.add_argument("--modes", default=",".join(MODES))
            sp.add_argument("--seed", action="store_true", help="push the builder's images (testbed.builder.seed)")
            sp.add_argument("--kinds", default=None, help="comma-separated image kinds to seed (default: builder's)")
    args = p.parse_args(argv)
    args.state = os.path.abspath(args.state)
    args.config = os.path.abspath(args.config)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
