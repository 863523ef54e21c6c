"""Crash buckets: one signature per crash, so that a fleet's crashes group.

As syzbot titles and Windows Error Reporting buckets do, the bucket names the
crashed task's top frames *after* the panic and printing machinery, function
names without offsets, behind the class of the panic message::

    sysrq triggered crash in pde_write < proc_reg_write < vfs_write

It works on both forms of stack the crash context has: drgn's DWARF stack
(``#0  pvpanic_send_event (drivers/misc/pvpanic/pvpanic.c:53:2)``) and the call
trace the kernel logged (``dump_stack_lvl+0x47/0x6f``, ``? foo+0x1/0x2 [mod]``).
A DWARF stack names inlined functions too, which a logged trace cannot, so the
same crash may bucket differently with and without vmlinux; the record says
which stack was used.

Pure: strings in, a :class:`CrashBucket` out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = (
    "BUCKET_FRAMES",
    "SKIP_FRAMES",
    "CrashBucket",
    "crash_bucket",
    "frame_function",
    "panic_signature",
)

#: Frames of the machinery that reports a crash rather than causes it, skipped
#: from the top of the stack (``fnmatch``-like: a trailing ``*`` is a prefix).
SKIP_FRAMES = (
    # panic and its notifiers (pvpanic, kmsg_dump) and kdump
    "panic",
    "vpanic",
    "nmi_panic",
    "check_panic_on_warn",
    "notifier_call_chain",
    "atomic_notifier_call_chain",
    "blocking_notifier_call_chain",
    "raw_notifier_call_chain",
    "pvpanic_*",
    "kmsg_dump*",
    "__crash_kexec",
    "crash_kexec",
    "crash_setup_regs",
    "machine_crash_shutdown",
    "native_machine_crash_shutdown",
    # printing the stack and the oops
    "dump_stack*",
    "show_stack*",
    "show_trace_log_lvl",
    "show_regs*",
    "__show_regs",
    "printk*",
    "_printk",
    "vprintk*",
    "__warn",
    "warn_slowpath*",
    "report_bug",
    "handle_bug",
    "exc_invalid_op",
    "asm_exc_invalid_op",
    "oops_end",
    "oops_begin",
    "die",
    "__die",
    "__die_body",
    "do_trap",
    "do_error_trap",
    "bad_area*",
    "page_fault_oops",
    "kernelmode_fixup_or_oops",
    "__bad_area_nosemaphore",
    "no_context",
    "BUG",
    # the exception entry that led into the oops: the next frame faulted
    "die_addr",
    "do_page_fault",
    "__do_page_fault",
    "do_user_addr_fault",
    "do_kern_addr_fault",
    "handle_page_fault",
    "exc_page_fault",
    "asm_exc_page_fault",
    "exc_general_protection",
    "asm_exc_general_protection",
    "do_int3*",
    "exc_int3",
    "asm_exc_int3",
    # arm64's
    "__do_kernel_fault",
    "do_translation_fault",
    "do_mem_abort",
    "el1_abort",
    "el1h_64_sync*",
    "do_debug_exception",
    "bug_brk_handler",
    "bug_handler",
    "call_break_hook",
    "brk_handler",
    # sysrq: the handler that was asked to crash and its dispatch
    "sysrq_handle_*",
    "__handle_sysrq",
    "handle_sysrq",
    "write_sysrq_trigger",
)

#: Frames kept in a bucket.
BUCKET_FRAMES = 3

_NOISE = re.compile(r"0x[0-9a-fA-F]+|\b[0-9]+\b", re.ASCII)
#: What ``str.strip`` and SQL ``trim`` both remove, so every engine agrees.
_BLANKS = " \t\n\r\x0b\x0c"
#: ``#3  name (file:line:col)`` or ``#20 name+0x70/0xae (file:line)`` (drgn).
_DWARF_FRAME = re.compile(r"#\d+\s+(?P<name>[^\s(]+)")
#: ``[? ]name+0xoff/0xsize [module]`` (the kernel's call trace).
_LOG_FRAME = re.compile(r"(?P<unreliable>\? )?(?P<name>[^\s+]+)\+0x")
#: ``name.cold``, ``name.isra.0``, ``name.constprop.0``: compiler clones.
_CLONE = re.compile(r"\.(?:cold|isra|constprop|part|llvm)(?:\.\d+)?.*$")


def panic_signature(reason: str | None) -> str:
    """A panic reason with addresses and numbers masked, for grouping.

    ASCII digits only and ASCII blanks stripped, as SQL engines do it.
    """
    masked = _NOISE.sub("N", reason or "").strip(_BLANKS)
    return masked or "(no panic message)"


def frame_function(frame: str) -> str | None:
    """The function a stack line names, without offset, module or clone
    suffix; ``None`` for an address-only frame or an unreliable (``?``)
    logged one."""
    text = frame.strip()
    match = _DWARF_FRAME.match(text)
    if match:
        name = match["name"].split("+0x", 1)[0]
    else:
        match = _LOG_FRAME.match(text)
        if match is None or match["unreliable"]:
            return None
        name = match["name"]
    if name.startswith("0x") or not name:
        return None
    return _CLONE.sub("", name) or None


def _skipped(name: str) -> bool:
    return any(
        name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
        for pattern in SKIP_FRAMES
    )


@dataclass(frozen=True)
class CrashBucket:
    """A crash's bucket and what it was made of."""

    bucket: str
    #: the panic message class (:func:`panic_signature`)
    message_class: str
    #: the functions named, top first
    frames: tuple[str, ...]


def crash_bucket(reason: str | None, stack: Iterable[str]) -> CrashBucket:
    """The bucket of a crash from its panic reason and its stack lines.

    The machinery at the top of the stack (:data:`SKIP_FRAMES`) is skipped
    until the first other function; the next :data:`BUCKET_FRAMES`
    functions, repeats of the same function (inlined copies) folded, name
    the bucket.  Without such frames the bucket is the message class alone.
    """
    message_class = panic_signature(reason)
    frames: list[str] = []
    skipping = True
    for line in stack:
        name = frame_function(line)
        if name is None:
            continue
        if skipping and _skipped(name):
            continue
        skipping = False
        if frames and frames[-1] == name:
            continue
        frames.append(name)
        if len(frames) == BUCKET_FRAMES:
            break
    bucket = message_class
    if frames:
        bucket += " in " + " < ".join(frames)
    return CrashBucket(bucket, message_class, tuple(frames))
