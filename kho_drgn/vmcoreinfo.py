"""VMCOREINFO: the kernel's note for debuggers, parsed into a lookup table.

It carries the release, the build ID, symbol addresses and the struct offsets
makedumpfile and crash rely on -- enough to read the printk ring buffer when
there is no matching vmlinux.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drgn import Program

from kho_drgn.errors import TARGET_ERRORS


@dataclass(eq=False)
class VmcoreInfo:
    """Parsed ``KEY=value`` lines of VMCOREINFO."""

    entries: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def number(self, key: str) -> int | None:
        """``SYMBOL(x)``/``ADDRESS(x)`` are hex; ``OFFSET``/``SIZE``/... decimal."""
        value = self.entries.get(key)
        if value is None:
            return None
        try:
            if key.startswith(("SYMBOL(", "ADDRESS(")) or key == "KERNELOFFSET":
                return int(value, 16)
            return int(value, 0)
        except ValueError:
            return None

    @property
    def build_id(self) -> str | None:
        return self.get("BUILD-ID")

    @property
    def release(self) -> str | None:
        return self.get("OSRELEASE")


def parse_vmcoreinfo(text: str) -> VmcoreInfo:
    """Parse VMCOREINFO text; malformed lines are skipped."""
    info = VmcoreInfo()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            info.entries[key.strip()] = value.strip()
    return info


def read_vmcoreinfo(prog: Program) -> VmcoreInfo | None:
    """The target's VMCOREINFO, or None when it has none."""
    try:
        raw = prog["VMCOREINFO"].string_()
    except TARGET_ERRORS:
        return None
    return parse_vmcoreinfo(raw.decode("utf-8", "replace"))
