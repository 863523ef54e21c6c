"""One bounded, cycle-checked reader of target physical pages.

Every structure kho-drgn follows through physical memory -- the
preserved-memory map, a subtree's page lists (kho_test's folios, LUO's
session blocks), LUO's blocks, arrays and memfd folio lists -- reads its
pages through a :class:`PageReader`, so one pointer guard and one set of
finding codes cover them all:

* ``page.bad-pointer`` (error): a pointer that is null, not aligned as the
  structure requires, or past the end of physical memory; the message says
  which;
* ``page.cycle`` (error): a page reached twice in one walk (a loop, or a
  page shared where none may be);
* ``page.too-many`` (warning): the walk's page budget is spent; the reader
  stops (``exhausted``);
* ``memory.missing`` (warning): the page is not in the target, or the read
  came back short.

Pure: memory comes through ``read_phys(address, size) -> bytes``; findings
go to the ``report`` callable the caller gives (a list's ``append``, or a
map walk's per-code capped ``report``).  Never raises on bad data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kho_drgn.findings import Finding, error, memory_missing, warning

__all__ = (
    "BAD_POINTER",
    "CYCLE",
    "DEFAULT_MISSING",
    "MAX_PHYS",
    "PAGE_SIZE",
    "TOO_MANY",
    "PageReader",
    "PhysReadError",
    "ReadPhys",
    "Report",
)

#: ``read_phys(address, size)``: ``size`` bytes of target physical memory.
ReadPhys = Callable[[int, int], bytes]
#: Where a reader's findings go.
Report = Callable[[Finding], None]

PAGE_SIZE = 4096
#: Physical addresses fit in 52 bits (MAX_PHYSMEM_BITS on x86_64 and arm64).
MAX_PHYS = 1 << 52

#: The reader's finding codes (``memory.missing`` is :func:`memory_missing`).
BAD_POINTER = "page.bad-pointer"
CYCLE = "page.cycle"
TOO_MANY = "page.too-many"


class PhysReadError(Exception):
    """What a ``read_phys`` callable raises for memory that is not there.

    Readers treat it (and ``OSError``, by default) as a missing page; drgn
    users pass ``missing=(drgn.FaultError,)`` instead.
    """


#: Exceptions from ``read_phys`` that mean "this page is not in the target".
DEFAULT_MISSING: tuple[type[BaseException], ...] = (PhysReadError, OSError)


@dataclass(eq=False)
class PageReader:
    """Reads the pages of one walk of one structure, each at most once.

    ``structure`` names what is walked ("memory map", "kho_test folio
    list", ...) and starts every message; ``where`` is the findings'
    ``where`` (``incoming``, ``outgoing``).  ``max_pages`` bounds the reads
    of the walk; past it the reader reports ``page.too-many`` once and reads
    nothing more.
    """

    read_phys: ReadPhys
    report: Report
    structure: str
    where: str = ""
    max_phys: int = MAX_PHYS
    max_pages: int = 1 << 16
    missing: tuple[type[BaseException], ...] = DEFAULT_MISSING
    #: Addresses read (or tried) in this walk with ``once``.
    seen: set[int] = field(default_factory=set)
    #: Reads that passed the pointer checks (found or missing).
    pages_read: int = 0
    #: True once the budget is spent: the walk must stop.
    exhausted: bool = False

    def read(
        self,
        address: int,
        size: int,
        what: str,
        *,
        align: int = PAGE_SIZE,
        once: bool = True,
    ) -> bytes | None:
        """``size`` bytes at physical ``address``, or None with a finding.

        ``align`` is the alignment the structure guarantees (1: none);
        ``once`` makes a second visit of ``address`` in this walk a cycle.
        """
        problem = self._bad_pointer(address, size, align)
        if problem:
            self.report(
                error(
                    BAD_POINTER,
                    f"{self.structure}: {what} pointer {address:#x} {problem}; skipped",
                    self.where,
                )
            )
            return None
        if once and address in self.seen:
            self.report(
                error(
                    CYCLE,
                    f"{self.structure}: {what} at {address:#x} is reached twice "
                    "(a loop or a shared page); not read again",
                    self.where,
                )
            )
            return None
        if self.pages_read >= self.max_pages:
            if not self.exhausted:
                self.exhausted = True
                self.report(
                    warning(
                        TOO_MANY,
                        f"{self.structure}: more than {self.max_pages} pages; "
                        "stopped reading (damage, or raise the limit)",
                        self.where,
                    )
                )
            return None
        if once:
            self.seen.add(address)
        self.pages_read += 1
        try:
            data = self.read_phys(address, size)
        except self.missing as e:
            self.report(
                memory_missing(
                    f"{self.structure}: {what} at physical {address:#x} is not "
                    f"in the target ({str(e) or type(e).__name__})",
                    self.where,
                )
            )
            return None
        if len(data) != size:
            self.report(
                memory_missing(
                    f"{self.structure}: {what} at physical {address:#x}: read "
                    f"{len(data)} of {size} bytes",
                    self.where,
                )
            )
            return None
        return bytes(data)

    def read_struct(self, address: int, size: int, what: str) -> bytes | None:
        """A packed struct or array at ``address``: no alignment required,
        and not part of the walk's cycle check (read once, not followed)."""
        return self.read(address, size, what, align=1, once=False)

    def _bad_pointer(self, address: int, size: int, align: int) -> str:
        """Why ``address`` cannot be read ("" when it can)."""
        if not address:
            return "is null"
        if align > 1 and address % align:
            return f"is not {align}-byte aligned"
        if address < 0 or address + size > self.max_phys:
            return f"is past the end of physical memory ({self.max_phys:#x})"
        return ""
