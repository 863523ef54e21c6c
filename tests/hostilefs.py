"""Hostile file trees for the kho-triage tests: FIFOs, links to devices,
unreadable paths, hand-made ELF headers, and a way to read them as an
unprivileged user (root ignores permission bits)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: The user an unprivileged run switches to when the tests run as root.
NOBODY = 65534


@contextmanager
def open_tmp_dir() -> Iterator[Path]:
    """A temporary directory everybody can enter (pytest's tmp_path is under
    a 0700 directory), removed afterwards whatever modes were set inside."""
    path = Path(tempfile.mkdtemp(prefix="kho-triage-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o755)
        shutil.rmtree(path)


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str


def run_unprivileged(fn: Callable[[], int], timeout: float = 60) -> Outcome:
    """``fn()`` in a forked child that cannot bypass permission bits: as
    user and group 65534 when the tests run as root, else as the current
    user. The interpreter is already loaded, so nothing needs executing
    (this Python may live where that user cannot reach). A child still
    running after ``timeout`` is killed and reported as status -1: a hang
    fails the test rather than hanging it."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        out.touch(mode=0o666)
        err.touch(mode=0o666)
        out.chmod(0o666)
        err.chmod(0o666)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            status = 99
            try:
                sys.stdout = open(out, "w")  # noqa: SIM115
                sys.stderr = open(err, "w")  # noqa: SIM115
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                status = fn()
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        deadline = time.monotonic() + timeout
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(wait_status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
                break
            time.sleep(0.02)
        return Outcome(status, out.read_text(), err.read_text())


def elf_header(
    e_type: int = 4,
    phoff: int = 64,
    phnum: int = 1,
    phentsize: int = 56,
    shoff: int = 0,
    shnum: int = 0,
    shentsize: int = 64,
) -> bytes:
    """An ELF64 little-endian header (x86-64), ``e_type`` 4 = core."""
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHI", header, 16, e_type, 62, 1)
    struct.pack_into("<QQ", header, 0x20, phoff, shoff)
    struct.pack_into("<HHHHHH", header, 0x34, 64, phentsize, phnum, shentsize, shnum, 0)
    return bytes(header)


def program_header(p_type: int, offset: int, filesz: int) -> bytes:
    return struct.pack("<IIQQQQQQ", p_type, 0, offset, 0, 0, filesz, filesz, 0)


def section_header(sh_type: int, offset: int, size: int) -> bytes:
    return struct.pack("<IIQQQQIIQQ", 0, sh_type, 0, 0, offset, size, 0, 0, 4, 0)


def build_id_note(build_id: bytes) -> bytes:
    return struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id


def special_kind(path: Path) -> str | None:
    """``FIFO``, ``socket``, ``device`` or None for what ``path`` resolves to."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return None
