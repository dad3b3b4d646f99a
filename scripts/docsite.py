"""The guides in docs/*.md, as antsibull-docs extra docs (docs/docsite/rst/*.rst) for the docs site.

The Markdown files in ``docs/`` are the one source of the guides (GitHub shows them, the README links them).
antsibull-docs only takes reStructuredText extra docs under ``docs/docsite/rst/`` with labels named
``ansible_collections.hocker.registry.docsite.*``, so this script converts each guide when the site or the
collection artifact is built; the converted files are never committed.

    python scripts/docsite.py rst COLLECTION_ROOT

writes ``COLLECTION_ROOT/docs/docsite/rst/<guide>.rst`` for every ``docs/*.md`` of the repository and adds the
guides that ``docs/docsite/extra-docs.yml`` does not list to a section "More guides" of
``COLLECTION_ROOT/docs/docsite/extra-docs.yml`` (so a new guide is never left out of the site).

Conversion rules (the subset of CommonMark + tables the guides use):

* the first level-1 heading is the document title; every heading gets a label
  ``<document label>.<GitHub anchor>`` so ``other.md#some-heading`` links become ``:ref:`` links;
* links to another guide (``other.md``, ``other.md#anchor``, ``#anchor``) become ``:ref:`` links, links to
  other repository files point to the repository named in galaxy.yml, absolute URLs stay as they are;
* a paragraph made of one image becomes an ``image`` directive whose path is relative to the site's source
  root (the docs step copies ``docs/images`` there);
* fenced code keeps its language (``yaml`` is rendered as YAML+Jinja, unknown ones as text);
* tables become ``list-table`` directives;
* raw HTML is refused, except comments, which are dropped.

Anything it cannot convert is an error naming the file and line: the docs step fails rather than render a
broken page.

    python scripts/docsite.py inventory OUT.inv

writes a Sphinx inventory of the docs.ansible.com pages that generated plugin pages link to (the reference
appendices antsibull-docs' templates name, and every ansible.builtin module, lookup, filter and test of the
installed ansible-core), so the site builds offline with every such link resolved (intersphinx would
download that inventory).
"""
import json
import os
import re
import subprocess
import sys
import zlib

import yaml
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
COLLECTION = "hocker.registry"
LABEL_PREFIX = "ansible_collections.%s.docsite." % COLLECTION
MORE_GUIDES = "More guides"


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key, as yamllint (ansible-lint) wants them."""

    def increase_indent(self, flow=False, indentless=False):
        return super(_IndentedDumper, self).increase_indent(flow, False)


ADORNMENTS = {1: "=", 2: "-", 3: "~", 4: "^", 5: '"', 6: "'"}
LEXERS = {
    "yaml": "yaml+jinja", "yml": "yaml+jinja", "yaml+jinja": "yaml+jinja", "json": "json", "bash": "bash",
    "sh": "bash", "shell": "bash", "console": "console", "nix": "nix", "python": "python", "ini": "ini",
    "text": "text", "": "text", "diff": "diff", "toml": "toml", "dockerfile": "docker",
}
# characters after which (and before which) reStructuredText inline markup may start (and end)
MARKUP_BEFORE = set(" \n\t-:/'\"<([{")
MARKUP_AFTER = set(" \n\t-.,:;!?\\/'\")]}>")


class ConversionError(Exception):
    pass


def guide_label(stem):
    return LABEL_PREFIX + stem.replace("-", "_")


def github_anchor(text):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text, flags=re.UNICODE)
    return text.replace(" ", "-")


def plain_text(node):
    """The text of an inline node and its children, without markup."""
    if node.type in ("text", "code_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    return "".join(plain_text(child) for child in node.children)


def escape(text):
    return re.sub(r"([\\`*_|])", r"\\\1", text)


def headings_of(tree):
    """[(level, plain title, anchor)] with GitHub's de-duplication (-1, -2, ...)."""
    seen = {}
    out = []
    for node in tree.walk():
        if node.type != "heading":
            continue
        title = plain_text(node.children[0]) if node.children else ""
        base = github_anchor(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append((int(node.tag[1]), title, base if n == 0 else "%s-%d" % (base, n)))
    return out


class Converter:
    """One Markdown guide to reStructuredText."""

    def __init__(self, path, guides, repository):
        self.path = path
        self.stem = os.path.splitext(os.path.basename(path))[0]
        self.label = guide_label(self.stem)
        self.guides = guides              # stem -> set of anchors
        self.repository = repository.rstrip("/") if repository else None
        self.heading_index = 0
        self.headings = []
        self.line = None                  # line of the block being converted (inline nodes have none)

    # ----------------------------------------------------------------------------------------- errors
    def fail(self, node, message):
        line = node.map[0] + 1 if getattr(node, "map", None) else (self.line or "?")
        raise ConversionError("%s:%s: %s" % (os.path.relpath(self.path, ROOT), line, message))

    # ----------------------------------------------------------------------------------------- links
    def anchor_label(self, stem, anchor, node):
        if stem not in self.guides:
            self.fail(node, "link to %s.md, which is not a guide in docs/" % stem)
        if not anchor:
            return guide_label(stem)
        if anchor not in self.guides[stem]:
            self.fail(node, "link to %s.md#%s: no heading of %s.md has that anchor" % (stem, anchor, stem))
        return "%s.%s" % (guide_label(stem), anchor)

    def link(self, node):
        href = node.attrs.get("href", "")
        text = plain_text(node).strip() or href
        if re.match(r"^[a-z][a-z0-9+.-]*:", href):
            return "`%s <%s>`__" % (escape(text).replace("<", "\\<"), href)
        target, anchor = (href.split("#", 1) + [""])[:2]
        if not target:
            return ":ref:`%s <%s>`" % (escape(text).replace("<", "\\<"), self.anchor_label(self.stem, anchor, node))
        resolved = os.path.normpath(os.path.join(os.path.dirname(self.path), target))
        if os.path.dirname(resolved) == DOCS and resolved.endswith(".md"):
            stem = os.path.splitext(os.path.basename(resolved))[0]
            return ":ref:`%s <%s>`" % (escape(text).replace("<", "\\<"), self.anchor_label(stem, anchor, node))
        relative = os.path.relpath(resolved, ROOT)
        if relative.startswith(".."):
            self.fail(node, "link %s leaves the repository" % href)
        if not os.path.exists(resolved):
            self.fail(node, "link %s: %s does not exist" % (href, relative))
        if not self.repository:
            return escape(text)
        kind = "tree" if os.path.isdir(resolved) else "blob"
        url = "%s/%s/main/%s%s" % (self.repository, kind, relative, ("#" + anchor) if anchor else "")
        return "`%s <%s>`__" % (escape(text).replace("<", "\\<"), url)

    # ----------------------------------------------------------------------------------------- inline
    def inline(self, node):
        """Render the children of an ``inline`` node as one string."""
        pieces = []   # (is_markup, text)
        for child in node.children:
            pieces.extend(self.inline_piece(child))
        out = ""
        for i, (is_markup, text) in enumerate(pieces):
            if not text:
                continue
            if is_markup and out and out[-1] not in MARKUP_BEFORE:
                out += "\\ "
            elif not is_markup and i > 0 and pieces[i - 1][0] and text[0] not in MARKUP_AFTER:
                out += "\\ "
            out += text
        return out

    def inline_piece(self, child):
        t = child.type
        if t == "text":
            return [(False, escape(child.content))]
        if t == "softbreak":
            return [(False, "\n")]
        if t == "hardbreak":
            self.fail(child, "hard line breaks have no reStructuredText equivalent here")
        if t == "code_inline":
            content = child.content
            if "``" in content or content != content.strip() or not content:
                self.fail(child, "inline code %r cannot be written as a reStructuredText literal" % content)
            return [(True, "``%s``" % content)]
        if t in ("strong", "em"):
            mark = "**" if t == "strong" else "*"
            text = escape(plain_text(child)).strip()
            return [(True, "%s%s%s" % (mark, text, mark))] if text else []
        if t == "link":
            return [(True, self.link(child))]
        if t == "image":
            self.fail(child, "an image inside a paragraph (put it in a paragraph of its own)")
        if t == "html_inline":
            if child.content.startswith("<!--"):
                return []
            self.fail(child, "inline HTML %r" % child.content)
        self.fail(child, "unsupported inline element %s" % t)
        return []

    # ----------------------------------------------------------------------------------------- blocks
    def blocks(self, nodes, indent=""):
        out = []
        for node in nodes:
            text = self.block(node, indent)
            if text is not None:
                out.append(text)
        return "\n\n".join(out)

    def block(self, node, indent):
        t = node.type
        if node.map:
            self.line = node.map[0] + 1
        if t == "heading":
            return self.heading(node, indent)
        if t == "paragraph":
            inline = node.children[0]
            if len(inline.children) == 1 and inline.children[0].type == "image":
                return self.image(inline.children[0], indent)
            return self.indent(self.inline(inline), indent)
        if t in ("bullet_list", "ordered_list"):
            return self.listing(node, indent)
        if t in ("fence", "code_block"):
            lang = (node.info or "").strip().split(" ")[0].lower() if t == "fence" else ""
            lexer = LEXERS.get(lang, "text")
            body = node.content.rstrip("\n")
            lines = [".. code-block:: %s" % lexer, ""]
            lines += [("   " + line) if line.strip() else "" for line in body.split("\n")]
            return self.indent("\n".join(lines), indent)
        if t == "blockquote":
            return self.blocks(node.children, indent + "    ")
        if t == "table":
            return self.table(node, indent)
        if t == "hr":
            return indent + "----"
        if t == "html_block":
            if node.content.strip().startswith("<!--") and node.content.strip().endswith("-->"):
                return None
            self.fail(node, "raw HTML block")
        self.fail(node, "unsupported block element %s" % t)
        return None

    @staticmethod
    def indent(text, indent):
        return "\n".join((indent + line) if line.strip() else "" for line in text.split("\n"))

    def heading(self, node, indent):
        if indent:
            self.fail(node, "a heading inside a list or quote")
        level, title, anchor = self.headings[self.heading_index]
        self.heading_index += 1
        text = self.inline(node.children[0]).replace("\n", " ")
        if level == 1 and self.heading_index == 1:
            label = self.label
        else:
            label = "%s.%s" % (self.label, anchor)
            level = max(level, 2)
        rule = ADORNMENTS[level] * max(len(text), 3)
        return ".. _%s:\n\n%s\n%s" % (label, text, rule)

    def image(self, node, indent):
        src = node.attrs.get("src", "")
        if re.match(r"^[a-z]+:", src):
            self.fail(node, "remote image %s" % src)
        resolved = os.path.normpath(os.path.join(os.path.dirname(self.path), src))
        if not os.path.isfile(resolved):
            self.fail(node, "image %s does not exist" % src)
        relative = os.path.relpath(resolved, DOCS)
        if relative.startswith(".."):
            self.fail(node, "image %s is outside docs/" % src)
        alt = plain_text(node).replace("\n", " ").strip()
        lines = [".. image:: /%s" % relative.replace(os.sep, "/")]
        if alt:
            lines.append("   :alt: %s" % alt)
        return self.indent("\n".join(lines), indent)

    def listing(self, node, indent):
        items = []
        start = int(node.attrs.get("start", 1) or 1)
        for n, item in enumerate(node.children):
            marker = "-" if node.type == "bullet_list" else "%d." % (start + n)
            pad = " " * (len(marker) + 1)
            body = self.blocks(item.children, "")
            lines = body.split("\n")
            text = marker + " " + lines[0] + "".join("\n" + ((pad + line) if line.strip() else "") for line in lines[1:])
            items.append(self.indent(text, indent))
        # items separated by a blank line whenever one of them has several blocks (keeps nested lists valid)
        loose = any(len(item.children) > 1 for item in node.children)
        return ("\n\n" if loose else "\n").join(items)

    def table(self, node, indent):
        rows = []
        header_rows = 0
        for section in node.children:
            for row in section.children:
                cells = [self.inline(cell.children[0]).replace("\n", " ") if cell.children else "" for cell in row.children]
                rows.append(cells)
                if section.type == "thead":
                    header_rows += 1
        width = max(len(r) for r in rows)
        lines = [".. list-table::"]
        if header_rows:
            lines.append("   :header-rows: %d" % header_rows)
        lines.append("")
        for cells in rows:
            cells = cells + [""] * (width - len(cells))
            for i, cell in enumerate(cells):
                lead = "   * - " if i == 0 else "     - "
                lines.append((lead + cell).rstrip() if cell else lead.rstrip())
        return self.indent("\n".join(lines), indent)

    # ----------------------------------------------------------------------------------------- document
    def convert(self, text):
        md = MarkdownIt("commonmark").enable("table")
        tree = SyntaxTreeNode(md.parse(text))
        self.headings = headings_of(tree)
        if not self.headings or self.headings[0][0] != 1:
            raise ConversionError("%s: the guide must start with a level-1 heading (its title)" % self.path)
        if any(level == 1 for level, _t, _a in self.headings[1:]):
            raise ConversionError("%s: only one level-1 heading (the title) is allowed" % self.path)
        body = self.blocks(tree.children)
        header = ("..\n   Generated by scripts/docsite.py from docs/%s.md: edit that file, not this one.\n\n"
                  % self.stem)
        return header + body + "\n"


def read_guides():
    """{stem: path} of docs/*.md (the guides; docs/dev/ holds developer notes, not guides)."""
    out = {}
    for name in sorted(os.listdir(DOCS)):
        if name.endswith(".md"):
            out[name[:-3]] = os.path.join(DOCS, name)
    return out


def convert_all(dest_root):
    guides = read_guides()
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        repository = (yaml.safe_load(f) or {}).get("repository")
    anchors = {}
    md = MarkdownIt("commonmark").enable("table")
    for stem, path in guides.items():
        with open(path, encoding="utf-8") as f:
            anchors[stem] = {a for _l, _t, a in headings_of(SyntaxTreeNode(md.parse(f.read())))}
    rst_dir = os.path.join(dest_root, "docs", "docsite", "rst")
    os.makedirs(rst_dir, exist_ok=True)
    for name in os.listdir(rst_dir):
        if name.endswith(".rst"):
            with open(os.path.join(rst_dir, name), encoding="utf-8") as f:
                if "Generated by scripts/docsite.py" in f.read(200):
                    os.unlink(os.path.join(rst_dir, name))
    for stem, path in guides.items():
        with open(path, encoding="utf-8") as f:
            text = Converter(path, anchors, repository).convert(f.read())
        with open(os.path.join(rst_dir, stem.replace("-", "_") + ".rst"), "w", encoding="utf-8") as f:
            f.write(text)
    # extra-docs.yml: every guide listed once; the unlisted ones go to "More guides"
    index_path = os.path.join(dest_root, "docs", "docsite", "extra-docs.yml")
    index = {"sections": []}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            index = yaml.safe_load(f) or {"sections": []}
    docnames = {stem.replace("-", "_"): stem for stem in guides}
    listed = set()
    for section in index.get("sections") or []:
        for entry in section.get("toctree") or []:
            ref = entry["ref"] if isinstance(entry, dict) else entry
            if ref not in docnames:
                raise ConversionError("docs/docsite/extra-docs.yml lists %s, which is no guide in docs/ (a guide "
                                      "docs/foo-bar.md is listed as foo_bar)" % ref)
            listed.add(docnames[ref])
    missing = [stem for stem in guides if stem not in listed]
    if missing:
        index.setdefault("sections", []).append({
            "title": MORE_GUIDES,
            "toctree": [stem.replace("-", "_") for stem in missing],
        })
        for stem in missing:
            print("docsite: docs/%s.md is not listed in docs/docsite/extra-docs.yml: added to '%s'"
                  % (stem, MORE_GUIDES))
    with open(index_path, "w", encoding="utf-8") as f:
        f.write("---\n")
        yaml.dump(index, f, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False)
    print("docsite: %d guides converted into %s" % (len(guides), os.path.relpath(rst_dir, dest_root)))


ANSIBLE_DOCS = "https://docs.ansible.com/projects/ansible/devel/"
# labels of the Ansible docsite that antsibull-docs' page templates refer to: (label, page#anchor, title)
ANSIBLE_LABELS = [
    ("common_return_values", "reference_appendices/common_return_values.html#common-return-values",
     "Return Values"),
    ("ansible_configuration_settings", "reference_appendices/config.html#ansible-configuration-settings",
     "Ansible Configuration Settings"),
    ("list_of_collections", "collections/index.html#list-of-collections", "Collection Index"),
    ("action_plugins", "plugins/action.html#action-plugins", "Action plugins"),
    ("callback_plugins", "plugins/callback.html#callback-plugins", "Callback plugins"),
    ("list_of_callback_plugins", "collections/index_callback.html#list-of-callback-plugins",
     "Index of all Callback Plugins"),
    ("collections_keyword", "collections_guide/collections_using_playbooks.html#collections-keyword",
     "Simplifying module names with the collections keyword"),
]


def write_inventory(out):
    entries = list(ANSIBLE_LABELS)
    for plugin_type in ("module", "lookup", "filter", "test"):
        listing = subprocess.run(["ansible-doc", "--list", "--json", "-t", plugin_type], check=True,
                                 capture_output=True, text=True).stdout
        for fqcn in sorted(json.loads(listing)):
            if not fqcn.startswith("ansible.builtin."):
                continue
            name = fqcn.split(".")[-1]
            label = "ansible_collections.%s_%s" % (fqcn, plugin_type)
            anchor = re.sub(r"[^a-z0-9]+", "-", label.lower())
            entries.append((label, "collections/ansible/builtin/%s_%s.html#%s" % (name, plugin_type, anchor),
                            "%s %s" % (fqcn, plugin_type)))
    body = "".join("%s std:label -1 %s %s\n" % (label, uri, title) for label, uri, title in entries)
    with open(out, "wb") as f:
        f.write(b"# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n"
                b"# The remainder of this file is compressed using zlib.\n")
        f.write(zlib.compress(body.encode("utf-8")))
    print("docsite: %d docs.ansible.com labels in %s" % (len(entries), out))


def main(argv):
    if len(argv) != 3 or argv[1] not in ("rst", "inventory"):
        sys.stderr.write(__doc__)
        return 2
    try:
        if argv[1] == "rst":
            convert_all(os.path.abspath(argv[2]))
        else:
            write_inventory(argv[2])
    except ConversionError as exc:
        sys.stderr.write("docsite: ERROR: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
