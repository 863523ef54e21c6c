"""The kernel log as kho-drgn uses it: records, wrap detection, KHO lines.

Pure: the reading is in :mod:`kho_drgn.printk`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Log lines about KHO that are worth showing beside the chain.
KHO_LINE_MARKERS = ("KHO: ", "from KHO", "kexec-metadata", "kho_test", "test_kho")


@dataclass(eq=False)
class LogRecord:
    seq: int
    timestamp_ns: int
    text: str


@dataclass(eq=False)
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


@dataclass(eq=False)
class LoggedTask:
    """The task and stack the kernel printed when it died (``dump_stack``)."""

    cpu: int
    pid: int
    comm: str
    stack: list[str] = field(default_factory=list)


#: dump_stack's header: ``CPU: 1 UID: 0 PID: 1 Comm: init Not tainted ...``
#: (``UID:`` since 6.11).  comm is at most 15 characters and may hold spaces.
_TASK_HEADER_RE = re.compile(
    r"\bCPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.{1,20}?)"
    r" (?:Not tainted|Tainted: )"
)
#: One frame of a printed call trace: ``[? ]symbol+0xoff/0xsize [module]``.
_FRAME_RE = re.compile(r"^\s*(?:\? )?[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?$")
_STACK_MARKERS = ("<TASK>", "</TASK>", "<IRQ>", "</IRQ>", "<NMI>", "</NMI>")
#: Register and code dumps printed inside a trace (``RIP: ..``, ``R08: ..``).
_REGISTER_RE = re.compile(r"(?:[A-Z][A-Z0-9]{1,3}|Code): ")
#: An Oops prints its header within a few lines of its ``BUG:``/``Oops:``.
OOPS_HEADER_GAP = 8
#: Frames kept at most from one printed trace.
MAX_LOGGED_FRAMES = 64
#: How far before a panic line an Oops header may be (registers, trace,
#: modules): an older header belongs to some earlier warning.
MAX_OOPS_LINES = 200


def find_logged_task(lines: list[str]) -> LoggedTask | None:
    """The task and call trace printed with the crash, from the log alone.

    Without vmlinux debug info drgn cannot name the crashed task or unwind
    its stack, but the kernel printed both: the ``CPU: .. PID: .. Comm: ..``
    header and the ``Call Trace:`` that follow the panic (or the last Oops).
    """
    panic_at = max(
        (i for i, line in enumerate(lines) if _PANIC_RE.search(line)), default=None
    )
    if panic_at is None:
        return None
    # The header comes right after the panic line (panic's dump_stack) or,
    # for an Oops, just before it; take the nearest one after, else before.
    after = (i for i in range(panic_at, len(lines)) if _TASK_HEADER_RE.search(lines[i]))
    first = max(0, panic_at - MAX_OOPS_LINES)
    before = (
        i
        for i in range(panic_at, first - 1, -1)
        if _TASK_HEADER_RE.search(lines[i]) and _follows_oops(lines, i)
    )
    at = next(after, None)
    if at is None:
        at = next(before, None)
    if at is None:
        return None
    match = _TASK_HEADER_RE.search(lines[at])
    assert match is not None
    task = LoggedTask(int(match["cpu"]), int(match["pid"]), match["comm"])
    in_trace = False
    for line in lines[at + 1 :]:
        text = line.strip()
        if text == "Call Trace:":
            in_trace = True
        elif not in_trace or text in _STACK_MARKERS:
            continue
        elif _FRAME_RE.match(text):
            task.stack.append(text)
            if len(task.stack) >= MAX_LOGGED_FRAMES:
                break
        elif task.stack and not _REGISTER_RE.match(text):
            break
    return task


def _follows_oops(lines: list[str], header: int) -> bool:
    """Whether a task header belongs to an Oops or BUG (not to a WARNING,
    which prints the same header but does not kill the kernel)."""
    for line in lines[max(0, header - OOPS_HEADER_GAP) : header]:
        match = _PANIC_RE.search(line)
        if match and not match.group(1).startswith("Kernel panic"):
            return True
    return False
