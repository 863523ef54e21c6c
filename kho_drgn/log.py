"""The kernel log as kho-drgn uses it: records, wrap detection, KHO lines.

Pure: the reading is in :mod:`kho_drgn.printk`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Log lines about KHO that are worth showing beside the chain.
KHO_LINE_MARKERS = ("KHO: ", "from KHO", "kexec-metadata", "kho_test", "test_kho")


@dataclass
class LogRecord:
    seq: int
    timestamp_ns: int
    text: str


@dataclass
class KernelLog:
    """The readable part of the printk ring buffer.

    ``wrapped`` is true when the oldest record is not the first one the kernel
    wrote (seq 0): boot lines may be gone.
    """

    records: list[LogRecord] = field(default_factory=list)
    source: str = "printk"

    @property
    def wrapped(self) -> bool:
        return bool(self.records) and self.records[0].seq != 0

    @property
    def first_seq(self) -> int | None:
        return self.records[0].seq if self.records else None

    def lines(self) -> list[str]:
        return [r.text for r in self.records]

    def kho_records(self) -> list[LogRecord]:
        return [r for r in self.records if any(m in r.text for m in KHO_LINE_MARKERS)]


#: What a panic leaves in the log, most specific first.
_PANIC_RE = re.compile(
    r"(Kernel panic - .*|BUG: (?:kernel NULL pointer dereference|unable to handle).*"
    r"|Unable to handle kernel.*|[Kk]ernel BUG at.*|Oops: .*)"
)
_PANIC_REASON_RE = re.compile(r"Kernel panic - not syncing: (?P<reason>.*)")


def find_panic_message(lines: list[str]) -> str | None:
    """The log line that says why the kernel died, if there is one.

    A ``Kernel panic -`` line wins over an earlier Oops or BUG, since it is the
    final word; otherwise the first Oops/BUG line.
    """
    found = [m.group(1) for line in lines if (m := _PANIC_RE.search(line))]
    panics = [line for line in found if line.startswith("Kernel panic")]
    if panics:
        return panics[-1]
    return found[0] if found else None


def panic_reason(message: str | None) -> str | None:
    """The reason part of ``Kernel panic - not syncing: <reason>``."""
    if message is None:
        return None
    match = _PANIC_REASON_RE.match(message)
    return match["reason"].strip() if match else message
