"""Human-readable rendering: the chain on one line first, then tables.

Tables are drawn with tabulate; the JSON form is :mod:`kho_drgn.report`.
Every string cell and line that can carry target data goes through
:func:`~kho_drgn.escape.escape_text` here, at the rendering boundary
(:func:`_table`, :func:`_line`, :func:`_message`), so a dump cannot drive the
terminal; the JSON form keeps the strings as decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from drgn.helpers.common.format import number_in_binary_units
from tabulate import tabulate

from kho_drgn.abi import KEXEC_METADATA_NODE
from kho_drgn.crash import CrashContext
from kho_drgn.escape import escape_text
from kho_drgn.findings import Finding
from kho_drgn.preserved import PreservedMemory
from kho_drgn.report import KhoReport
from kho_drgn.state import Handover, KhoState, KhoStatus, for_each_handover
from kho_drgn.subtrees import SubtreeView

if TYPE_CHECKING:
    from kho_drgn.luo import LuoFile, LuoSession, LuoSide

_STATUS_TEXT = {
    KhoStatus.NOT_BUILT: "not built in (no kho_in/kho_out symbols)",
    KhoStatus.DISABLED: "built in but disabled (kho=off): no handover FDT",
    KhoStatus.DISABLED_WITH_INCOMING: (
        "disabled (kho=off), yet handed KHO data by the previous kernel"
    ),
    KhoStatus.COLD_BOOT: "enabled after a cold boot: outgoing handover only",
    KhoStatus.KEXEC: "booted through a KHO kexec: incoming and outgoing handover",
}


def _hex(value: int | None) -> str:
    return "-" if value is None else f"{value:#x}"


def _line(value: object) -> str:
    """A string (or anything else, as ``str``) for one line of text output."""
    return escape_text(str(value))


def _message(message: str) -> str:
    """A finding message for text output.

    Messages quote target strings with ``repr`` (backslash and control
    characters already escaped); any other non-printable character left in
    one (a log line quoted as is) is escaped here, backslashes are kept.
    """
    if message.isprintable():
        return message
    return "".join(ch if ch.isprintable() else escape_text(ch) for ch in message)


def _table(rows: Iterable[Iterable[object]], **kwargs: Any) -> str:
    """``tabulate`` with every string cell escaped (numbers stay numbers)."""
    headers = kwargs.get("headers")
    if isinstance(headers, (list, tuple)):
        kwargs["headers"] = [_line(h) for h in headers]
    return tabulate(
        [[_line(c) if isinstance(c, str) else c for c in row] for row in rows],
        **kwargs,
    )


def render_findings(findings: list[Finding]) -> str:
    if not findings:
        return "Findings: none"
    rows = [
        (f.severity.value, _line(f.where), _line(f.code), _message(f.message))
        for f in findings
    ]
    return "Findings\n" + tabulate(
        rows,
        headers=("severity", "where", "code", "message"),
        maxcolwidths=[None, None, None, 72],
    )


def render_fdts(state: KhoState) -> str:
    rows = []
    for h in for_each_handover(state):
        fdt = h.fdt
        size = fdt.totalsize if fdt else h.fdt_totalsize
        rows.append(
            (
                h.direction,
                _hex(h.fdt_phys),
                "-" if size is None else size,
                _fdt_compatible(h),
                _hex(fdt.memory_map_phys) if fdt else "-",
                len(h.subtrees),
            )
        )
    if not rows:
        return "Handover FDTs: none"
    return "Handover FDTs\n" + _table(
        rows,
        headers=(
            "direction",
            "FDT phys",
            "size",
            "compatible",
            "memory map",
            "subtrees",
        ),
    )


def _fdt_compatible(h: Handover) -> str:
    """The root FDT's compatible, or why there is none."""
    if h.fdt is not None:
        return h.fdt.compatible or "-"
    file_size, declared = h.fdt_file_size, h.fdt_totalsize
    if file_size is not None and declared is not None and declared > file_size:
        return f"(file truncated: {file_size} of {declared} bytes)"
    if h.fdt_phys is None and h.fdt_virt is None and file_size is None:
        return "(no root FDT)"
    return "(unreadable)"


def _metadata_summary(h: Handover) -> str:
    md = h.metadata
    if md is None:
        return "(not decoded)"
    if not md.valid:
        return "invalid: see findings"
    return f"v{md.version}: {md.previous_release}, count {md.kexec_count}"


def render_subtrees(state: KhoState, detail: bool = False) -> str:
    """One row per subtree with what its blob says; ``detail``: every field."""
    rows = []
    for h in for_each_handover(state):
        for s in h.subtrees:
            view = h.view(s.name)
            if s.name == KEXEC_METADATA_NODE:
                content = _metadata_summary(h)
            else:
                content = view.summary() if view is not None else "(not read)"
            size = "-" if s.size is None else s.size
            rows.append((h.direction, s.name, _hex(s.phys), size, content))
    if not rows:
        return ""
    out = [
        "Subtrees\n"
        + _table(
            rows,
            headers=("direction", "name", "preserved-data", "blob-size", "content"),
            maxcolwidths=[None, None, None, None, 60],
        )
    ]
    if detail:
        for h in for_each_handover(state):
            for view in h.views:
                out.append(render_subtree_view(h.direction, view))
    return "\n\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:#x}" if value > 9 else str(value)
    return str(value)


def render_subtree_view(direction: str, view: SubtreeView) -> str:
    """A decoded subtree: its fields, then its entries as a table."""
    title = f"{direction} {view.name} ({view.kind}"
    title += f", {view.compatible})" if view.compatible else ")"
    lines = [_line(title)]
    if view.fields:
        lines.append(
            _table([(k, _cell(v)) for k, v in view.fields.items()], tablefmt="plain")
        )
    if view.entries:
        headers = list(dict.fromkeys(k for e in view.entries for k in e))
        lines.append(
            _table(
                [[_cell(e.get(k, "")) for k in headers] for e in view.entries],
                headers=headers,
                maxcolwidths=60,
            )
        )
    return "\n".join(lines)


def _metadata_row(h: Handover) -> tuple[object, ...]:
    md = h.metadata
    if md is None:
        return (h.direction, "-", "(no metadata)", "-", "-", "-")
    return (
        h.direction,
        "-" if md.version is None else md.version,
        "-" if md.previous_release is None else md.previous_release,
        "-" if md.kexec_count is None else md.kexec_count,
        md.blob_size,
        md.layout_source,
    )


def render_metadata(state: KhoState) -> str:
    rows = [_metadata_row(h) for h in for_each_handover(state)]
    kho_in = state.kho_in
    if kho_in is not None and kho_in.has_metadata_copy and state.incoming is not None:
        rows.append(
            (
                "kho_in (boot copy)",
                "-",
                kho_in.previous_release or "-",
                kho_in.kexec_count,
                "-",
                "-",
            )
        )
    if not rows:
        return ""
    return "kexec-metadata\n" + _table(
        rows,
        headers=(
            "source",
            "version",
            "previous_release",
            "kexec_count",
            "blob-size",
            "layout",
        ),
    )


def render_scratch(state: KhoState) -> str:
    scratch = state.scratch
    if scratch is None or not scratch.count:
        return ""
    kho_in = state.kho_in
    handed = (
        " (the array handed over by the previous kernel)"
        if kho_in is not None and kho_in.scratch_phys == scratch.array_phys
        else ""
    )
    rows = [
        (i, _hex(a.addr), _hex(a.size), _hex(a.addr + a.size))
        for i, a in enumerate(scratch.areas)
    ]
    title = f"Scratch areas: {scratch.count}"
    if scratch.array_phys is not None:
        title += f" at physical {_hex(scratch.array_phys)}"
    text = f"{title}{handed}\n" + _table(rows, headers=("#", "start", "size", "end"))
    if scratch.handed_over is not None and kho_in is not None:
        rows = [
            (i, _hex(a.addr), _hex(a.size), _hex(a.addr + a.size))
            for i, a in enumerate(scratch.handed_over)
        ]
        text += (
            f"\n\nScratch areas handed over at {_hex(kho_in.scratch_phys)} "
            "(not adopted)\n" + _table(rows, headers=("#", "start", "size", "end"))
        )
    return text


#: Tagged blocks listed in the memmap view (the JSON has them all).
MAX_TAGGED_ROWS = 64


def _size(value: int) -> str:
    """Bytes in binary units as drgn prints them (``4K``, ``9.5M``)."""
    return number_in_binary_units(value) if value >= 1024 else f"{value} B"


def _map_row(memory: PreservedMemory) -> tuple[object, ...]:
    summary = memory.summary
    if summary is None:
        return (memory.direction, "-", "(no map)", "-", "-", "-", "-")
    state = "whole" if summary.complete else "partial: see findings"
    if any(f.code == "memmap.incoming-reused" for f in memory.findings):
        state = "reused since boot (expected)"
    elif not summary.complete and not summary.blocks:
        state = "unreadable: see findings"
    return (
        memory.direction,
        summary.map_format,
        _hex(summary.root_phys),
        summary.blocks,
        f"{summary.pages} ({_size(summary.bytes)})",
        len(summary.ranges),
        state,
    )


def _magic_line(memory: PreservedMemory) -> str:
    scan = memory.magic
    if scan is None:
        return ""
    line = (
        f"{memory.direction}: {scan.tagged_count} block(s), {scan.tagged_pages} "
        f"page(s) still carry KHO_PAGE_MAGIC (preserved, not restored) in "
        f"{scan.pages_scanned} struct pages scanned"
    )
    summary = memory.summary
    if summary is not None and summary.complete and summary.blocks:
        line += (
            f"; {memory.restored} map block(s) restored, "
            f"{memory.tagged_not_in_map} tagged but not in the map"
        )
    return line


def render_memory(report: KhoReport, detail: bool = False, ranges: bool = False) -> str:
    """Preserved-memory maps: totals, and per order / page magic / ranges."""
    memories = list(report.preserved.values())
    if not memories:
        return ""
    out = [
        "Preserved memory\n"
        + _table(
            [_map_row(m) for m in memories],
            headers=("direction", "format", "root", "blocks", "pages", "ranges", "map"),
        )
    ]
    magic = [line for line in map(_magic_line, memories) if line]
    if magic:
        out.append("\n".join(magic))
    if detail:
        for m in memories:
            if m.magic is not None and m.magic.tagged:
                tagged = sorted(m.magic.tagged.items())
                tagged_rows = [
                    (_hex(phys), order, _size(4096 << order))
                    for phys, order in tagged[:MAX_TAGGED_ROWS]
                ]
                more = len(tagged) - len(tagged_rows)
                shown = f" (first {len(tagged_rows)}; {more} more in --json)"
                out.append(
                    f"{m.direction}: blocks still tagged KHO_PAGE_MAGIC"
                    + (shown if more else "")
                    + "\n"
                    + _table(tagged_rows, headers=("phys", "order", "size"))
                )
            if m.summary is None or not m.summary.blocks:
                continue
            rows = [
                (order, n, n << order, _size((n << order) * 4096))
                for order, n in sorted(m.summary.blocks_by_order.items())
            ]
            out.append(
                f"{m.direction}: blocks per order\n"
                + _table(rows, headers=("order", "blocks", "pages", "size"))
            )
    if ranges:
        for m in memories:
            if m.summary is None or not m.summary.ranges:
                continue
            range_rows = [
                (_hex(r.start), _hex(r.end), _size(r.size)) for r in m.summary.ranges
            ]
            cut = " (truncated)" if m.summary.ranges_truncated else ""
            out.append(
                f"{m.direction}: preserved ranges{cut}\n"
                + _table(range_rows, headers=("start", "end", "size"))
            )
    return "\n\n".join(out)


def render_crash(crash: CrashContext) -> str:
    rows: list[tuple[str, str]] = []
    if crash.live:
        rows.append(("state", "live system (no crash)"))
    else:
        rows.append(("panic", crash.panic_message or "(no panic message in the log)"))
        if crash.crashed_task is not None:
            task = crash.crashed_task
            from_log = " (from the log)" if task.source == "log" else ""
            rows.append(("crashed task", f"{task.comm} (pid {task.pid}){from_log}"))
        rows.append(
            (
                "crashed CPU",
                "-" if crash.crashed_cpu is None else str(crash.crashed_cpu),
            )
        )
    if crash.uptime_seconds is not None:
        rows.append(("uptime", f"{crash.uptime_seconds:.3f} s ({crash.uptime_source})"))
    if crash.taint_mask is not None:
        rows.append(("taint", f"{crash.taint or 'none'} (mask {crash.taint_mask:#x})"))
    if crash.log_source is not None:
        wrapped = (
            f"wrapped: oldest record is #{crash.log_first_seq}, boot lines lost"
            if crash.log_wrapped
            else "complete since boot"
        )
        rows.append(
            ("log", f"{crash.log_records} records, {wrapped} [{crash.log_source}]")
        )
    if crash.build_id:
        rows.append(("build ID", crash.build_id))
    for item, reason in crash.unavailable.items():
        rows.append((item.replace("_", " "), f"unavailable: {reason}"))
    out = ["Crash context", _table(rows, tablefmt="plain")]
    if crash.stack_trace:
        title = "Stack trace of the crashed task"
        if crash.stack_trace_source == "log":
            title += " (as the kernel printed it; no debug info to unwind)"
        out += ["", title, *map(_line, crash.stack_trace)]
    out += ["", "KHO log lines"]
    if crash.kho_log:
        out += [
            f"[{r.timestamp_ns / 1e9:12.6f}] {_line(r.text)}" for r in crash.kho_log
        ]
    elif crash.log_source is None:
        out.append("(log not readable)")
    else:
        out.append("(none in the log buffer)")
    return "\n".join(out)


def _status_note(report: KhoReport) -> str:
    """When the chain follows the log or the outgoing count over damaged
    KHO variables."""
    if report.chain.status is report.state.status:
        return ""
    return " (as the KHO variables read; the chain says otherwise: see findings)"


_CHOSEN_BY = {
    "dwarf": "DWARF types",
    "fdt-compatible": "the root FDT's compatible",
    "release": "the release",
    "default": "nothing fits: newest layout",
}


def render_era(state: KhoState) -> str:
    """Which kho_in/kho_out layout era applies and which facts chose it."""
    era = state.era
    if era is None:
        return "-"
    facts = "; ".join(escape_text(fact) for fact in era.facts)
    return f"{era.layout.era} (chosen by {_CHOSEN_BY[era.chosen_by]}: {facts})"


def render_report(
    report: KhoReport,
    view: str = "chain",
    ranges: bool = False,
    subtree_detail: bool = False,
) -> str:
    """The human view of a report.

    ``chain`` (default) leads with the chain and summarises everything;
    ``subtrees`` decodes every subtree in full; ``memmap`` shows the
    preserved-memory maps per order.  ``ranges`` lists preserved ranges;
    ``subtree_detail`` adds every subtree in full to the ``chain`` view
    (kho-debugfs, which has no maps or crash to show).
    """
    state = report.state
    target = report.target
    where = target.path or (
        "live kernel" if target.kind == "live" else "live QEMU guest"
    )
    kind = target.kind
    if kind == "debugfs":
        kind = "debugfs: no kernel memory read"
    if target.symbols is None:
        symbols = "none (debugfs files only)"
    elif target.symbols.value == "dwarf":
        symbols = "DWARF"
    else:
        symbols = "no KHO debug info (kallsyms + ABI layouts)"
    head = [
        f"kexec chain: {_line(report.chain_line)}",
        "",
        _table(
            [
                ("target", f"{where} ({kind})"),
                ("release", state.release or "-"),
                ("symbols", symbols),
                ("layout", render_era(state)),
                ("KHO", _STATUS_TEXT[state.status] + _status_note(report)),
                ("chain from", report.chain.source or "-"),
            ],
            tablefmt="plain",
        ),
    ]
    sections = ["\n".join(head), render_findings(report.findings)]
    if view == "subtrees":
        sections += [render_fdts(state), render_subtrees(state, detail=True)]
    elif view == "memmap":
        sections += [render_memory(report, detail=True, ranges=ranges)]
        sections += [render_scratch(state)]
    else:
        sections += [
            render_fdts(state),
            render_subtrees(state, detail=subtree_detail),
            render_metadata(state),
            render_memory(report, ranges=ranges),
            render_scratch(state),
            render_luo(report),
        ]
        if report.crash is not None:
            sections.append(render_crash(report.crash))
    return "\n\n".join(s for s in sections if s) + "\n"


def _luo_side_line(side: LuoSide) -> str:
    number = "?" if side.liveupdate_num is None else side.liveupdate_num
    blob = {
        "intact": f"{escape_text(side.compatible or '?')} blob",
        "reused": "blob page freed and reused since boot",
        "absent": "no LUO sub-node",
        "unreadable": "blob not in the dump",
    }.get(side.blob, side.blob)
    source = {
        "serialized": "sessions from the preserved blocks",
        "kernel": "sessions from the kernel's lists",
    }.get(side.source or "", "no sessions")
    return f"{side.direction}: live update #{number} ({blob}; {source})"


def _luo_file_row(
    side: LuoSide, session: LuoSession, file: LuoFile | None
) -> tuple[object, ...]:
    name = escape_text(session.name) if session.name is not None else "?"
    if file is None:
        return (side.direction, name, session.state, "-", "(no files)")
    memfd = file.memfd
    if memfd is None:
        size = pos = seals = folios = "-"
    else:
        size, pos = str(memfd.size), str(memfd.pos)
        seals = "-" if memfd.seals is None else _hex(memfd.seals)
        if memfd.seals:
            from kho_drgn.luo import SEAL_NAMES, flag_names

            seals += " (" + ",".join(flag_names(memfd.seals, SEAL_NAMES)) + ")"
        checked = [f.preserved for f in memfd.folios]
        ok = sum(1 for c in checked if c in ("page-magic", "map"))
        folios = f"{len(memfd.folios)}/{memfd.nr_folios}"
        if any(c is not None for c in checked):
            folios += f", {ok} preserved"
    return (
        side.direction,
        name,
        session.state,
        _hex(file.token),
        escape_text(file.compatible or "?"),
        file.retrieved,
        size,
        pos,
        seals,
        folios,
    )


def render_luo(report: KhoReport) -> str:
    """LUO sessions, their files (memfds) and FLBs, both directions."""
    luo = report.luo
    if luo is None:
        return ""
    sides = [s for s in (luo.incoming, luo.outgoing) if s is not None]
    out = [f"LUO (Live Update Orchestrator) [kernel state: {luo.kernel_source}]"]
    out += [f"  {_luo_side_line(side)}" for side in sides]
    rows = []
    for side in sides:
        for session in side.sessions:
            files: list[LuoFile | None] = [*session.files] or [None]
            rows += [_luo_file_row(side, session, file) for file in files]
    if rows:
        headers = (
            "direction",
            "session",
            "state",
            "token",
            "handler",
            "retrieved",
            "size",
            "pos",
            "seals",
            "folios",
        )
        out += ["", tabulate(rows, headers=headers, disable_numparse=True)]
    flbs = [
        (
            side.direction,
            escape_text(flb.name or "?"),
            _hex(flb.data),
            "-" if flb.count is None else flb.count,
            "-" if flb.retrieve_status is None else flb.retrieve_status,
        )
        for side in sides
        for flb in side.flbs
    ]
    if flbs:
        out += [
            "",
            tabulate(
                flbs,
                headers=("direction", "FLB", "data", "count", "retrieve status"),
                disable_numparse=True,
            ),
        ]
    return "\n".join(out)
