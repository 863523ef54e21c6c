"""Make damaged copies of the real ELF vmcores, for the corrupted-dump tests.

The fixture vmcores are QEMU ``dump-guest-memory`` ELF cores: a PT_NOTE
segment (CPU registers, VMCOREINFO) and PT_LOAD segments that map guest
*physical* addresses (``p_paddr``) to file offsets.  They are 537 MB but
mostly zero pages, so a copy is written *sparse*: only the 64 KiB blocks that
hold a non-zero byte are written, the rest is a hole (about 50 MB on disk).

A damaged copy is described by :class:`Damage` (byte patches at file offsets,
an optional truncation); it is written once into the fixture cache with a
stamp naming its source and damage, and reused while both are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 64 * 1024
PT_LOAD = 1
PT_NOTE = 4
#: Bump when the way copies are written changes: invalidates cached copies.
GENERATOR_VERSION = 1


class CoreLayoutError(Exception):
    """The file is not an ELF core this module understands, or an address
    is not backed by the file."""


@dataclass(frozen=True)
class Segment:
    p_type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Note:
    """One ELF note: its name and where its name and descriptor bytes are."""

    name: bytes
    n_type: int
    name_offset: int
    name_size: int
    desc_offset: int
    desc_size: int


@dataclass
class ElfCore:
    path: Path
    byteorder: str
    segments: list[Segment]
    notes: list[Note]

    def loads(self) -> list[Segment]:
        return [s for s in self.segments if s.p_type == PT_LOAD]

    def phys_to_offset(self, phys: int, size: int = 1) -> int:
        """File offset of ``size`` bytes at guest physical address ``phys``.

        :raises CoreLayoutError: if the range is not inside one PT_LOAD
            segment's file-backed part.
        """
        for seg in self.loads():
            if seg.paddr <= phys and phys + size <= seg.paddr + seg.filesz:
                return seg.offset + (phys - seg.paddr)
        raise CoreLayoutError(f"physical {phys:#x}+{size} is not in the file")

    def note(self, name: bytes) -> Note:
        for note in self.notes:
            if note.name == name:
                return note
        raise CoreLayoutError(f"no {name!r} note")


def read_elf_core(path: Path) -> ElfCore:
    """Parse the ELF header, program headers and notes of a 64-bit core."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF":
            raise CoreLayoutError(f"{path} is not an ELF file")
        if ident[4] != 2:
            raise CoreLayoutError(f"{path} is not a 64-bit ELF file")
        order = "<" if ident[5] == 1 else ">"
        e_type, _machine, _version, _entry, e_phoff = struct.unpack_from(
            order + "HHIQQ", ident, 16
        )
        e_phentsize, e_phnum = struct.unpack_from(order + "HH", ident, 54)
        if e_type != 4:  # ET_CORE
            raise CoreLayoutError(f"{path} is not an ELF core (e_type {e_type})")
        f.seek(e_phoff)
        table = f.read(e_phentsize * e_phnum)
        segments = []
        for i in range(e_phnum):
            p_type, _flags, offset, vaddr, paddr, filesz, memsz = struct.unpack_from(
                order + "IIQQQQQ", table, i * e_phentsize
            )
            segments.append(Segment(p_type, offset, vaddr, paddr, filesz, memsz))
        notes: list[Note] = []
        for seg in segments:
            if seg.p_type == PT_NOTE:
                f.seek(seg.offset)
                notes.extend(_parse_notes(f.read(seg.filesz), seg.offset, order))
    return ElfCore(
        path=path,
        byteorder="little" if order == "<" else "big",
        segments=segments,
        notes=notes,
    )


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _parse_notes(data: bytes, base: int, order: str) -> Iterable[Note]:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, n_type = struct.unpack_from(order + "III", data, pos)
        name_at = pos + 12
        desc_at = name_at + _align4(namesz)
        if desc_at + descsz > len(data):
            return
        name = data[name_at : name_at + namesz].rstrip(b"\0")
        yield Note(name, n_type, base + name_at, namesz, base + desc_at, descsz)
        pos = desc_at + _align4(descsz)


def source_id(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def data_extents(path: Path, block: int = BLOCK) -> list[tuple[int, int]]:
    """(start, end) file ranges holding non-zero bytes, in whole blocks."""
    zero = bytes(block)
    extents: list[tuple[int, int]] = []
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while True:
            chunk = f.read(block)
            if not chunk:
                break
            if chunk != zero[: len(chunk)]:
                end = pos + len(chunk)
                if extents and extents[-1][1] == pos:
                    extents[-1] = (extents[-1][0], end)
                else:
                    extents.append((pos, end))
            pos += len(chunk)
    return extents


@dataclass(frozen=True)
class Damage:
    """What to do to a copy: write ``patches`` (file offset -> bytes), then
    cut the file to ``truncate`` bytes when given."""

    patches: tuple[tuple[int, bytes], ...] = ()
    truncate: int | None = None
    description: str = ""

    def key(self, source: Path) -> str:
        data = {
            "generator": GENERATOR_VERSION,
            "source": source_id(source),
            "patches": [[off, raw.hex()] for off, raw in self.patches],
            "truncate": self.truncate,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class SparseSource:
    """A source file and (computed once, lazily) its non-zero extents."""

    path: Path
    _extents: list[tuple[int, int]] | None = field(default=None, repr=False)

    @property
    def extents(self) -> list[tuple[int, int]]:
        if self._extents is None:
            self._extents = data_extents(self.path)
        return self._extents


def write_sparse_copy(
    source: SparseSource, out: Path, damage: Damage = Damage()
) -> Path:
    """Write ``source`` with ``damage`` applied to ``out`` (atomically), as a
    sparse file; reuse ``out`` when its stamp says it is already that copy."""
    stamp = out.with_name(out.name + ".stamp")
    key = damage.key(source.path)
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    size = source.path.stat().st_size
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".")
    try:
        with open(source.path, "rb", buffering=0) as src, os.fdopen(fd, "wb") as dst:
            for start, end in source.extents:
                src.seek(start)
                dst.seek(start)
                remaining = end - start
                while remaining:
                    chunk = src.read(min(remaining, 1 << 20))
                    dst.write(chunk)
                    remaining -= len(chunk)
            dst.truncate(size)
            for offset, raw in damage.patches:
                dst.seek(offset)
                dst.write(raw)
            if damage.truncate is not None:
                dst.truncate(damage.truncate)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    stamp.write_text(key)
    return out


def allocated_bytes(path: Path) -> int:
    """Bytes the file really takes on disk (to check a copy is sparse)."""
    return os.stat(path).st_blocks * 512
