"""Boot the KHO lab kernels in QEMU (TCG), hold the last one, attach drgn live.

The lab (``shared/fixtures/kho-7.2/live``) is two kernels and a busybox
initramfs whose ``/init`` prints ``=== KHOLAB ...`` lines on the serial console
and kexecs along ``kholab.plan=``.  :func:`boot_lab` starts QEMU, waits until
the last kernel prints ``=== KHOLAB HOLD`` and yields a :class:`LabRun` with the
QMP socket (for ``drgn --qemu``) and the parsed serial log.  QEMU is killed on
exit from the context, whatever happens, and dies with the test process.

QEMU's QMP socket takes one client at a time: a second ``drgn --qemu`` blocks
until the first disconnects, so attach one drgn after another.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from fixturedata import decompressed, shared_dir

QEMU = "qemu-system-x86_64"
LIVE_DIR = Path("fixtures/kho-7.2/live")  # relative to shared_dir()
VMLINUX_B_XZ = Path("fixtures/kho-7.2/vmlinux-7.2.13-kho-b.xz")
KERNELS = {"a": "7.2.13-kho-a", "b": "7.2.13-kho-b"}  # plan letter -> release
INITRD_XZ = "lab-initrd.cpio.xz"
#: init.sh reads ``kholab.*`` with a greedy sed (the last occurrence wins) and
#: the base line is repeated, ``~``-joined, inside ``kholab.base=``: so
#: ``kholab.hold=1`` must end it, or ``hold`` would read as ``1~<more>``.
BASE_ARGS = "console=ttyS0 kho={kho} panic=0 reserve_mem=1M:4K:khotest"
HOLD_ARG = "kholab.hold=1"
QEMU_ARGS = (
    "-accel", "tcg", "-m", "512M", "-smp", "2", "-nographic", "-nodefaults",
    "-no-reboot", "-device", "vmcoreinfo",
)  # fmt: skip
KEEP_ENV = "KHO_DRGN_KEEP_LAB"  # set to 1 to keep the work dir (logs) afterwards
POLL_SECONDS = 0.1
TAIL_LINES = 40
DEBUGFS = "/sys/kernel/debug/"
MARK = "=== KHOLAB "
TIMESTAMP = re.compile(r"\[\s*\d+\.\d+\] ")  # printk's time prefix
DMESG_HEAD = re.compile(r"=== KHOLAB DMESG \[\s*\d+\.\d+\] ")
BEGIN_ARGS = re.compile(r"stage=(\S*) release=(\S*)")
BASE64_LINE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL


class LabError(RuntimeError):
    """The lab VM did not reach HOLD as planned (message has the log tails)."""


class LabUnavailable(LabError):
    """QEMU or the lab fixtures are missing: callers usually skip."""


def qemu_available() -> bool:
    """Whether ``qemu-system-x86_64`` is on PATH."""
    return shutil.which(QEMU) is not None


def live_dir() -> Path | None:
    """The lab fixture folder, or None if absent."""
    shared = shared_dir()
    path = shared / LIVE_DIR if shared else None
    return path if path and path.is_dir() else None


def lab_unavailable(*kernels: str) -> str | None:
    """Why the lab cannot boot (naming what is missing), or None if it can."""
    if not qemu_available():
        return f"{QEMU} not on PATH (apt-get install qemu-system-x86)"
    shared = shared_dir()
    if shared is None:
        return "no shared fixtures: ../shared beside the repo or $KHO_DRGN_SHARED"
    live = shared / LIVE_DIR
    names = [INITRD_XZ, *(f"bzImage-{KERNELS[k]}" for k in kernels or KERNELS)]
    missing = [str(live / n) for n in names if not (live / n).is_file()]
    return f"lab fixture missing: {', '.join(missing)}" if missing else None


def vmlinux_b() -> Path | None:
    """Kernel b's vmlinux, decompressed into the cache; None if not shipped."""
    shared = shared_dir()
    path = shared / VMLINUX_B_XZ if shared else None
    return decompressed(path) if path and path.is_file() else None


@dataclass
class Stage:
    """One kernel of the chain, as its ``/init`` reported itself."""

    number: int
    release: str
    cmdline: str = ""
    dmesg: list[str] = field(default_factory=list)  # grep KHO|kexec|liveupdate
    files: dict[str, bytes] = field(default_factory=dict)  # debugfs path -> bytes
    bad_files: dict[str, str] = field(default_factory=dict)  # path -> why not
    vmcoreinfo: str | None = None  # "<phys hex> <size>" from /sys/kernel/vmcoreinfo
    kexec_to: str | None = None  # plan letter this stage kexec'd into
    kexec_failed: bool = False
    held: bool = False
    panicked: bool = False

    @property
    def kho_lines(self) -> list[str]:
        """The ``KHO: ...`` dmesg lines, without their timestamps."""
        stamps = ((TIMESTAMP.match(line), line) for line in self.dmesg)
        texts = [line[m.end() :] if m else line for m, line in stamps]
        return [t for t in texts if t.startswith("KHO: ")]

    def debugfs(self, relative: str) -> bytes | None:
        """A debugfs file by path below /sys/kernel/debug (``kho/in/fdt``)."""
        return self.files.get(DEBUGFS + relative.lstrip("/"))


def _clean(line: str) -> str:
    """A serial line without CR/NUL and without what precedes ``=== KHOLAB``
    (the firmware's escapes, e.g. ``\\x1bc\\x1b[2J``, with a quiet kernel)."""
    line = line.strip("\r\x00")
    start = line.find(MARK)
    return line[start:] if start > 0 else line


def _is_init_output(text: str) -> bool:
    """Whether text could start a line of /init's (not firmware escapes)."""
    return (
        text.startswith(MARK)
        or MARK.startswith(text)
        or bool(BASE64_LINE.fullmatch(text))
    )


def _unspliced(lines: Iterable[str]) -> Iterator[str]:
    """Move kernel messages cut into a line of /init's out of it.

    ``ab[ 1.2] msg`` + ``cd`` gives ``[ 1.2] msg`` + ``abcd``: printk writes
    whole lines to the UART, but may do so in the middle of a tty write.
    Only ``=== KHOLAB`` and base64 lines are mended: the firmware's escape
    sequences also precede a timestamp (``\\x1bc...[    0.000000] Linux``).
    """
    pending = ""
    for line in lines:
        if TIMESTAMP.match(line):  # a whole kernel message
            yield line
            continue
        line, pending = pending + line, ""
        head = DMESG_HEAD.match(line)
        kmsg = TIMESTAMP.search(line, head.end() if head else 0)
        if kmsg and _is_init_output(line[: kmsg.start()]):
            line, pending = line[kmsg.start() :], line[: kmsg.start()]
        yield line
    if pending:
        yield pending


def parse_serial(text: str) -> list[Stage]:
    """Parse ``=== KHOLAB`` lines: one :class:`Stage` per ``BEGIN``.

    FILE blocks are ``base64`` output (76 columns) up to ``END FILE``; kernel
    messages among them, or cut into their lines, are left out.  A block
    that does not decode goes to ``bad_files`` (path -> reason).
    """
    stages: list[Stage] = []
    path: str | None = None
    chunks: list[str] = []

    def close_file(error: str | None = None) -> None:
        nonlocal path
        if path is None:
            return
        try:
            if error is None:
                stages[-1].files[path] = base64.b64decode(
                    "".join(chunks), validate=True
                )
        except binascii.Error as exc:
            error = f"bad base64: {exc}"
        if error is not None:
            stages[-1].bad_files[path] = error
        path = None

    for line in _unspliced(_clean(raw) for raw in text.splitlines()):
        if not line.startswith(MARK):
            if path is None or TIMESTAMP.match(line):
                continue
            if BASE64_LINE.fullmatch(line):
                chunks.append(line)
            else:
                close_file(f"not base64: {line[:80]!r}")
            continue
        word, _, rest = line[len(MARK) :].partition(" ")
        if word == "END" and rest == "FILE":
            close_file()
            continue
        close_file("unterminated (no END FILE)")
        if word == "BEGIN":
            begin = BEGIN_ARGS.match(rest)
            number, release = begin.groups() if begin else ("", rest)
            stages.append(
                Stage(int(number) if number.isdigit() else len(stages), release)
            )
        elif not stages:
            continue
        elif word == "FILE":
            path, chunks = rest, []
        elif word == "CMDLINE":
            stages[-1].cmdline = rest
        elif word == "DMESG":
            stages[-1].dmesg.append(rest)
        elif word == "VMCOREINFO":
            stages[-1].vmcoreinfo = rest
        elif word == "KEXEC" and rest == "FAILED":
            stages[-1].kexec_failed = True
        elif word == "KEXEC":
            stages[-1].kexec_to = rest.removeprefix("to bzImage-")
        elif word == "HOLD":
            stages[-1].held = True
        elif word == "PANIC":
            stages[-1].panicked = True
    if stages:
        close_file("unterminated (log ends)")
    return stages


@dataclass
class LabRun:
    """A held lab VM: attach with ``drgn --qemu <qmp_socket>``."""

    qmp_socket: Path
    serial_log: Path
    process: subprocess.Popen[bytes]
    cmdline: str  # the first kernel's command line
    boot_seconds: float  # QEMU start to HOLD
    stages: list[Stage]  # parsed when HOLD appeared

    @property
    def last(self) -> Stage:
        """The held (running) kernel's stage."""
        return self.stages[-1]

    @property
    def kho_lines(self) -> list[str]:
        """The ``KHO: ...`` dmesg lines of the last stage."""
        return self.last.kho_lines

    def serial_text(self) -> str:
        """The serial log as it is now."""
        return self.serial_log.read_bytes().decode(errors="replace")


def lab_cmdline(plan: str, kho: bool = True, extra_args: str = "") -> str:
    """The first kernel's command line; ``extra_args`` reach every kernel."""
    if any(c in extra_args for c in "~\"'") or "kholab." in extra_args:
        raise ValueError(
            f"extra_args must not use ~, quotes or kholab.*: {extra_args!r}"
        )
    base = " ".join(
        [BASE_ARGS.format(kho="on" if kho else "off"), *extra_args.split(), HOLD_ARG]
    )
    return (
        f"{base} kholab.stage=0 kholab.plan={plan} kholab.base={base.replace(' ', '~')}"
    )


def _plan_letters(plan: str, first: str) -> list[str]:
    letters = [first, *(plan.split(",") if plan else [])]
    unknown = [x for x in letters if x not in KERNELS]
    if unknown:
        raise ValueError(
            f"unknown kernel(s) {unknown}; plan/first take {list(KERNELS)}"
        )
    return letters


def _opt(path: Path) -> str:
    """A path as a QEMU option value (commas doubled)."""
    return str(path).replace(",", ",,")


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log, control characters escaped (``\\x1bc`` would
    reset the terminal showing the error)."""
    with suppress(OSError):
        text = "\n".join(
            path.read_bytes().decode(errors="replace").splitlines()[-lines:]
        )
        return "".join(
            c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text
        )
    return "(none)"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn: SIGKILL the child when the test process dies (Linux).

    PR_SET_PDEATHSIG follows the forking *thread*: hold ``boot_lab`` in the
    thread that entered it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


def _workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="kho-lab-"))
    if len(str(work / "qmp.sock")) <= SUN_PATH_MAX:
        return work
    work.rmdir()  # $TMPDIR too deep for a Unix socket path
    return Path(tempfile.mkdtemp(prefix="kho-lab-", dir="/tmp"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # own session: pgid == pid
        with suppress(ProcessLookupError):
            proc.kill()
    proc.wait(timeout=30)


def _wait_for_hold(
    proc: subprocess.Popen[bytes], serial: Path, timeout: float, describe: str
) -> float:
    """Poll the serial log until HOLD; return seconds waited, or raise."""
    start = time.monotonic()
    while True:
        with suppress(FileNotFoundError):
            text = serial.read_bytes().decode(errors="replace")
            if f"{MARK}HOLD" in text:
                return time.monotonic() - start
            for bad in (f"{MARK}KEXEC FAILED", f"{MARK}PANIC", "Kernel panic - "):
                if bad in text:
                    raise LabError(f"{describe}: guest printed {bad!r}")
        if proc.poll() is not None:
            raise LabError(f"{describe}: QEMU exited early (status {proc.returncode})")
        if time.monotonic() - start > timeout:
            raise LabError(f"{describe}: no {MARK}HOLD within {timeout:g} s")
        time.sleep(POLL_SECONDS)


@contextmanager
def boot_lab(
    plan: str = "a,b",
    first: str = "a",
    kho: bool = True,
    extra_args: str = "",
    timeout: float = 120,
) -> Iterator[LabRun]:
    """Cold-boot kernel ``first``, kexec along ``plan`` (``"a,b"``: into a,
    then b), hold the last kernel; yield the running :class:`LabRun`.

    ``plan=""`` holds ``first`` itself.  Raises :class:`LabUnavailable` when
    QEMU or fixtures are missing, :class:`LabError` (with the serial and QEMU
    log tails) on timeout, early QEMU exit, a guest panic or a chain other
    than planned.  QEMU is killed and its work dir removed on exit.
    """
    letters = _plan_letters(plan, first)
    cmdline = lab_cmdline(plan, kho, extra_args)
    why = lab_unavailable(*letters)
    live = live_dir()
    if why or live is None:
        raise LabUnavailable(why or "lab fixtures missing")
    initrd = decompressed(live / INITRD_XZ)
    work = _workdir()
    run_log = work / "qemu.log"
    qmp, serial = work / "qmp.sock", work / "serial.log"
    cmd = [
        QEMU, *QEMU_ARGS, "-name", f"kho-lab-{first}{plan.replace(',', '')}",
        "-serial", f"file:{_opt(serial)}",
        "-qmp", f"unix:{_opt(qmp)},server=on,wait=off",
        "-kernel", str(live / f"bzImage-{KERNELS[first]}"), "-initrd", str(initrd),
        "-append", cmdline,
    ]  # fmt: skip
    describe = f"lab {first} -> [{plan}] (kho={'on' if kho else 'off'})"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with run_log.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
                start_new_session=True,  # no terminal ^C; we kill it ourselves
                preexec_fn=_die_with_parent(),
            )
        try:
            seconds = _wait_for_hold(proc, serial, timeout, describe)
            stages = parse_serial(serial.read_bytes().decode(errors="replace"))
            got = [s.release for s in stages]
            want = [KERNELS[x] for x in letters]
            if got != want or not stages[-1].held:
                raise LabError(f"{describe}: chain {got}, expected {want} then HOLD")
            if not qmp.exists():
                raise LabError(f"{describe}: no QMP socket at {qmp}")
        except LabError as exc:
            keep = f"\nwork dir kept: {work}" if os.environ.get(KEEP_ENV) else ""
            raise LabError(
                f"{exc}\ncommand: {' '.join(cmd)}\n--- QEMU output ---\n"
                f"{_tail(run_log)}\n--- serial log tail ---\n{_tail(serial)}{keep}"
            ) from None
        yield LabRun(qmp, serial, proc, cmdline, seconds, stages)
    finally:
        try:
            if proc is not None:
                _stop(proc)
        finally:
            if not os.environ.get(KEEP_ENV):
                shutil.rmtree(work, ignore_errors=True)


def run_drgn(
    lab: LabRun, code: str, vmlinux: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``drgn --qemu <socket> [-s vmlinux] -e code`` (this Python's drgn).

    Without ``vmlinux``, ``--no-default-symbols``.  The timeout also bounds
    the wait for QMP, which serves one client at a time.
    """
    symbols = ["-s", str(vmlinux)] if vmlinux else ["--no-default-symbols"]
    return subprocess.run(
        [sys.executable, "-m", "drgn", "--quiet", "--qemu", str(lab.qmp_socket),
         *symbols, "-e", code],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
