"""Finding dumps (paths, globs, /var/crash trees) and vmlinux files by build ID.

Discovery runs on trees nobody has checked: it opens regular files only (a
FIFO, socket or device, also behind a symbolic link, is reported and never
opened, so it cannot block or have side effects), reads a bounded number of
bytes from each, stops at a deadline, and reports every path it could not
read instead of passing over it in silence.
"""

from __future__ import annotations

import glob
import os
import stat
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kho_drgn.safefiles import file_kind, identity, open_regular

#: Magics of the dump formats drgn reads.
ELF_MAGIC = b"\x7fELF"
KDUMP_MAGICS = (b"KDUMP   ", b"DISKDUMP")
FLAT_MAGIC = b"makedumpfile"
#: ELF ``e_type`` of a core file (a vmlinux is ET_EXEC, a module ET_REL).
ET_CORE = 4
PT_NOTE = 4
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3
#: ``e_phnum`` saying the real count is in section header 0's ``sh_info``.
PN_XNUM = 0xFFFF
#: Names of dump files inside a kdump /var/crash/<host-date>/ directory.
DUMP_NAMES = ("vmcore", "vmcore.flat", "dump.", "vmcore-")
#: Bounds on what is read of one ELF file to find its build ID or check its
#: layout: a header that claims more is not trusted.
MAX_HEADER_TABLE = 4 << 20
MAX_NOTE_SECTION = 64 << 10
MAX_NOTE_BYTES = 1 << 20
MAX_BUILD_ID = 256
#: Why a path was not (completely) read when the discovery deadline passed.
TIMED_OUT = "discovery timed out before this was read (completely)"


@dataclass(frozen=True)
class Skipped:
    """A path discovery could not or would not read, and why."""

    path: Path
    reason: str


@dataclass
class Discovery:
    """What a walk found: dumps to analyse, paths skipped, and the identity
    (``st_dev``, ``st_ino``) of every file and directory taken as input."""

    dumps: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    inputs: set[tuple[int, int]] = field(default_factory=set)


@dataclass
class DebuginfoIndex:
    """Build ID -> vmlinux, the paths skipped while indexing, and the identity
    of every file and directory read."""

    by_build_id: dict[str, Path] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    inputs: set[tuple[int, int]] = field(default_factory=set)


class DiscoveryTimeout(Exception):
    """The discovery deadline passed."""


def reason(e: OSError) -> str:
    """An OSError in a few words, without the path (the record names it)."""
    return e.strerror or str(e)


def _dump_kind_of(head: bytes) -> str | None:
    if head.startswith(ELF_MAGIC):
        if len(head) < 18 or head[5] not in (1, 2):
            return None
        e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
        return "elf" if e_type == ET_CORE else None
    if head.startswith(KDUMP_MAGICS):
        return "kdump"
    if head.startswith(FLAT_MAGIC):
        return "flat"
    return None


def dump_kind(path: Path) -> str | None:
    """``elf``, ``kdump``, ``flat`` or None (not a dump we can open).

    An ELF file counts only when it is a core file, so a vmlinux lying beside
    the dumps (or passed by mistake) is not taken for one.
    """
    try:
        with open_regular(path) as f:
            return _dump_kind_of(f.read(18))
    except OSError:
        return None


def _looks_like_dump_name(name: str) -> bool:
    return name.startswith(DUMP_NAMES) and not name.endswith((".txt", ".log"))


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DiscoveryTimeout


#: The live system's pseudo filesystems: never entered through a link found
#: in a crash tree.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _pseudo_filesystem(path: Path) -> str | None:
    real = os.path.realpath(path)
    return next(
        (
            top
            for top in PSEUDO_FILESYSTEMS
            if real == top or real.startswith(top + "/")
        ),
        None,
    )


def for_each_file(
    top: Path, deadline: float | None = None, seen: set[tuple[int, int]] | None = None
) -> Iterator[tuple[Path, os.stat_result] | Skipped]:
    """Every regular file under ``top`` with its stat, depth first in name
    order, and a :class:`Skipped` for every entry that is not one or cannot
    be read.

    Symbolic links are followed (a directory is walked once, whatever the
    links to it, so loops end; ``seen`` holds the directories walked);
    nothing is opened but directories, and however deep the tree the walk
    keeps its own stack.

    :raises DiscoveryTimeout: when ``deadline`` (``time.monotonic()``) passes.
    """
    seen = set() if seen is None else seen
    try:
        top_st = os.stat(top)
    except OSError as e:
        yield Skipped(top, f"cannot read: {reason(e)}")
        return
    stack: list[tuple[Path, Iterator[str]]] = []
    listed = _listing(top, top_st, seen, deadline)
    if isinstance(listed, Skipped):
        yield listed
    elif listed is not None:
        stack.append((top, listed))
    while stack:
        directory, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        _check_deadline(deadline)
        path = directory / name
        try:
            st = os.stat(path)
        except OSError as e:
            broken = os.path.islink(path)
            yield Skipped(path, f"{'broken link: ' if broken else ''}{reason(e)}")
            continue
        pseudo = (
            _pseudo_filesystem(path)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
            else None
        )
        if pseudo is not None and _pseudo_filesystem(top) is None:
            # a link out of the tree into the live system (/proc/kcore is an
            # ELF core): not walked, not taken; named on the command line, a
            # /proc/vmcore in a capture kernel is still read
            yield Skipped(path, f"a link into {pseudo}: not read")
            continue
        if stat.S_ISDIR(st.st_mode):
            listed = _listing(path, st, seen, deadline)
            if isinstance(listed, Skipped):
                yield listed
            elif listed is not None:
                stack.append((path, listed))
        elif stat.S_ISREG(st.st_mode):
            yield path, st
        else:
            yield Skipped(path, f"not a regular file ({file_kind(st.st_mode)})")


def _listing(
    directory: Path,
    st: os.stat_result,
    seen: set[tuple[int, int]],
    deadline: float | None,
) -> Iterator[str] | Skipped | None:
    """The names in a directory, sorted; None if it was walked already."""
    if identity(st) in seen:
        return None
    _check_deadline(deadline)
    try:
        with os.scandir(directory) as it:
            names = sorted(entry.name for entry in it)
    except OSError as e:
        # reported under every name that leads to it: none is walked
        return Skipped(directory, f"cannot list directory: {reason(e)}")
    seen.add(identity(st))
    return iter(names)


def _sniff(path: Path) -> bytes | Skipped:
    try:
        with open_regular(path) as f:
            return f.read(18)
    except OSError as e:
        return Skipped(path, f"cannot read: {reason(e)}")


def _candidates(arg: str) -> Iterator[Path | Skipped]:
    """The path itself when it exists (``vmcore[1]`` is a name, not a
    pattern), else the paths the glob matches."""
    if os.path.lexists(arg) or not glob.has_magic(arg):
        yield Path(arg)
        return
    matches = sorted(glob.glob(arg))
    if not matches:
        yield Skipped(Path(arg), "no file matches")
    yield from (Path(m) for m in matches)


def discover(args: Iterable[str], deadline: float | None = None) -> Discovery:
    """Dumps named by paths, globs or directories (walked recursively), and
    every path that could not be read.

    An explicit regular file is always taken (a bad one gets a failed
    record); inside directories a file is taken when it is named like
    kdump's dumps (``vmcore*``, ``dump.*``: a damaged one still gets its
    record) or when its first bytes say it is a dump whatever its name
    (``host1.vmcore``). Files that cannot be opened are skipped, and so is
    everything not yet walked when ``deadline`` (``time.monotonic()``) passes.
    """
    found = Discovery()
    taken: set[str] = set()
    walked: set[tuple[int, int]] = set()
    pending = [c for arg in args for c in _candidates(arg)]
    for n, item in enumerate(pending):
        if isinstance(item, Skipped):
            found.skipped.append(item)
            continue
        try:
            _discover_one(item, found, taken, walked, deadline)
        except DiscoveryTimeout:
            found.skipped.extend(
                Skipped(p, TIMED_OUT) for p in pending[n:] if isinstance(p, Path)
            )
            break
    found.inputs |= walked
    unique = {os.path.abspath(s.path): s for s in reversed(found.skipped)}
    found.skipped = [s for s in found.skipped if unique[os.path.abspath(s.path)] is s]
    return found


def _discover_one(
    path: Path,
    found: Discovery,
    taken: set[str],
    walked: set[tuple[int, int]],
    deadline: float | None,
) -> None:
    _check_deadline(deadline)
    try:
        st = os.stat(path)
    except OSError as e:
        found.skipped.append(Skipped(path, f"cannot open: {reason(e)}"))
        return
    if not stat.S_ISDIR(st.st_mode):
        entries: Iterable[tuple[Path, os.stat_result] | Skipped] = [(path, st)]
    else:
        found.inputs.add(identity(st))
        entries = for_each_file(path, deadline, walked)
    for entry in entries:
        if isinstance(entry, Skipped):
            found.skipped.append(entry)
            continue
        file, file_st = entry
        if not stat.S_ISREG(file_st.st_mode):
            kind = file_kind(file_st.st_mode)
            found.skipped.append(Skipped(file, f"not a regular file ({kind})"))
            continue
        head = _sniff(file)
        if isinstance(head, Skipped):
            found.skipped.append(head)
            continue
        explicit = file is path
        if not (
            explicit
            or _looks_like_dump_name(file.name)
            or _dump_kind_of(head) is not None
        ):
            continue
        # one record per file, whatever the symbolic links to it (hard links
        # are dumps of their own name: a pipeline may keep copies that way)
        key = os.path.realpath(file)
        if key not in taken:
            taken.add(key)
            found.inputs.add(identity(file_st))
            found.dumps.append(file)


def for_each_dump(args: Iterable[str], deadline: float | None = None) -> Iterator[Path]:
    """The dumps :func:`discover` finds (what it skipped is not reported)."""
    yield from discover(args, deadline).dumps


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    return struct.unpack_from(fmt, data, offset)


@dataclass(frozen=True)
class _ElfHeader:
    order: str
    is64: bool
    e_type: int
    phoff: int
    shoff: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int


def _elf_header(head: bytes) -> _ElfHeader | None:
    if len(head) < 52 or not head.startswith(ELF_MAGIC) or head[5] not in (1, 2):
        return None
    order = "<" if head[5] == 1 else ">"
    if head[4] == 2 and len(head) >= 64:
        (e_type,) = _unpack(order + "H", head, 16)
        phoff, shoff = _unpack(order + "QQ", head, 0x20)
        phentsize, phnum, shentsize, shnum = _unpack(order + "HHHH", head, 0x36)
        return _ElfHeader(
            order, True, e_type, phoff, shoff, phentsize, phnum, shentsize, shnum
        )
    if head[4] == 1:
        (e_type,) = _unpack(order + "H", head, 16)
        phoff, shoff = _unpack(order + "II", head, 0x1C)
        phentsize, phnum, shentsize, shnum = _unpack(order + "HHHH", head, 0x2A)
        return _ElfHeader(
            order, False, e_type, phoff, shoff, phentsize, phnum, shentsize, shnum
        )
    return None


class _BadLayout(Exception):
    """An ELF table or note that is not inside the file (``truncated``) or
    not plausible."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


def _read_table(
    f: BinaryIO, size: int, offset: int, count: int, entsize: int, minsize: int
) -> bytes:
    """``count`` entries of ``entsize`` bytes at ``offset``.

    :raises _BadLayout: they are implausible or not inside the file.
    """
    if entsize < minsize:
        raise _BadLayout(f"entry size {entsize} < {minsize}")
    length = count * entsize
    if length > MAX_HEADER_TABLE:
        raise _BadLayout(f"{count} entries of {entsize} bytes is implausible")
    if offset + length > size:
        raise _BadLayout(
            f"{count} entries at {offset:#x} end at byte {offset + length}, "
            f"the file has {size}",
            truncated=True,
        )
    f.seek(offset)
    data = f.read(length)
    if len(data) < length:
        raise _BadLayout(f"short read at {offset:#x}", truncated=True)
    return data


def _program_headers(
    f: BinaryIO, size: int, h: _ElfHeader
) -> list[tuple[int, int, int]]:
    """(p_type, p_offset, p_filesz) of every program header.

    :raises _BadLayout: the table is implausible or not inside the file.
    """
    phnum = h.phnum
    if phnum == PN_XNUM:  # the count is in section header 0's sh_info
        first = _read_table(f, size, h.shoff, 1, h.shentsize, 64 if h.is64 else 40)
        (phnum,) = _unpack(h.order + "I", first, 44 if h.is64 else 28)
    try:
        table = _read_table(f, size, h.phoff, phnum, h.phentsize, 56 if h.is64 else 32)
    except _BadLayout as e:
        raise _BadLayout(f"program headers: {e}", e.truncated) from None
    result = []
    for i in range(phnum):
        base = i * h.phentsize
        if h.is64:
            p_type, _, p_offset, _, _, p_filesz = _unpack(
                h.order + "IIQQQQ", table, base
            )
        else:
            p_type, p_offset, _, _, p_filesz = _unpack(h.order + "IIIII", table, base)
        result.append((p_type, p_offset, p_filesz))
    return result


def elf_core_problem(path: Path) -> str | None:
    """Why an ELF core cannot be read at all (``truncated ELF core: ...``
    when its header, program headers or notes are cut off, ``malformed ELF
    core: ...``), or None. Memory segments past the end are left to the
    analysis: a dump missing its tail still has a chain."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(64)
            h = _elf_header(head)
            if h is None:
                return f"truncated ELF core: header cut off at byte {len(head)}"
            phdrs = _program_headers(f, size, h)
    except OSError as e:
        return f"cannot read: {reason(e)}"
    except _BadLayout as e:
        return f"{'truncated' if e.truncated else 'malformed'} ELF core: {e}"
    if not phdrs:
        return "malformed ELF core: no program headers"
    for p_type, offset, filesz in phdrs:
        if p_type == PT_NOTE and offset + filesz > size:
            return (
                f"truncated ELF core: notes at {offset:#x} end at byte "
                f"{offset + filesz}, the file has {size}"
            )
    return None


def elf_build_id(path: Path) -> str | None:
    """The GNU build ID of an ELF file, or None if it has none or cannot be
    read (see :func:`read_build_id`)."""
    try:
        with open_regular(path) as f:
            return read_build_id(f)
    except OSError:
        return None


def read_build_id(f: BinaryIO) -> str | None:
    """The GNU build ID of an open ELF file, or None if it has none.

    Read from its note sections (else its PT_NOTE program headers) without
    loading the file, and without trusting its header: tables and notes must
    lie inside the file, and every read is bounded (a few MiB at most however
    large the file says it is).

    :raises OSError: the file cannot be read.
    """
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    h = _elf_header(f.read(64))
    if h is None:
        return None
    budget = MAX_NOTE_BYTES
    try:
        for offset, length in _note_ranges(f, size, h):
            if length <= 0 or offset + length > size:
                continue
            length = min(length, MAX_NOTE_SECTION, budget)
            if length <= 0:
                break
            budget -= length
            f.seek(offset)
            build_id = _gnu_build_id(f.read(length), h.order)
            if build_id:
                return build_id
    except (_BadLayout, struct.error):
        return None
    return None


def _note_ranges(f: BinaryIO, size: int, h: _ElfHeader) -> Iterator[tuple[int, int]]:
    """(offset, size) of each SHT_NOTE section, else each PT_NOTE segment (a
    file without section headers).

    :raises _BadLayout: a table is implausible or not inside the file.
    """
    shnum = h.shnum
    minsize = 64 if h.is64 else 40
    if h.shoff and shnum == 0:  # more than 0xff00 sections: count in section 0
        first = _read_table(f, size, h.shoff, 1, h.shentsize, minsize)
        word = "Q" if h.is64 else "I"
        (shnum,) = _unpack(h.order + word, first, 32 if h.is64 else 20)
    if h.shoff and shnum:
        table = _read_table(f, size, h.shoff, shnum, h.shentsize, minsize)
        fmt = h.order + ("QQ" if h.is64 else "II")
        for i in range(shnum):
            base = i * h.shentsize
            (sh_type,) = _unpack(h.order + "I", table, base + 4)
            if sh_type == SHT_NOTE:
                offset, length = _unpack(fmt, table, base + (24 if h.is64 else 16))
                yield offset, length
        return
    for p_type, offset, filesz in _program_headers(f, size, h):
        if p_type == PT_NOTE:
            yield offset, filesz


def _gnu_build_id(notes: bytes, order: str) -> str | None:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from(order + "III", notes, pos)
        name_end = pos + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + descsz
        if desc_end > len(notes):
            return None
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        if ntype == NT_GNU_BUILD_ID and name == b"GNU" and 0 < descsz <= MAX_BUILD_ID:
            return notes[name_end:desc_end].hex()
        pos = name_end + ((descsz + 3) & ~3)
    return None


def index_debuginfo(
    dirs: Iterable[Path], deadline: float | None = None
) -> DebuginfoIndex:
    """Build ID -> vmlinux for every ELF file under the given directories (the
    first one found wins), with every path that could not be read."""
    index = DebuginfoIndex()
    walked: set[tuple[int, int]] = set()
    tops = list(dirs)
    for n, top in enumerate(tops):
        try:
            for entry in for_each_file(top, deadline, walked):
                if isinstance(entry, Skipped):
                    index.skipped.append(entry)
                    continue
                path, st = entry
                index.inputs.add(identity(st))
                try:
                    with open_regular(path) as f:
                        build_id = read_build_id(f)
                except OSError as e:
                    index.skipped.append(Skipped(path, f"cannot read: {reason(e)}"))
                    continue
                if build_id and build_id not in index.by_build_id:
                    index.by_build_id[build_id] = path
        except DiscoveryTimeout:
            index.skipped.extend(Skipped(t, TIMED_OUT) for t in tops[n:])
            break
    index.inputs |= walked
    return index
