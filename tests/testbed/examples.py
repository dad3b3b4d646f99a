"""Run the collection's documented examples against the test bed.

Every EXAMPLES block of a module or plugin (``plugins/<type>/<name>.py``) and every YAML code block of a role
README (``roles/<role>/README.md``) is collected, rewritten so that it reaches the local test registries
instead of the registries it names, and run with ``ansible-playbook``. What is rewritten, and nothing else:

* image references (``image:`` values anywhere, entries of image lists: ``keep`` of docker_registry_store,
  ``images`` of store_sync, a role's ``image_deploy_images``, and every reference given to
  ``hocker.registry.image_digest``) and registry URLs (``registry:`` values, ``registry_mirrors`` entries,
  ``registry=`` of the lookup): the registry part is replaced by a test registry, the repository, tag and
  separate ``tag:`` stay as written. Docker Hub and loopback registries become the anonymous (plain http)
  registry; a registry host that an example gives credentials for (``username``/``password`` beside its
  ``registry`` or ``image``, beside a list of images that are all on that registry, or in a lookup call)
  becomes the basic-auth TLS registry (literal credentials replaced by the test bed's); any other host
  (``ghcr.io``, ``reg.example.com``...) becomes the token registry (anonymous bearer tokens, as ghcr.io and
  Docker Hub hand out; it refuses the basic registry's credentials, as a real registry refuses another's). A
  digest pinned in a reference is replaced by the digest of the image the test bed pushed under that name;
* absolute paths under ``/srv``, ``/var``, ``/opt``, ``/data``, ``/mnt``, ``/home``, ``/run`` and ``/tmp``
  move into a scratch directory (so do paths in shell commands and ``unix://`` addresses); a containerd or
  docker socket (``/run/k3s/containerd/containerd.sock``, ``unix:///var/run/docker.sock``) becomes the socket
  of the test bed's daemon when the caller gives ``Rewriter.sockets``;
* plays target ``localhost`` (``connection: local``), which the inventory (:func:`inventory`) puts in every
  group the plays named.

Variables an example uses without defining them (the play would have them from the inventory, a vault or an
earlier play) get values in ``Rewriter.variables``, by their name: a credential (``registry_password``,
``vault_registry_password``, ``registry_username``...) is the basic registry's, a list of images
(``deployed_images``) the references of the images the example names, one image (``app_image``) the first.
Other undefined variables stay undefined: the example fails and says which.

The environment gives what a real host would have set up once: stored credentials for the basic registry
(``DOCKER_CONFIG``), its CA in the user's certs.d directory (``HOME``), a private dockerd (``DOCKER_HOST``),
containerd (``CONTAINERD_ADDRESS``) and podman storage (``CONTAINERS_STORAGE_CONF``) when an example uses
them. Every repository an example names is pushed to its registry first: a multi-platform OCI index
(linux/amd64, linux/arm64/v8, linux/arm/v7 and an attestation) under the tag it names.

Files an example reads without making them first (``manifest:`` of docker_registry_nix) are made by a task
inserted before it, from the same image options.
"""
import ast
import copy
import os
import re

import yaml
from jinja2 import Environment, TemplateSyntaxError, nodes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION = "hocker.registry"

HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
PATH_ROOTS = ("srv", "var", "opt", "data", "mnt", "home", "run", "tmp")
_PATH_RE = re.compile(r"(?:(?<=unix://)|(?<![\w./:${}-]))/(%s)(?=/)" % "|".join(PATH_ROOTS))
_LOOKUP_RE = re.compile(r"""\b(?:lookup|query|q)\(\s*(['"])hocker\.registry\.image_digest\1\s*,""")
_STRING_RE = re.compile(r"""^(\s*)(['"])([^'"]*)\2(\s*)$""")
_KEYWORD_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)(.*)$", re.S)
# a runtime's socket (after the path rewriting): the test bed's daemon when it has one of that kind
_SOCKET_RE = re.compile(r"""(unix://)?/[^\s'",\]]*?/(containerd|docker)\.sock(?![\w.-])""")
_DIGEST_RE = re.compile(r"@sha256:[0-9a-fA-F]{64}")
CREDENTIAL_KEYS = ("username", "password")


# ------------------------------------------------------------------------------------------ collecting
class Example:
    """One runnable example: ``kind`` (module, lookup, role...), ``name``, ``tasks`` or ``plays`` (parsed
    YAML), ``source`` (file and block for messages)."""

    def __init__(self, kind, name, text, source, index=0):
        self.kind = kind
        self.name = name
        self.text = text
        self.source = source
        self.index = index

    @property
    def id(self):
        return "%s:%s" % (self.kind, self.name) + ("#%d" % self.index if self.index else "")

    def __repr__(self):
        return "Example(%s)" % self.id


def _examples_of_plugin(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXAMPLES" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    return None


def _yaml_blocks(markdown):
    """The ```yaml fenced blocks of a Markdown text: [(first line number, text)]."""
    out = []
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*(yaml|yml)\b", lines[i])
        if m:
            fence, start, body = m.group(2), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][len(m.group(1)):])
                i += 1
            out.append((start, "\n".join(body)))
        i += 1
    return out


def collect(root=ROOT):
    """Every example of the collection at ``root``: module, plugin and role README examples."""
    out = []
    plugins = os.path.join(root, "plugins")
    for ptype in sorted(os.listdir(plugins)) if os.path.isdir(plugins) else []:
        if ptype in ("module_utils", "doc_fragments", "plugin_utils"):
            continue
        directory = os.path.join(plugins, ptype)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".py") or name.startswith("_"):
                continue
            text = _examples_of_plugin(os.path.join(directory, name))
            if text and text.strip():
                kind = "module" if ptype == "modules" else ptype.rstrip("s")
                out.append(Example(kind, name[:-3], text, "plugins/%s/%s" % (ptype, name)))
    roles = os.path.join(root, "roles")
    for role in sorted(os.listdir(roles)) if os.path.isdir(roles) else []:
        readme = os.path.join(roles, role, "README.md")
        if not os.path.isfile(readme):
            continue
        with open(readme, encoding="utf-8") as f:
            blocks = _yaml_blocks(f.read())
        for n, (line, text) in enumerate(blocks, 1):
            data = yaml.safe_load(text)
            if not isinstance(data, list):
                continue    # a variables or inventory snippet, not something to run
            out.append(Example("role", role, text, "roles/%s/README.md line %d" % (role, line), n))
    return out


def is_playbook(data):
    return isinstance(data, list) and bool(data) and all(
        isinstance(p, dict) and ("hosts" in p or "import_playbook" in p or "ansible.builtin.import_playbook" in p)
        for p in data)


# ------------------------------------------------------------------------------------------ references
def split_reference(ref):
    """(registry or None, rest) the way distribution/reference splits a name: the first component is a
    registry when it has a dot or a colon or is ``localhost``."""
    name = ref
    if "/" in name:
        first, rest = name.split("/", 1)
        if "." in first or ":" in first or first == "localhost" or first.startswith("["):
            return first, rest
    return None, name


def host_of_url(url):
    m = re.match(r"^(?:([a-z]+)://)?([^/]+)(/.*)?$", url.strip())
    if not m:
        return None, None, None
    return m.group(1), m.group(2), m.group(3) or ""


def is_loopback(host):
    h = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return h in ("localhost", "[::1]") or h.startswith("127.")


class Registries:
    """The test registries the examples are rewritten to, by mode: objects with ``host``, ``url``,
    ``username``, ``password``, ``ca_path`` (testbed.registry.Registry)."""

    def __init__(self, anonymous, basic, token):
        self.by_mode = {"anonymous": anonymous, "basic": basic, "token": token}

    def __getitem__(self, mode):
        return self.by_mode[mode]


class Rewriter:
    """Rewrites one example (see the module docstring). ``wanted`` collects (mode, repository, tag) of every
    image the rewritten example names, for the caller to push first; ``digests`` maps a rewritten
    repository ``(mode, repository)`` to the digest pushed there (filled by the caller before ``apply``
    when references pin digests); ``sockets`` maps a runtime (``containerd``, ``docker``) to the socket of
    the test bed's daemon (set by the caller before ``apply`` when it gives one). After ``apply``,
    ``variables`` holds the values of the variables the example uses without defining them; after
    :func:`finish`, ``groups`` the inventory groups its plays target."""

    def __init__(self, registries, scratch):
        self.registries = registries
        self.scratch = scratch.rstrip("/")
        self.credential_hosts = set()
        self.wanted = []          # [(mode, repository, tag)]
        self.references = []      # the rewritten references of self.wanted (registry/repository:tag)
        self.digests = {}         # (mode, repository) -> digest
        self.sockets = {}         # runtime -> socket path of the test bed's daemon
        self.directories = set()  # parent directories of the rewritten paths (a host would have them)
        self.variables = {}       # name -> value for the variables the example expects from the play
        self.groups = set()       # the inventory groups the example's plays target (see inventory())

    # -- analysis ------------------------------------------------------------------------------------
    def scan(self, data):
        """Find the registry hosts that the example gives credentials for: the registry (or the image's
        registry) of a dict or a lookup call that has ``username``/``password``. Credentials given with
        a list of images count only when those images are all on one registry (the modules send them to
        every registry of the list: an example mixing registries is wrong and fails as it would)."""
        for d in _dicts(data):
            keys = _base_keys(d)
            if not any(b in CREDENTIAL_KEYS for b in keys.values()):
                continue
            listed = set()
            for k, b in keys.items():
                host = None
                if b == "registry" and isinstance(d[k], str):
                    host = host_of_url(d[k])[1]
                elif b == "image" and isinstance(d[k], str):
                    host = split_reference(_static_part(d[k]))[0]
                elif b in LIST_OPTIONS and isinstance(d[k], list):
                    for item in d[k]:
                        value = item.get("image") if isinstance(item, dict) else item
                        if isinstance(value, str) and _static_part(value):
                            listed.add(split_reference(_static_part(value))[0])
                if host:
                    self.credential_hosts.add(host)
            if len(listed) == 1 and not any(b == "registry" for b in keys.values()):
                host = listed.pop()
                if host and host not in HUB_HOSTS:
                    self.credential_hosts.add(host)
        for s in _strings(data):
            for call in _lookup_calls(s):
                positional, keywords = _lookup_arguments(s, call)
                if not any(k in keywords for k in CREDENTIAL_KEYS):
                    continue
                registry = _literal(s, keywords.get("registry"))
                if registry:
                    self.credential_hosts.add(host_of_url(registry)[1])
                    continue
                for span in positional:
                    ref = _literal(s, span)
                    host = split_reference(ref)[0] if ref else None
                    if host:
                        self.credential_hosts.add(host)

    def mode_of(self, host):
        if host is None or host in HUB_HOSTS or is_loopback(host):
            return "anonymous"
        if host in self.credential_hosts:
            return "basic"
        return "token"

    # -- rewriting -----------------------------------------------------------------------------------
    def reference(self, ref, tag=None):
        """Rewrite an image reference (without a registry option); keeps a Jinja suffix untouched."""
        static, rest = _static_prefix(ref)
        if not static:
            return ref
        host, path = split_reference(static)
        mode = self.mode_of(host)
        if host is None or host in HUB_HOSTS:
            if "/" not in path.split("@")[0].split(":")[0]:
                path = "library/" + path
        new = "%s/%s" % (self.registries[mode].host, path)
        self._want(mode, path, tag, complete=not rest)
        return self._pin(new, mode, path) + rest

    def registry_url(self, url):
        scheme, host, path = host_of_url(url)
        if host is None or "{{" in url:
            return url
        mode = self.mode_of(host)
        reg = self.registries[mode]
        return reg.url.rstrip("/") + (path if path in ("/v2", "/v2/") else "")

    def _want(self, mode, path, tag, complete=True):
        name = path.split("@")[0]
        repo, sep, ref_tag = name.rpartition(":")
        if not sep or "/" in ref_tag:
            repo, ref_tag = name, None
        ref_tag = ref_tag or tag or ("latest" if complete else None)
        if "{{" in repo:
            return
        if not ref_tag or "{{" in ref_tag:
            ref_tag = "latest"
        self.wanted.append((mode, repo, ref_tag))
        self.references.append("%s/%s:%s" % (self.registries[mode].host, repo, ref_tag))

    def _pin(self, ref, mode, path):
        if not _DIGEST_RE.search(ref):
            return ref
        repo = path.split("@")[0]
        repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
        digest = self.digests.get((mode, repo))
        return _DIGEST_RE.sub("@" + digest, ref) if digest else ref

    def apply(self, data):
        """Rewrite parsed example data in place (see the module docstring); returns the rewritten data."""
        self.scan(data)
        self._walk(data, None)
        data = _map_strings(data, self.string)
        self.variables = self.expected_variables(data)
        return data

    def _image(self, value, registry_mode, tag):
        """One image value: a reference, or a repository path below a dict that names a registry."""
        static = _static_part(value)
        if registry_mode is not None and split_reference(static)[0] is None:
            if static:
                self._want(registry_mode, static, tag, complete="{{" not in value)
            return value
        return self.reference(value, tag)

    def _walk(self, node, registry_mode):
        """Rewrite the dicts of ``node``; ``registry_mode`` is set below a dict that names a registry (its
        images are paths on that registry: a role's ``image_deploy_registry`` with its ``image_deploy_images``)."""
        if isinstance(node, list):
            for value in node:
                self._walk(value, registry_mode)
            return
        if not isinstance(node, dict):
            return
        keys = _base_keys(node)
        for k, b in keys.items():
            if b == "registry" and isinstance(node[k], str) and node[k].strip():
                registry_mode = self.mode_of(host_of_url(node[k])[1])
                node[k] = self.registry_url(node[k])
        tag = next((node[k] for k, b in keys.items() if b == "tag" and isinstance(node[k], str)), None)
        basic = self.registries["basic"]
        for k, b in keys.items():
            value = node[k]
            if b == "image" and isinstance(value, str):
                node[k] = self._image(value, registry_mode, tag)
            elif b in LIST_OPTIONS and isinstance(value, list):
                node[k] = [self._image(v, registry_mode, None) if isinstance(v, str) else v for v in value]
            elif b == "registry_mirrors" and isinstance(value, list):
                node[k] = [self.registries["anonymous"].url if isinstance(u, str) else u for u in value]
            elif b == "username" and isinstance(value, str):
                node[k] = basic.username
            elif b == "password" and isinstance(value, str):
                node[k] = basic.password
        for value in node.values():
            if isinstance(value, (dict, list)):
                self._walk(value, registry_mode)

    def string(self, s):
        s = _PATH_RE.sub(lambda m: "%s/%s" % (self.scratch, m.group(1)), s)
        if self.sockets:
            s = _SOCKET_RE.sub(self._socket, s)
        for token in re.findall(re.escape(self.scratch) + r"/[^\s'\"]*", s):
            self.directories.add(os.path.dirname(token.split("{{")[0]))
        if "image_digest" in s:
            for call in reversed(list(_lookup_calls(s))):
                s = self._lookup_call(s, call)
        return s

    def _socket(self, m):
        socket = self.sockets.get(m.group(2))
        return (m.group(1) or "") + socket if socket else m.group(0)

    def _lookup_call(self, s, call):
        """Rewrite one image_digest lookup call of ``s``: its references (the positional arguments), its
        ``registry=`` and literal ``username=``/``password=``; returns the new ``s``."""
        positional, keywords = _lookup_arguments(s, call)
        registry = _literal(s, keywords.get("registry"))
        mode = self.mode_of(host_of_url(registry)[1]) if registry else None
        basic = self.registries["basic"]
        edits = []      # (span, new literal)
        for span in positional:
            ref = _literal(s, span)
            if ref is None:
                continue
            if mode is not None:
                self._want(mode, ref, None)
            else:
                edits.append((span, self.reference(ref)))
        for name, new in (("registry", self.registry_url(registry) if registry else None),
                          ("username", basic.username), ("password", basic.password)):
            if new is not None and _literal(s, keywords.get(name)) is not None:
                edits.append((keywords[name], new))
        for (start, end), new in sorted(edits, reverse=True):
            m = _STRING_RE.match(s[start:end])
            s = s[:start] + m.group(1) + m.group(2) + new + m.group(2) + m.group(4) + s[end:]
        return s

    # -- variables -----------------------------------------------------------------------------------
    def expected_variables(self, data):
        """Values for the variables the example uses but does not define (a real play would get them from
        the inventory, a vault or an earlier play): credentials (``registry_password``,
        ``vault_registry_password``, ``registry_username``...) are the basic registry's, a list of images
        (``deployed_images``) is the images the example names, one image (``app_image``) the first."""
        used, defined = _variables(data)
        out = {}
        for name in sorted(used - defined):
            value = self._value_for(name)
            if value is not None:
                out[name] = value
        return out

    def _value_for(self, name):
        low = name.lower()
        if low.startswith(("ansible_", "become")) or low in _PLAY_NAMES:
            return None
        basic = self.registries["basic"]
        if re.search(r"(pass|passwd|password|secret)$", low):
            return basic.password
        if re.search(r"(user|username|login)$", low):
            return basic.username
        references = sorted(set(self.references), key=self.references.index)
        if low.endswith("images") and references:
            return references
        if low.endswith("image") and references:
            return references[0]
        return None


_PLAY_NAMES = ("item", "omit", "hostvars", "groups", "group_names", "inventory_hostname", "play_hosts")

#: list options whose entries are image references (or dicts with an ``image``): the role's images, the
#: store's ``keep``, the ``images`` of store_sync
LIST_OPTIONS = ("images", "keep")
_OPTION_KEYS = ("registry_mirrors", "registry", "username", "password", "image", "tag") + LIST_OPTIONS


def _base_keys(d):
    """{key: the option it stands for} for the keys of ``d`` that are image options, also with a prefix
    (a role's ``image_deploy_registry`` stands for ``registry``)."""
    out = {}
    for key in d:
        if not isinstance(key, str):
            continue
        for option in _OPTION_KEYS:
            if key == option or key.endswith("_" + option):
                out[key] = option
                break
    return out


def _static_part(value):
    return _static_prefix(value)[0]


def _static_prefix(value):
    """("ghcr.io/o/app", "@{{ x }}") for "ghcr.io/o/app@{{ x }}": the part before any Jinja, minus a
    trailing ``@`` or ``:`` that introduces the templated part."""
    i = value.find("{{")
    if i < 0:
        return value.strip(), ""
    static = value[:i]
    rest = value[i:]
    while static and static[-1] in "@:":
        rest = static[-1] + rest
        static = static[:-1]
    return static.strip(), rest


def _dicts(data):
    if isinstance(data, dict):
        yield data
        for v in data.values():
            yield from _dicts(v)
    elif isinstance(data, list):
        for v in data:
            yield from _dicts(v)


def _strings(data):
    if isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)
    elif isinstance(data, str):
        yield data


def _closing(s, i, closer=")"):
    """Index of the bracket that closes the one opened just before ``s[i]`` (quotes respected), or None."""
    depth, quote = 0, None
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                return i if c == closer else None
            depth -= 1
        i += 1
    return None


def _lookup_calls(s):
    """(start, end) of the arguments after the plugin name of every image_digest lookup/query call in ``s``."""
    for m in _LOOKUP_RE.finditer(s):
        end = _closing(s, m.end())
        if end is not None:
            yield m.end(), end


def _lookup_arguments(s, call):
    """([span of each positional argument], {keyword: span of its value}) of one call (spans index ``s``)."""
    start, end = call
    spans, depth, quote, begin = [], 0, None, start
    i = start
    while i < end:
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            spans.append((begin, i))
            begin = i + 1
        i += 1
    spans.append((begin, end))
    positional, keywords = [], {}
    for a, b in spans:
        m = _KEYWORD_RE.match(s[a:b])
        if m:
            keywords[m.group(1)] = (a + m.start(2), b)
        elif s[a:b].strip():
            positional.append((a, b))
    return positional, keywords


def _literal(s, span):
    """The text of a string literal that is the whole of ``s[span]``, else None."""
    if span is None:
        return None
    m = _STRING_RE.match(s[span[0]:span[1]])
    return m.group(3) if m else None


_JINJA = Environment()
#: keys whose value is a bare Jinja expression
_CONDITIONALS = ("when", "failed_when", "changed_when", "until", "that")
_SET_FACT = ("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact")


def _variables(data):
    """(names the example's templates read, names it defines: vars, set_fact, register, loop_var)."""
    used, defined = set(), set()

    def template(text):
        try:
            tree = _JINJA.parse(text)
        except TemplateSyntaxError:
            return
        for name in tree.find_all(nodes.Name):
            (used if name.ctx == "load" else defined).add(name.name)

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("vars", "defaults") + _SET_FACT and isinstance(value, dict):
                    defined.update(k for k in value if isinstance(k, str))
                elif key in ("register", "loop_var") and isinstance(value, str):
                    defined.add(value)
                elif key in _CONDITIONALS:
                    for cond in value if isinstance(value, list) else [value]:
                        if isinstance(cond, str) and "{{" not in cond:
                            template("{{ %s }}" % cond)
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
        elif isinstance(node, str) and ("{{" in node or "{%" in node):
            template(node)

    visit(data)
    return used, defined


def _map_strings(data, fn):
    if isinstance(data, dict):
        return {k: _map_strings(v, fn) for k, v in data.items()}
    if isinstance(data, list):
        return [_map_strings(v, fn) for v in data]
    if isinstance(data, str):
        return fn(data)
    return data


# ------------------------------------------------------------------------------------------ playbooks
INPUT_PRODUCERS = {
    # (module, option): the module that makes that input from the same image options, and its option for it
    ("docker_registry_nix", "manifest"): ("docker_registry_manifest", "dest"),
}
IMAGE_OPTIONS = ("image", "registry", "tag", "platform", "username", "password", "token", "docker_config",
                 "validate_certs", "ca_path", "client_cert", "client_key")


def _module_of(task):
    for key in task:
        if key.startswith(COLLECTION + "."):
            return key[len(COLLECTION) + 1:], key
    return None, None


def add_input_tasks(tasks):
    """Insert, before a task that reads an input file nobody made, a task making it."""
    out = []
    made = set()
    for task in tasks:
        if not isinstance(task, dict):
            out.append(task)
            continue
        short, key = _module_of(task)
        args = task.get(key) if key else None
        if isinstance(args, dict):
            for (module, option), (producer, producer_option) in INPUT_PRODUCERS.items():
                path = args.get(option)
                if short == module and isinstance(path, str) and path not in made:
                    new_args = {k: v for k, v in args.items() if k in IMAGE_OPTIONS}
                    new_args[producer_option] = path
                    out.append({"name": "(test bed) make the %s that the next example reads" % option,
                                "%s.%s" % (COLLECTION, producer): new_args})
                    made.add(path)
            for value in args.values():
                if isinstance(value, str) and value.startswith("/"):
                    made.add(value)
        out.append(task)
    return out


def to_playbook(example, data):
    """The example as a list of plays run on localhost."""
    if is_playbook(data):
        plays = data
    else:
        plays = [{"name": "Example %s (%s)" % (example.id, example.source), "hosts": "localhost",
                  "gather_facts": False, "tasks": data}]
    for play in plays:
        if "hosts" in play:
            play["hosts"] = "localhost"
            play["connection"] = "local"
        for section in ("pre_tasks", "tasks", "post_tasks"):
            if isinstance(play.get(section), list):
                play[section] = add_input_tasks(play[section])
    return plays


def groups_of(data):
    """The inventory groups the plays of ``data`` target (``hosts: k8s_nodes``, ``hosts: web:db``)."""
    out = set()
    if not is_playbook(data):
        return out
    for play in data:
        hosts = play.get("hosts")
        for part in re.split(r"[,:]", hosts) if isinstance(hosts, str) else []:
            name = part.strip().lstrip("&!")
            if re.match(r"^[A-Za-z_]\w*$", name) and name not in ("all", "ungrouped", "localhost"):
                out.add(name)
    return out


def inventory(groups):
    """An inventory where localhost (local connection) is in every group the example targets, so that
    ``groups['k8s_nodes']``, ``group_names`` and ``hostvars[groups['builders'][0]]`` work as on a fleet."""
    local = {"localhost": {"ansible_connection": "local"}}
    return {"all": {"hosts": local, "children": {g: {"hosts": {"localhost": None}} for g in sorted(groups)}}}


def uses(text, *words):
    return any(re.search(r"\b%s\b" % re.escape(w), text) for w in words)


def prepare(example, registries, scratch):
    """(playbook data, rewriter) for ``example``; the caller pushes ``rewriter.wanted`` and then calls
    :func:`finish` (digests known)."""
    data = yaml.safe_load(example.text)
    rewriter = Rewriter(registries, scratch)
    probe = copy.deepcopy(data)
    rewriter.apply(probe)          # first pass: which images are wanted (digests still unknown)
    return data, rewriter


def finish(example, data, rewriter):
    """The playbook to run; makes the directories the example's paths live in. Set ``rewriter.digests``
    and ``rewriter.sockets`` first; ``rewriter.variables`` then holds the extra variables to run it with."""
    rewriter.wanted = []
    rewriter.references = []
    rewriter.directories = set()
    data = rewriter.apply(data)
    for directory in rewriter.directories:
        os.makedirs(directory, exist_ok=True)
    rewriter.groups = groups_of(data)
    return to_playbook(example, data)
