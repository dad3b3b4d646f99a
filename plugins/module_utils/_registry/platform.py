# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Platforms (os/arch/variant) and their selection from an image index, following containerd's rules.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import platform as _stdlib_platform
import re

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference, PlatformError

_ARCH_ALIASES = {
    "x86_64": ("amd64", None), "x86-64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"),
    "i386": ("386", None), "i486": ("386", None), "i586": ("386", None), "i686": ("386", None), "386": ("386", None),
}
_MACHINE_TO_PLATFORM = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}
_PART_RE = re.compile(r"^[a-z0-9_.-]+$")
_SHORT_ARCHES = ("arm", "ppc64le", "s390x", "riscv64", "mips64le", "mips64", "loong64", "wasm")


class Platform:
    """An os/architecture/variant triple, normalised like containerd does."""

    def __init__(self, os, architecture, variant=None):
        self.os = os
        self.architecture = architecture
        self.variant = variant or ""

    @classmethod
    def from_dict(cls, data):
        data = data or {}
        return cls(str(data.get("os") or ""), str(data.get("architecture") or ""), str(data.get("variant") or ""))

    def normalized(self):
        os_name = self.os.lower()
        if os_name == "macos":
            os_name = "darwin"
        arch = self.architecture.lower()
        variant = self.variant.lower()
        if arch in _ARCH_ALIASES:
            arch, forced = _ARCH_ALIASES[arch]
            if forced:
                variant = forced
        if variant and variant[0].isdigit():
            variant = "v" + variant
        if arch == "amd64" and variant == "v1":
            variant = ""
        elif arch == "arm64" and variant in ("v8", "v8.0"):
            variant = ""
        elif arch == "arm64" and variant == "v9.0":
            variant = "v9"
        elif arch == "arm" and variant == "":
            variant = "v7"
        return Platform(os_name, arch, variant)

    def __eq__(self, other):
        return isinstance(other, Platform) and (self.os, self.architecture, self.variant) == (
            other.os, other.architecture, other.variant)

    def __hash__(self):
        return hash((self.os, self.architecture, self.variant))

    def __str__(self):
        text = "%s/%s" % (self.os, self.architecture)
        if self.variant:
            text += "/" + self.variant
        return text

    __repr__ = __str__

    def compatible(self):
        """The (architecture, variant) pairs this platform runs, best first (containerd's preference order)."""
        want = self.normalized()
        arch, variant = want.architecture, want.variant
        result = [(arch, variant)]
        if arch == "amd64":
            level = int(variant[1:]) if variant.startswith("v") and variant[1:].isdigit() else 1
            result += [("amd64", "v%d" % n) for n in range(level - 1, 1, -1)]
            if level > 1:
                result.append(("amd64", ""))
            result.append(("386", ""))
        elif arch == "arm":
            level = int(variant[1:]) if variant.startswith("v") and variant[1:].isdigit() else 7
            result += [("arm", "v%d" % n) for n in range(level - 1, 4, -1)]
        elif arch == "arm64":
            if variant.startswith("v8.") or variant == "v9" or variant.startswith("v9."):
                result.append(("arm64", ""))
            result += [("arm", "v8"), ("arm", "v7"), ("arm", "v6"), ("arm", "v5")]
        seen = []
        for item in result:
            if item not in seen:
                seen.append(item)
        return seen

    def rank(self, candidate):
        """Preference rank of ``candidate`` for this wanted platform, or None when it cannot run."""
        want = self.normalized()
        have = candidate.normalized()
        if have.os != want.os:
            return None
        try:
            return self.compatible().index((have.architecture, have.variant))
        except ValueError:
            return None


_KNOWN_OS = ("linux", "windows", "darwin", "macos", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix",
             "android", "ios", "plan9", "js", "wasip1", "dragonfly", "unknown")


def parse_platform(text):
    """Parse ``os/arch[/variant]``, or docker's short forms ``arch`` and ``arch/variant`` (os linux), for
    example ``amd64``, ``arm64``, ``arm/v7``; raise InvalidReference with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference("platform must look like os/arch[/variant], e.g. linux/arm64")
    parts = text.strip().lower().split("/")
    if not all(parts) or not all(_PART_RE.match(p) for p in parts) or len(parts) > 3:
        raise InvalidReference("invalid platform %r: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7"
                               % (text,))
    if parts[0] not in _KNOWN_OS and (parts[0] in _ARCH_ALIASES or parts[0] in _MACHINE_TO_PLATFORM
                                      or parts[0] in _SHORT_ARCHES) and len(parts) <= 2:
        parts = ["linux"] + parts
    if len(parts) == 1:
        raise InvalidReference("invalid platform %r: expected os/arch[/variant] or a known architecture such "
                               "as amd64 or arm64" % (text,))
    return Platform(*parts)


def host_platform():
    """linux/ + the architecture of the machine this runs on."""
    machine = _stdlib_platform.machine().lower()
    arch, variant = _MACHINE_TO_PLATFORM.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


def is_attestation(descriptor):
    annotations = descriptor.get("annotations") or {}
    if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
        return True
    plat = descriptor.get("platform") or {}
    return plat.get("os") == "unknown" and plat.get("architecture") == "unknown"


def descriptor_platform(descriptor):
    """The Platform an index entry declares, or None."""
    plat = descriptor.get("platform")
    if not isinstance(plat, dict) or not plat.get("os") or not plat.get("architecture"):
        return None
    return Platform.from_dict(plat)


def select(candidates, want):
    """Pick the best (platform, item) pair for ``want`` from ``candidates`` (a list of (Platform, item)).

    Follows the image-spec rule that the first of equally good entries wins. Raises PlatformError listing
    the platforms on offer when nothing matches.
    """
    best = None
    for position, (plat, item) in enumerate(candidates):
        rank = want.rank(plat)
        if rank is None:
            continue
        key = (rank, position)
        if best is None or key < best[0]:
            best = (key, plat, item)
    if best is None:
        offered = sorted(set(str(plat) for plat, _item in candidates))
        raise PlatformError("no manifest for platform %s; the image offers: %s"
                            % (want, ", ".join(offered) if offered else "no platforms"))
    return best[1], best[2]
