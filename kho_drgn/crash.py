"""Crash context beside the chain: why and where the kernel died.

Each item is read on its own: a missing type or page makes that item
"unavailable" (with the reason), never the whole report.  Without DWARF the
panic message, uptime and taint still come from the log and plain symbols.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from drgn import FaultError, Program

from kho_drgn.log import (
    KernelLog,
    LogRecord,
    find_logged_task,
    find_panic_message,
    panic_reason,
)
from kho_drgn.target import (
    TARGET_ERRORS,
    SymbolSource,
    is_live,
    kho_target,
    symbol_address,
    symbol_source,
    target_byteorder,
)

#: Taint flag letters by bit (Documentation/admin-guide/tainted-kernels.rst),
#: used when the kernel's own taint_flags table has no DWARF.
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTNJ"


@dataclass(eq=False)
class TaskInfo:
    comm: str
    pid: int
    #: ``"drgn"`` (the crashed thread's task_struct) or ``"log"`` (what the
    #: kernel printed with the panic, when there is no debug info for it).
    source: str = "drgn"


@dataclass(eq=False)
class CrashContext:
    """The crash (or, live, the running system) around the KHO state."""

    live: bool
    release: str | None = None
    build_id: str | None = None
    panic_message: str | None = None
    panic_reason: str | None = None
    crashed_cpu: int | None = None
    crashed_task: TaskInfo | None = None
    stack_trace: list[str] = field(default_factory=list)
    #: ``"drgn"`` (unwound from the dump) or ``"log"`` (the printed trace).
    stack_trace_source: str | None = None
    uptime_seconds: float | None = None
    uptime_source: str | None = None
    taint: str | None = None
    taint_mask: int | None = None
    log_source: str | None = None
    log_records: int = 0
    log_first_seq: int | None = None
    log_wrapped: bool | None = None
    kho_log: list[LogRecord] = field(default_factory=list)
    #: item -> why it could not be read
    unavailable: dict[str, str] = field(default_factory=dict)


def crash_context(
    prog: Program, log: KernelLog | None, log_error: str | None = None
) -> CrashContext:
    """Gather the crash context; ``log`` is the already-read kernel log."""
    ctx = CrashContext(live=is_live(prog))
    dwarf = symbol_source(prog) is SymbolSource.DWARF
    info = kho_target(prog).vmcoreinfo
    if info is not None:
        ctx.build_id = info.build_id
    try:
        ctx.release = prog["UTS_RELEASE"].string_().decode("utf-8", "replace")
    except TARGET_ERRORS as e:
        ctx.unavailable["release"] = str(e)

    if log is not None:
        ctx.log_source = log.source
        ctx.log_records = len(log.records)
        ctx.log_first_seq = log.first_seq
        ctx.log_wrapped = log.wrapped
        ctx.kho_log = log.kho_records()
        if not ctx.live:
            ctx.panic_message = find_panic_message(log.lines())
            ctx.panic_reason = panic_reason(ctx.panic_message)
    else:
        ctx.unavailable["log"] = log_error or "not readable"

    if not ctx.live:
        _crashed_thread(prog, ctx, dwarf)
        if log is not None:
            _crashed_thread_from_log(ctx, log)
    _uptime(prog, ctx, dwarf, log)
    _taint(prog, ctx, dwarf)
    return ctx


def _crashed_thread(prog: Program, ctx: CrashContext, dwarf: bool) -> None:
    ctx.crashed_cpu = _panic_cpu(prog)
    if not dwarf:
        ctx.unavailable["crashed_task"] = "needs vmlinux debug info"
        return
    try:
        from drgn.helpers.linux.panic import panic_task

        task = panic_task(prog)
        if not task:
            raise LookupError("no task panicked")
        thread = prog.crashed_thread()
        ctx.crashed_task = TaskInfo(
            comm=task.comm.string_().decode("utf-8", "replace"),
            pid=task.pid.value_(),
        )
    except TARGET_ERRORS as e:
        ctx.unavailable["crashed_task"] = str(e)
        return
    if ctx.crashed_cpu is None:
        try:
            from drgn.helpers.linux.sched import task_cpu

            ctx.crashed_cpu = task_cpu(task)
        except TARGET_ERRORS:
            pass
    try:
        ctx.stack_trace = str(thread.stack_trace()).splitlines()
        ctx.stack_trace_source = "drgn"
    except TARGET_ERRORS as e:
        ctx.unavailable["stack_trace"] = str(e)


def _crashed_thread_from_log(ctx: CrashContext, log: KernelLog) -> None:
    """Fill what drgn could not give from the task and trace the kernel
    printed when it died."""
    if ctx.crashed_task is not None and ctx.stack_trace:
        return
    logged = find_logged_task(log.lines())
    if logged is None:
        if "crashed_task" in ctx.unavailable:
            # e.g. a kdump kernel: vpanic jumps to the capture kernel first
            ctx.unavailable["crashed_task"] += (
                "; the log has no 'CPU: .. PID: .. Comm:' line after the panic"
            )
        return
    if ctx.crashed_task is None:
        ctx.crashed_task = TaskInfo(logged.comm, logged.pid, source="log")
        ctx.unavailable.pop("crashed_task", None)
        if ctx.crashed_cpu is None:
            ctx.crashed_cpu = logged.cpu
    if not ctx.stack_trace and logged.stack and logged.pid == ctx.crashed_task.pid:
        ctx.stack_trace = logged.stack
        ctx.stack_trace_source = "log"
        ctx.unavailable.pop("stack_trace", None)


def _panic_cpu(prog: Program) -> int | None:
    """``panic_cpu`` (-1 when no CPU panicked)."""
    address = symbol_address(prog, "panic_cpu")
    if address is None:
        return None
    try:
        cpu = int.from_bytes(prog.read(address, 4), target_byteorder(prog), signed=True)
    except FaultError:
        return None
    return cpu if cpu >= 0 else None


def _uptime(
    prog: Program, ctx: CrashContext, dwarf: bool, log: KernelLog | None
) -> None:
    if dwarf:
        try:
            from drgn.helpers.linux.timekeeping import uptime

            ctx.uptime_seconds = float(uptime(prog))
            ctx.uptime_source = "timekeeping"
            return
        except TARGET_ERRORS:
            pass
    if log is not None and log.records:
        ctx.uptime_seconds = log.records[-1].timestamp_ns / 1e9
        ctx.uptime_source = "last log record"
    else:
        ctx.unavailable["uptime"] = "needs debug info or a readable log"


def _taint(prog: Program, ctx: CrashContext, dwarf: bool) -> None:
    address = symbol_address(prog, "tainted_mask")
    if address is None:
        ctx.unavailable["taint"] = "no tainted_mask symbol"
        return
    try:
        ctx.taint_mask = prog.read_word(address)
    except FaultError as e:
        ctx.unavailable["taint"] = str(e)
        return
    letters = TAINT_LETTERS
    if dwarf and ctx.taint_mask:
        # drgn's helper reads the kernel's own table, which knows flags newer
        # than ours: a set bit shows its letter at the bit's position.
        with contextlib.suppress(*TARGET_ERRORS):
            from drgn.helpers.linux.panic import tainted

            letters = tainted(prog)
    ctx.taint = "".join(
        letter for bit, letter in enumerate(letters) if ctx.taint_mask & (1 << bit)
    )
