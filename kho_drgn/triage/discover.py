"""Finding dumps (paths, globs, /var/crash trees) and vmlinux files by build ID."""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Magics of the dump formats drgn reads.
ELF_MAGIC = b"\x7fELF"
KDUMP_MAGICS = (b"KDUMP   ", b"DISKDUMP")
FLAT_MAGIC = b"makedumpfile"
#: ELF ``e_type`` of a core file (a vmlinux is ET_EXEC, a module ET_REL).
ET_CORE = 4
#: Names of dump files inside a kdump /var/crash/<host-date>/ directory.
DUMP_NAMES = ("vmcore", "vmcore.flat", "dump.", "vmcore-")


def dump_kind(path: Path) -> str | None:
    """``elf``, ``kdump``, ``flat`` or None (not a dump we can open).

    An ELF file counts only when it is a core file, so a vmlinux lying beside
    the dumps (or passed by mistake) is not taken for one.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return None
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


def _looks_like_dump_name(name: str) -> bool:
    return name.startswith(DUMP_NAMES) and not name.endswith((".txt", ".log"))


def for_each_dump(args: Iterable[str]) -> Iterator[Path]:
    """Dumps named by paths, globs or directories (walked recursively).

    Explicit files are always yielded (a bad one gets a failed record).
    Inside directories a file is taken when it is named like kdump's dumps
    (``vmcore*``, ``dump.*``: a damaged one still gets its record) or when its
    first bytes say it is a dump whatever its name (``host1.vmcore``).
    """
    seen: set[Path] = set()
    for arg in args:
        matches = sorted(glob.glob(arg)) if glob.has_magic(arg) else [arg]
        for match in matches:
            path = Path(match)
            found: Iterator[Path]
            if path.is_dir():
                found = (
                    Path(root) / name
                    for root, _, names in sorted(os.walk(path))
                    for name in sorted(names)
                    if _looks_like_dump_name(name)
                    or dump_kind(Path(root) / name) is not None
                )
            else:
                found = iter([path])
            for dump in found:
                key = dump.resolve()
                if key not in seen:
                    seen.add(key)
                    yield dump


def elf_build_id(path: Path) -> str | None:
    """The GNU build ID of an ELF file (``.note.gnu.build-id``), read from its
    section headers without loading the file; None if it has none."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or not ident.startswith(ELF_MAGIC) or ident[4] != 2:
                return None  # only ELF64
            order = "<" if ident[5] == 1 else ">"
            (shoff,) = struct.unpack_from(order + "Q", ident, 0x28)
            shentsize, shnum = struct.unpack_from(order + "HH", ident, 0x3A)
            if shentsize < 64 or shnum > 65535:
                return None
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            for i in range(shnum):
                (sh_type,) = struct.unpack_from(order + "I", table, i * shentsize + 4)
                if sh_type != 7:  # SHT_NOTE
                    continue
                offset, size = struct.unpack_from(
                    order + "QQ", table, i * shentsize + 24
                )
                f.seek(offset)
                build_id = _gnu_build_id(f.read(min(size, 4096)), order)
                if build_id:
                    return build_id
    except (OSError, struct.error):
        return None
    return None


def _gnu_build_id(notes: bytes, order: str) -> str | None:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from(order + "III", notes, pos)
        name_end = pos + 12 + ((namesz + 3) & ~3)
        desc = notes[name_end : name_end + descsz]
        if ntype == 3 and notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0") == b"GNU":
            return desc.hex()
        pos = name_end + ((descsz + 3) & ~3)
    return None


def index_debuginfo(dirs: Iterable[Path]) -> dict[str, Path]:
    """Build ID -> vmlinux for every ELF file under the given directories."""
    index: dict[str, Path] = {}
    for top in dirs:
        for root, _, names in os.walk(top):
            for name in sorted(names):
                path = Path(root) / name
                build_id = elf_build_id(path)
                if build_id and build_id not in index:
                    index[build_id] = path
    return index
