"""One report per target: KHO state, kexec chain, crash context, findings.

``kho_report(prog)`` does the reading; ``report_to_dict`` gives the versioned
JSON form documented in the README (``schema`` = :data:`SCHEMA`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from drgn import Program, ProgramFlags

from kho_drgn import __version__
from kho_drgn.abi import EraDecision
from kho_drgn.chain import KexecChain, build_chain, format_chain
from kho_drgn.checks import check_scratch
from kho_drgn.findings import Finding, most_severe_first, warning
from kho_drgn.log import KernelLog
from kho_drgn.metadata import KexecMetadata
from kho_drgn.printk import LogUnavailable, kernel_log
from kho_drgn.state import Handover, KhoState, kho_state
from kho_drgn.target import (
    TARGET_ERRORS,
    Scratch,
    SymbolSource,
    kho_target,
    symbol_address,
    symbol_source,
)

if TYPE_CHECKING:
    from kho_drgn.crash import CrashContext
    from kho_drgn.luo_target import LuoState
    from kho_drgn.preserved import PreservedMemory

SCHEMA = "kho-drgn/report/2"


@dataclass(eq=False)
class TargetInfo:
    """What was analysed."""

    #: "vmcore", "live" (local /proc/kcore), "live-remote" (QEMU), or
    #: "debugfs" (a KHO debugfs tree: no kernel memory, no symbols).
    kind: str
    path: str | None
    symbols: SymbolSource | None


@dataclass(eq=False)
class KhoReport:
    target: TargetInfo
    state: KhoState
    chain: KexecChain
    crash: CrashContext | None
    findings: list[Finding] = field(default_factory=list)
    #: Each handover's preserved-memory map by direction (when walked).
    preserved: dict[str, PreservedMemory] = field(default_factory=dict)
    #: The LUO (Live Update Orchestrator) handover, when the kernel has LUO.
    luo: LuoState | None = None

    @property
    def live(self) -> bool:
        """True for a running kernel (local, a QEMU guest, or its debugfs),
        not a dump."""
        return self.target.kind != "vmcore"

    @property
    def chain_line(self) -> str:
        return format_chain(self.chain, self.live, self.findings)


def target_info(prog: Program, symbols: SymbolSource) -> TargetInfo:
    if prog.flags & ProgramFlags.IS_LIVE:
        kind = "live" if prog.flags & ProgramFlags.IS_LOCAL else "live-remote"
        return TargetInfo(kind=kind, path=None, symbols=symbols)
    path = prog.core_dump_path
    return TargetInfo(kind="vmcore", path=path, symbols=symbols)


def kho_report(
    prog: Program,
    with_crash: bool = True,
    with_memory_map: bool = True,
    scan_pages: bool = False,
) -> KhoReport:
    """Read everything kho-drgn reports about a target.

    :param with_crash: also gather the crash context (panic, task, stack).
    :param with_memory_map: walk the preserved-memory maps.
    :param scan_pages: also scan the struct pages for KHO_PAGE_MAGIC and
        check the incoming map against them (reads 64 bytes per page of RAM:
        about 5 ms per 512 MiB in an ELF dump, 25 ms compressed).
    :raises KhoReadError: when the KHO variables exist but cannot be read.
    """
    state = kho_state(prog)
    log: KernelLog | None
    log_error: str | None = None
    try:
        log = kernel_log(prog)
    except LogUnavailable as e:
        log, log_error = None, str(e)
    if log is None:
        chain = build_chain(state, None)
    else:
        chain = build_chain(state, log.lines(), log.wrapped)
    crash = None
    if with_crash:  # the crash and map modules load only when asked for
        from kho_drgn.crash import crash_context

        crash = crash_context(prog, log, log_error)

    preserved: dict[str, PreservedMemory] = {}
    if with_memory_map:
        from kho_drgn.preserved import preserved_memory

        preserved = {p.direction: p for p in preserved_memory(prog, state, scan_pages)}
    findings = list(state.all_findings()) + chain.findings + check_scratch(state)
    for memory in preserved.values():
        findings.extend(memory.findings)
    luo = _luo_state(prog, state, preserved)
    if luo is not None:
        findings.extend(luo.all_findings())
    if state.symbols is SymbolSource.KALLSYMS and state.status.value != "not-built":
        info = kho_target(prog).vmcoreinfo
        build_id = info.build_id if info is not None else None
        wanted = f" (the dump's BUILD-ID is {build_id})" if build_id else ""
        findings.append(
            warning(
                "symbols.no-dwarf",
                "no vmlinux debug info with the KHO types was loaded"
                f"{wanted}: found KHO through VMCOREINFO/kallsyms and decoded "
                "with the ABI's layouts",
                "target",
            )
        )
    return KhoReport(
        target=target_info(prog, symbol_source(prog)),
        state=state,
        chain=chain,
        crash=crash,
        findings=most_severe_first(findings),
        preserved=preserved,
        luo=luo,
    )


def _luo_state(
    prog: Program, state: KhoState, preserved: dict[str, PreservedMemory]
) -> LuoState | None:
    """LUO where there is some: a ``LUO`` subtree, or LUO's variables in the
    kernel (sessions not yet handed over).  Its modules load only then."""
    subtree = any(
        h.fdt is not None and h.fdt.subtree("LUO") is not None
        for h in (state.incoming, state.outgoing)
        if h is not None
    )
    if not subtree and (
        symbol_address(prog, "luo_global") is None or _luo_disabled(prog)
    ):
        return None
    from kho_drgn.luo_target import luo_state

    return luo_state(prog, state, preserved)


def _luo_disabled(prog: Program) -> bool:
    """``luo_global.enabled`` is false (no ``liveupdate=on``): no session can
    exist.  Known only from DWARF; otherwise LUO is read to find out."""
    if symbol_source(prog) is not SymbolSource.DWARF:
        return False
    try:
        return not prog["luo_global"].enabled.value_()
    except (*TARGET_ERRORS, AttributeError):
        return False


def metadata_to_dict(md: KexecMetadata | None) -> dict[str, Any] | None:
    if md is None:
        return None
    return {
        "blob_size": md.blob_size,
        "version": md.version,
        "previous_release": md.previous_release,
        "kexec_count": md.kexec_count,
        "valid": md.valid,
        "layout": md.layout_source,
        "raw_hex": md.raw.hex(),
    }


def handover_to_dict(
    handover: Handover | None,
    memory: PreservedMemory | None = None,
    ranges: bool = False,
) -> dict[str, Any] | None:
    if handover is None:
        return None
    fdt = handover.fdt
    return {
        "fdt_phys": handover.fdt_phys,
        "fdt_virt": handover.fdt_virt,
        "fdt_size": fdt.totalsize if fdt else handover.fdt_totalsize,
        "fdt_file_size": handover.fdt_file_size,
        "compatible": fdt.compatible if fdt else None,
        "abi_known": fdt.abi is not None if fdt else None,
        "preserved_memory_map": fdt.memory_map_phys if fdt else None,
        "subtrees": [
            {
                "name": s.name,
                "preserved_data": s.phys,
                "blob_size": s.size,
                "decoded": (
                    None if (view := handover.view(s.name)) is None else view.to_dict()
                ),
            }
            for s in handover.subtrees
        ],
        "kexec_metadata": metadata_to_dict(handover.metadata),
        "memory_map": None if memory is None else memory.to_dict(ranges),
    }


def scratch_to_dict(scratch: Scratch | None) -> dict[str, Any] | None:
    if scratch is None:
        return None
    return {
        "array_phys": scratch.array_phys,
        "count": scratch.count,
        "areas": [{"addr": a.addr, "size": a.size} for a in scratch.areas],
        "handed_over": (
            None
            if scratch.handed_over is None
            else [{"addr": a.addr, "size": a.size} for a in scratch.handed_over]
        ),
    }


def era_to_dict(era: EraDecision | None) -> dict[str, Any] | None:
    """The layout era chosen and the facts that chose it."""
    if era is None:
        return None
    return {
        "layout": era.layout.era,
        "chosen_by": era.chosen_by,
        "facts": list(era.facts),
    }


def chain_to_dict(chain: KexecChain, line: str) -> dict[str, Any]:
    return {
        "line": line,
        "kexec_count": chain.kexec_count,
        "previous_release": chain.previous_release,
        "current_release": chain.current_release,
        "kho_kexec": chain.kho_kexec,
        "predates_metadata": chain.predates_metadata,
        "next": (
            None
            if chain.next_release is None
            else {"release": chain.next_release, "kexec_count": chain.next_kexec_count}
        ),
        "source": chain.source,
    }


def crash_to_dict(crash: CrashContext | None) -> dict[str, Any] | None:
    if crash is None:
        return None
    return {
        "live": crash.live,
        "release": crash.release,
        "build_id": crash.build_id,
        "panic_message": crash.panic_message,
        "panic_reason": crash.panic_reason,
        "crashed_cpu": crash.crashed_cpu,
        "crashed_task": (
            None
            if crash.crashed_task is None
            else {
                "comm": crash.crashed_task.comm,
                "pid": crash.crashed_task.pid,
                "source": crash.crashed_task.source,
            }
        ),
        "stack_trace": crash.stack_trace,
        "stack_trace_source": crash.stack_trace_source,
        "uptime_seconds": crash.uptime_seconds,
        "uptime_source": crash.uptime_source,
        "taint": crash.taint,
        "taint_mask": crash.taint_mask,
        "log": {
            "source": crash.log_source,
            "records": crash.log_records,
            "first_seq": crash.log_first_seq,
            "wrapped": crash.log_wrapped,
        },
        "kho_log": [
            {"timestamp": r.timestamp_ns / 1e9, "text": r.text} for r in crash.kho_log
        ],
        "unavailable": crash.unavailable,
    }


def report_to_dict(report: KhoReport, ranges: bool = False) -> dict[str, Any]:
    """The report as JSON-ready data (schema :data:`SCHEMA`).

    :param ranges: list every preserved range, not only the totals.
    """
    state = report.state
    kho_in = state.kho_in
    symbols = report.target.symbols
    return {
        "schema": SCHEMA,
        "tool": {"name": "kho-drgn", "version": __version__},
        "target": {
            "kind": report.target.kind,
            "path": report.target.path,
            "release": state.release,
            "symbols": None if symbols is None else symbols.value,
            "era": era_to_dict(state.era),
        },
        "kho": {
            "status": state.status.value,
            "enabled": state.enabled,
            "kho_in": (
                None
                if kho_in is None
                else {
                    "fdt_phys": kho_in.fdt_phys,
                    "scratch_phys": kho_in.scratch_phys,
                    "previous_release": kho_in.previous_release,
                    "kexec_count": kho_in.kexec_count,
                }
            ),
            "incoming": handover_to_dict(
                state.incoming, report.preserved.get("incoming"), ranges
            ),
            "outgoing": handover_to_dict(
                state.outgoing, report.preserved.get("outgoing"), ranges
            ),
            "scratch": scratch_to_dict(state.scratch),
        },
        "chain": chain_to_dict(report.chain, report.chain_line),
        "crash": crash_to_dict(report.crash),
        "luo": None if report.luo is None else report.luo.to_dict(),
        "findings": [f.to_dict() for f in report.findings],
    }
