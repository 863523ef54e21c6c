"""Assembling the KHO state of a target: incoming and outgoing handovers.

``kho_state(prog)`` is the entry point: it reads ``kho_in``/``kho_out``,
the root FDTs they point to and the subtree blobs, and classifies the kernel
(KHO not built, disabled, cold boot, booted through KHO).  Only the reading
is here: :func:`kho_drgn.handover.decode_handover` decodes what was read, as
it does for debugfs files.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from drgn import FaultError, Program

from kho_drgn.abi import KEXEC_METADATA_NODE, ROOT_FDT_MAX_SIZE, EraDecision
from kho_drgn.fdt import FdtError, SubtreeRef, fdt_invalid
from kho_drgn.findings import Finding, error, info, memory_missing, warning
from kho_drgn.handover import (
    BlobMissing,
    FetchBlob,
    Handover,
    decode_handover,
)
from kho_drgn.target import (
    MAX_SCRATCH_AREAS,
    KhoIn,
    KhoReadError,
    Scratch,
    SymbolSource,
    decode_scratch_array,
    has_kho,
    has_kho_functions,
    kallsyms_unavailable_reason,
    kexec_metadata_layout,
    kho_enabled,
    kho_era,
    kho_out_fdt_address,
    kho_out_finalized,
    read_fdt,
    read_kho_in,
    read_phys,
    read_scratch,
    running_release,
    symbol_address,
    symbol_source,
    target_byteorder,
    virt_to_phys_or_none,
)

__all__ = (
    "KHO_IN_UNREADABLE",
    "PREDATES_METADATA",
    "Handover",
    "KhoState",
    "KhoStatus",
    "for_each_handover",
    "kho_state",
    "memory_blobs",
    "note_metadata_absent",
    "predates_metadata",
    "read_handover",
)

#: Finding code: ``kho_in`` is not in the target though ``kho_out`` is.
KHO_IN_UNREADABLE = "kho.kho-in-unreadable"


class KhoStatus(str, enum.Enum):
    """What the kernel did with KHO on this boot."""

    NOT_BUILT = "not-built"  # no CONFIG_KEXEC_HANDOVER
    DISABLED = "disabled"  # built in, kho=off (or init failed): no FDT
    DISABLED_WITH_INCOMING = "disabled-with-incoming"  # kho=off after a KHO kexec
    COLD_BOOT = "cold-boot"  # enabled, nothing handed over to this kernel
    KEXEC = "kexec"  # booted through a KHO kexec: incoming and outgoing

    def __str__(self) -> str:
        return self.value


@dataclass(eq=False)
class KhoState:
    """Everything kho-drgn read about KHO in one target."""

    #: How the KHO variables were found; None when not read through symbols
    #: (kho-debugfs).
    symbols: SymbolSource | None
    release: str | None
    status: KhoStatus
    enabled: bool | None = None
    kho_in: KhoIn | None = None
    incoming: Handover | None = None
    outgoing: Handover | None = None
    scratch: Scratch | None = None
    findings: list[Finding] = field(default_factory=list)
    #: Which era's kho_in/kho_out layout applies, and the facts that chose it.
    era: EraDecision | None = None

    def all_findings(self) -> Iterator[Finding]:
        yield from self.findings
        if self.kho_in is not None:
            yield from self.kho_in.findings
        if self.scratch is not None:
            yield from self.scratch.findings
        for handover in (self.incoming, self.outgoing):
            if handover is not None:
                yield from handover.all_findings()


def for_each_handover(state: KhoState) -> Iterator[Handover]:
    """The incoming then the outgoing handover, where present."""
    for handover in (state.incoming, state.outgoing):
        if handover is not None:
            yield handover


def read_handover(
    prog: Program, direction: str, address: int, physical: bool
) -> Handover:
    """Read a root KHO FDT at ``address`` and what hangs off it in physical
    memory, and decode them (:func:`kho_drgn.handover.decode_handover`)."""
    where = f"{'physical' if physical else 'virtual'} {address:#x}"
    root_what = f"{direction} root FDT at {where}"
    findings: list[Finding] = []
    root = None
    try:
        root = read_fdt(prog, address, physical, ROOT_FDT_MAX_SIZE)
    except FaultError:
        findings.append(memory_missing(f"{root_what} is not in the dump", direction))
    except FdtError as e:
        findings.append(fdt_invalid(root_what, e, direction))
    return decode_handover(
        direction,
        root,
        memory_blobs(prog),
        target_byteorder(prog),
        metadata_layout=kexec_metadata_layout(prog),
        read_phys=lambda addr, length: read_phys(prog, addr, length),
        missing=(FaultError,),
        root_what=root_what,
        fdt_phys=address if physical else virt_to_phys_or_none(prog, address),
        fdt_virt=None if physical else address,
        findings=findings,
    )


def memory_blobs(prog: Program) -> FetchBlob:
    """Subtree blobs from the target's physical memory, at each sub-node's
    ``preserved-data`` (None when the FDT gives no address: its finding says
    so)."""

    def fetch(ref: SubtreeRef, size: int) -> bytes | None:
        if ref.phys is None:
            return None
        try:
            return read_phys(prog, ref.phys, size)
        except FaultError:
            raise BlobMissing(
                f"at physical {ref.phys:#x} ({size} bytes) is not in the dump"
            ) from None

    return fetch


def kho_state(prog: Program) -> KhoState:
    """Read the KHO state of a target.

    :raises KhoReadError: if the KHO variables exist but are unreadable.
    """
    source = symbol_source(prog)
    state = KhoState(
        symbols=source,
        release=running_release(prog),
        status=KhoStatus.NOT_BUILT,
    )
    if not has_kho(prog):
        if source is SymbolSource.KALLSYMS and not _has_any_symbols(prog):
            raise KhoReadError(
                f"no debug info and {kallsyms_unavailable_reason(prog)}: cannot "
                "tell whether this kernel has KHO (pass -s VMLINUX)"
            )
        if source is SymbolSource.KALLSYMS and has_kho_functions(prog):
            raise KhoReadError(
                "KHO is built in (its functions are in kallsyms) but kho_in and "
                "kho_out are not: kallsyms has no data symbols "
                "(CONFIG_KALLSYMS_ALL=n); pass -s VMLINUX"
            )
        return state

    state.enabled = kho_enabled(prog)
    state.era = kho_era(prog)
    kho_in_error = None
    try:
        state.kho_in = read_kho_in(prog)
    except KhoReadError as e:
        kho_in_error = e
    try:
        finalized = kho_out_finalized(prog)
        out_fdt = kho_out_fdt_address(prog) if finalized is not False else None
    except KhoReadError:
        if kho_in_error is not None:
            raise kho_in_error from None
        raise
    if kho_in_error is not None:
        # kho_out is readable: report what it and the log still say.
        state.findings.append(
            error(
                KHO_IN_UNREADABLE,
                f"{kho_in_error}: the incoming handover cannot be found; the "
                "chain comes from the boot line and the outgoing count",
                "incoming",
            )
        )

    if state.kho_in is not None and state.kho_in.fdt_phys:
        state.incoming = read_handover(prog, "incoming", state.kho_in.fdt_phys, True)
    if out_fdt is not None:
        state.outgoing = read_handover(prog, "outgoing", out_fdt, False)

    if state.outgoing is None and finalized is not False:
        state.status = (
            KhoStatus.DISABLED_WITH_INCOMING if state.incoming else KhoStatus.DISABLED
        )
        if state.enabled:
            state.findings.append(
                warning(
                    "kho.no-outgoing-fdt",
                    "kho_enable is set but there is no outgoing FDT: KHO "
                    "initialisation failed in this kernel",
                    "outgoing",
                )
            )
        if state.incoming is not None:
            state.findings.append(
                info(
                    "kho.disabled-after-handover",
                    "this kernel runs with KHO disabled but was handed KHO data "
                    "by the previous kernel; it did not consume the metadata",
                    "incoming",
                )
            )
    else:
        state.status = KhoStatus.KEXEC if state.incoming else KhoStatus.COLD_BOOT
    state.findings.extend(_not_finalized(state, finalized))
    note_metadata_absent(state)
    state.scratch = read_scratch(prog)
    if state.status is KhoStatus.KEXEC:
        _read_handed_over_scratch(prog, state)
    return state


#: Finding code: a root FDT without a ``kexec-metadata`` sub-node.
METADATA_ABSENT = "metadata.absent"

#: The one finding for kernels before kexec-metadata (Linux 7.1).
PREDATES_METADATA = "metadata.predates"


def _not_finalized(state: KhoState, finalized: bool | None) -> list[Finding]:
    """6.16..6.18 hand state over only once KHO was finalized (debugfs
    ``kho/out/finalize``); before that ``kho_out.ser.fdt`` points at a page
    that was never formatted, and there is no outgoing handover to read."""
    if finalized is not False or not state.enabled:
        return []
    return [
        info(
            "kho.not-finalized",
            "KHO was not finalized in this kernel (kho_out.finalized is 0): "
            "before Linux 6.19 the outgoing handover exists only once "
            "finalized, so this kernel had not prepared a KHO kexec (normal)",
            "outgoing",
        )
    ]


def predates_metadata(state: KhoState) -> bool:
    """True for a kernel before kexec-metadata (Linux 7.1): ``kho_in`` has no
    boot-time copy, or a handover is ``kho-v1`` (6.16..7.0), and no handover
    carries a ``kexec-metadata`` subtree."""
    handovers = list(for_each_handover(state))
    if any(h.subtree(KEXEC_METADATA_NODE) is not None for h in handovers):
        return False
    old_kho_in = state.kho_in is not None and not state.kho_in.has_metadata_copy
    kho_v1 = any(h.fdt is not None and h.fdt.compatible == "kho-v1" for h in handovers)
    return old_kho_in or kho_v1


def note_metadata_absent(state: KhoState) -> None:
    """A handover FDT without a kexec-metadata subtree: once both handovers
    are decoded, either say once that the kernel predates kexec-metadata, or
    give each such handover a ``metadata.absent`` warning (never both: the
    decoder does not report it, so nothing is added and then taken back)."""
    if state.status in (KhoStatus.KEXEC, KhoStatus.COLD_BOOT) and predates_metadata(
        state
    ):
        state.findings.append(
            info(
                PREDATES_METADATA,
                "this kernel predates kexec-metadata (Linux 7.1): no handover "
                "names the previous kernel or counts kexecs; whether a KHO "
                "kexec happened comes from the incoming handover and the log",
                "target",
            )
        )
        return
    for handover in for_each_handover(state):
        # Its subtrees include debugfs files the root FDT does not name, as
        # in the decoder and predates_metadata.
        if handover.fdt is None or handover.subtree(KEXEC_METADATA_NODE):
            continue
        handover.findings.append(
            warning(
                METADATA_ABSENT,
                f"{handover.direction} FDT has no {KEXEC_METADATA_NODE!r} "
                "subtree (kernel older than 7.1, or the metadata was not added)",
                handover.direction,
            )
        )


def _read_handed_over_scratch(prog: Program, state: KhoState) -> None:
    """The array at ``kho_in.scratch_phys``, when the kernel did not adopt it.

    The handover does not say how many entries it has; the kernel takes the
    count with it, so the current ``kho_scratch_cnt`` is the best guess.
    """
    scratch, kho_in = state.scratch, state.kho_in
    if (
        scratch is None
        or kho_in is None
        or not kho_in.scratch_phys
        or scratch.array_phys == kho_in.scratch_phys
        or not 0 < scratch.count <= MAX_SCRATCH_AREAS
    ):
        return
    try:
        raw = read_phys(prog, kho_in.scratch_phys, scratch.count * 16)
    except FaultError:
        scratch.findings.append(
            memory_missing(
                f"the scratch array handed over at physical "
                f"{kho_in.scratch_phys:#x} is not in the dump",
                "scratch",
            )
        )
        return
    scratch.handed_over = decode_scratch_array(raw, target_byteorder(prog))


def _has_any_symbols(prog: Program) -> bool:
    return symbol_address(prog, "_stext") is not None
