"""drgn-style helpers: the kexec chain, KHO state and preserved memory of a Program.

These are for drgn users who want the answers as objects rather than as a
report.  Each takes the Program first and uses drgn's default program when it
is omitted, so in a drgn session::

    >>> from kho_drgn import kexec_chain
    >>> c = kexec_chain()
    >>> c.previous_release, c.kexec_count, c.current_release
    ('7.2.13-kho-a', 2, '7.2.13-kho-b')
    >>> c.next
    NextKernel(release='7.2.13-kho-b', kexec_count=3)

They only read the target.  Without vmlinux debug info, kho-drgn finds the
KHO variables through its own index of the kallsyms tables: nothing is
registered on the Program, so its symbol finders are the same afterwards.
"""

from __future__ import annotations

from typing import Literal

from drgn import Program
from drgn.helpers.common.prog import takes_program_or_default

from kho_drgn.chain import KexecChain, build_chain
from kho_drgn.preserved import PreservedMemory
from kho_drgn.preserved import preserved_memory as _preserved_memory
from kho_drgn.printk import LogUnavailable, kernel_log
from kho_drgn.report import KhoReport
from kho_drgn.report import kho_report as _kho_report
from kho_drgn.state import KhoState
from kho_drgn.state import kho_state as _kho_state

__all__ = ("kexec_chain", "kho_report", "kho_state", "preserved_memory")


@takes_program_or_default
def kho_state(prog: Program) -> KhoState:
    """The KHO state of ``prog``: status, ``kho_in``, both handovers decoded.

    >>> s = kho_state()
    >>> str(s.status), s.incoming.fdt.compatible
    ('kexec', 'kho-v4')

    :raises KhoReadError: if the KHO variables exist but cannot be read.
    """
    return _kho_state(prog)


@takes_program_or_default
def kexec_chain(prog: Program) -> KexecChain:
    """Where the kernel of ``prog`` sits in its kexec chain, cross-checked.

    The previous kernel and kexec count come from the incoming
    ``kexec-metadata`` blob, the copy the kernel made of it in ``kho_in`` at
    boot, or the ``KHO: exec from:`` boot line, whichever the other sources
    bear out (``source`` says which); ``next`` is what the outgoing blob will
    tell the next kernel; ``findings`` lists every disagreement.

    >>> c = kexec_chain()
    >>> c.previous_release, c.kexec_count, c.source
    ('7.2.13-kho-a', 2, 'incoming kexec-metadata blob')

    :raises KhoReadError: if the KHO variables exist but cannot be read.
    """
    state = _kho_state(prog)
    try:
        log = kernel_log(prog)
    except LogUnavailable:
        return build_chain(state, None)
    return build_chain(state, log.lines(), log.wrapped)


@takes_program_or_default
def preserved_memory(
    prog: Program,
    direction: Literal["incoming", "outgoing"] = "outgoing",
    scan_pages: bool = False,
) -> PreservedMemory | None:
    """One handover's preserved-memory map, walked and checked.

    ``outgoing`` is what the next kernel will be handed; ``incoming`` what the
    previous kernel handed this one (read once at boot, so often overwritten
    since).  With ``scan_pages`` the incoming map is also checked against
    ``KHO_PAGE_MAGIC`` in the struct pages (64 bytes read per page of RAM).
    None when that handover has no map.

    >>> m = preserved_memory(direction="outgoing")
    >>> m.summary.blocks, m.summary.pages
    (29, 2311)
    """
    if direction not in ("incoming", "outgoing"):
        raise ValueError(
            f"direction must be 'incoming' or 'outgoing', not {direction!r}"
        )
    state = _kho_state(prog)
    found = _preserved_memory(prog, state, scan_pages, directions=(direction,))
    return found[0] if found else None


@takes_program_or_default
def kho_report(
    prog: Program,
    with_crash: bool = True,
    with_memory_map: bool = True,
    scan_pages: bool = False,
) -> KhoReport:
    """Everything the script prints, as one :class:`~kho_drgn.report.KhoReport`.

    >>> r = kho_report(with_crash=False)
    >>> r.chain_line
    'cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b [crashed, kexec #2] -> ...'

    ``report_to_dict(r)`` is the JSON form.  :raises KhoReadError: as
    :func:`kho_state`.
    """
    return _kho_report(prog, with_crash, with_memory_map, scan_pages)
