"""Decoding the Live Update Orchestrator (LUO) handover: sessions, files, FLBs.

Pure: bytes in, typed records and findings out.  Pointers are followed only
through a ``read_phys(address, size)`` callable, bounded and cycle-checked, so
the same code runs on a dump (drgn), on synthetic bytes in tests, and finds
nothing to follow on debugfs copies.  Bad data is a finding, never an
exception.  Reading the target (the kernel's own lists, kallsyms offsets) is
:mod:`kho_drgn.luo_target`.

Formats (kernel sources: include/linux/kho/abi/{luo,block,memfd}.h,
kernel/liveupdate/luo_*.c, mm/memfd_luo.c):

* 7.2+ ``luo-v5``: KHO sub-node ``LUO`` holds a packed ``struct luo_ser``
  {char compatible[8]; u64 liveupdate_num, sessions_pa, flbs_pa} (32 bytes).
  Sessions and each session's files are chains of page-sized blocks, each a
  ``struct kho_block_header_ser`` {u64 next, count} followed by packed
  entries: ``luo_session_ser`` {char name[64]; u64 files, count} (80 bytes),
  ``luo_file_ser`` {char compatible[48]; u64 data, token} (64 bytes).  FLBs:
  ``luo_flb_header_ser`` {u64 pgcnt, count} then ``luo_flb_ser`` {char
  name[48]; u64 data, count} (64 bytes), contiguous.
* 6.19 and 7.1 ``luo-v1``: ``LUO`` is an FDT, root ``liveupdate-number``;
  child ``luo-session`` (``luo-session-v2``) has ``luo-session-header``: the
  physical address of {u64 count} followed by ``luo_session_ser`` entries,
  whose ``files`` is a contiguous ``luo_file_ser`` array; child ``luo-flb``
  (``luo-flb-v1``, 7.1) has ``luo-flb-header`` (the FLB layout above).
* memfd: ``memfd-v2`` (7.1+) ``memfd_luo_ser`` {u64 pos, size; u32 seals,
  flags; u64 nr_folios; struct kho_vmalloc folios} (48 bytes); ``memfd-v1``
  (6.19) lacks seals/flags (40 bytes).  The folio array is vmalloc'd and
  preserved with ``kho_preserve_vmalloc``: a chain of ``kho_vmalloc_chunk``
  pages {u64 next; u64 phys[511]} listing the array's pages.  Each
  ``memfd_luo_folio_ser`` is {u64 pfn:52, flags:12; u64 index} (16 bytes),
  flags ``MEMFD_LUO_FOLIO_DIRTY`` (1) and ``UPTODATE`` (2).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from kho_drgn.abi import FDT_MAGIC
from kho_drgn.fdt import FdtError, FdtNode, parse_fdt
from kho_drgn.findings import Finding, error, info, warning
from kho_drgn.metadata import decode_c_string
from kho_drgn.pages import MAX_PHYS, PAGE_SIZE, PageReader, ReadPhys

__all__ = (
    "LUO_NODE",
    "LuoFile",
    "LuoFlb",
    "LuoSer",
    "LuoSession",
    "LuoSide",
    "Memfd",
    "MemfdFolio",
    "decode_file_ser",
    "decode_flb_entries",
    "decode_folio_array",
    "decode_luo_blob",
    "decode_luo_ser",
    "decode_memfd_ser",
    "decode_session_ser",
    "for_each_block_entry",
    "read_memfd_folios",
    "walk_files",
    "walk_flbs",
    "walk_sessions",
)

ByteOrder = Literal["little", "big"]

LUO_NODE = "LUO"
LUO_V5 = "luo-v5"
LUO_V1 = "luo-v1"
LUO_SER_SIZE = 32
LUO_COMPAT_LEN = 8
#: ``struct kho_block_header_ser`` {next, count}; a block is one page.
BLOCK_HEADER_SIZE = 16
SESSION_SER_SIZE = 80
SESSION_NAME_LEN = 64
FILE_SER_SIZE = 64
FILE_COMPAT_LEN = 48
FLB_HEADER_SIZE = 16
FLB_SER_SIZE = 64
FLB_NAME_LEN = 48
#: luo-v1's ``luo_session_header_ser`` {u64 count}.
V1_SESSION_HEADER_SIZE = 8
MEMFD_V2 = "memfd-v2"
MEMFD_V1 = "memfd-v1"
MEMFD_SER_SIZE = {MEMFD_V2: 48, MEMFD_V1: 40}
FOLIO_SER_SIZE = 16
FOLIO_FLAGS = {1: "dirty", 2: "uptodate"}
#: memfd seals (include/uapi/linux/fcntl.h F_SEAL_*).
SEAL_NAMES = {
    0x1: "seal",
    0x2: "shrink",
    0x4: "grow",
    0x8: "write",
    0x10: "future-write",
    0x20: "exec",
}
#: ``struct kho_vmalloc_chunk``: next phys, then 511 page addresses.
VMALLOC_CHUNK_ENTRIES = PAGE_SIZE // 8 - 1

#: Bounds: blocks followed per chain, entries listed, folios listed.
MAX_BLOCKS = 4096
MAX_ENTRIES = 1 << 16
MAX_FOLIOS = 1 << 20


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(eq=False)
class LuoSer:
    """``struct luo_ser`` as read (the 7.2+ root of the LUO state)."""

    compatible: str | None
    liveupdate_num: int
    sessions_pa: int
    flbs_pa: int


@dataclass(eq=False)
class MemfdFolio:
    """One preserved folio of a memfd (``memfd_luo_folio_ser``)."""

    pfn: int
    flags: int
    index: int
    #: How the folio's preservation was checked: "page-magic" (its struct
    #: page still carries KHO_PAGE_MAGIC), "map" (in the preserved-memory
    #: map), "not-preserved", or None (not checked).
    preserved: str | None = None

    @property
    def phys(self) -> int:
        return self.pfn * PAGE_SIZE

    def to_dict(self) -> dict[str, Any]:
        return {
            "pfn": self.pfn,
            "phys": self.phys,
            "flags": self.flags,
            "flag_names": flag_names(self.flags, FOLIO_FLAGS),
            "index": self.index,
            "preserved": self.preserved,
        }


@dataclass(eq=False)
class Memfd:
    """A memfd's serialized state (``memfd_luo_ser``)."""

    layout: str  # memfd-v2 / memfd-v1
    pos: int
    size: int
    seals: int | None
    flags: int | None
    nr_folios: int
    folios_first: int
    folios_total_pages: int
    folios_order: int
    folios: list[MemfdFolio] = field(default_factory=list)
    #: False when the folio array could not be read whole.
    folios_complete: bool = False
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "pos": self.pos,
            "size": self.size,
            "seals": self.seals,
            "seal_names": None
            if self.seals is None
            else flag_names(self.seals, SEAL_NAMES),
            "flags": self.flags,
            "nr_folios": self.nr_folios,
            "folios_vmalloc": {
                "first": self.folios_first,
                "total_pages": self.folios_total_pages,
                "order": self.folios_order,
            },
            "folios_complete": self.folios_complete,
            "folios": [f.to_dict() for f in self.folios],
        }


@dataclass(eq=False)
class LuoFile:
    """One preserved file of a session."""

    compatible: str | None
    token: int
    #: Physical address of the handler's serialized data (``data``).
    data_pa: int
    #: Where the entry was read: "serialized" (a ``luo_file_ser``) or
    #: "kernel" (a ``struct luo_file`` on a session's list).
    source: str = "serialized"
    #: ``luo_file.retrieve_status`` (kernel lists only): 0 not retrieved,
    #: 1 retrieved, negative an error.
    retrieve_status: int | None = None
    memfd: Memfd | None = None
    pa: int | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def retrieved(self) -> str:
        status = self.retrieve_status
        if status is None:
            return "no" if self.source == "serialized" else "unknown"
        if status > 0:
            return "yes"
        return "no" if status == 0 else f"failed ({status})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "compatible": self.compatible,
            "token": self.token,
            "data_pa": self.data_pa,
            "source": self.source,
            "retrieve_status": self.retrieve_status,
            "retrieved": self.retrieved,
            "pa": self.pa,
            "memfd": None if self.memfd is None else self.memfd.to_dict(),
        }


#: Session states.
SERIALIZED = "serialized"  # in the preserved blocks, not deserialized yet
RESTORED = "restored"  # deserialized into the new kernel's list, not retrieved
RETRIEVED = "retrieved"  # retrieved by userspace in the new kernel
PRESERVING = "preserving"  # outgoing, only in the kernel's lists (no kexec yet)


@dataclass(eq=False)
class LuoSession:
    """One LUO session and its files."""

    name: str | None
    state: str
    file_count: int
    files: list[LuoFile] = field(default_factory=list)
    pa: int | None = None
    files_pa: int | None = None
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "file_count": self.file_count,
            "pa": self.pa,
            "files_pa": self.files_pa,
            "files": [f.to_dict() for f in self.files],
        }


@dataclass(eq=False)
class LuoFlb:
    """A file-lifecycle-bound object (``luo_flb_ser`` and/or the kernel's)."""

    name: str | None
    data: int | None
    count: int | None
    pa: int | None = None
    #: "serialized", "kernel" (registered ``liveupdate_flb`` only) or both.
    source: str = "serialized"
    retrieve_status: int | None = None
    finished: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": self.data,
            "count": self.count,
            "pa": self.pa,
            "source": self.source,
            "retrieve_status": self.retrieve_status,
            "finished": self.finished,
        }


@dataclass(eq=False)
class LuoSide:
    """One direction of the LUO handover, however it was found."""

    direction: str
    #: ``luo-v5``, ``luo-v1`` (FDT form) or None when unknown.
    compatible: str | None = None
    liveupdate_num: int | None = None
    #: The blob the KHO sub-node points to: "intact", "reused" (freed and
    #: overwritten since boot), "absent" (no sub-node), "unreadable".
    blob: str = "absent"
    blob_phys: int | None = None
    sessions_pa: int | None = None
    flbs_pa: int | None = None
    #: What the sessions were read from: "serialized" (the preserved blocks),
    #: "kernel" (the kernel's session lists) or None.
    source: str | None = None
    sessions: list[LuoSession] = field(default_factory=list)
    flbs: list[LuoFlb] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def all_findings(self) -> Iterator[Finding]:
        yield from self.findings
        for session in self.sessions:
            yield from session.findings
            for file in session.files:
                yield from file.findings
                if file.memfd is not None:
                    yield from file.memfd.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "compatible": self.compatible,
            "liveupdate_num": self.liveupdate_num,
            "blob": self.blob,
            "blob_phys": self.blob_phys,
            "sessions_pa": self.sessions_pa,
            "flbs_pa": self.flbs_pa,
            "source": self.source,
            "sessions": [s.to_dict() for s in self.sessions],
            "flbs": [f.to_dict() for f in self.flbs],
        }


def flag_names(value: int, names: dict[int, str]) -> list[str]:
    """Names of the set bits of ``value``; unknown bits as hex."""
    out = [name for bit, name in names.items() if value & bit]
    rest = value & ~sum(names)
    if rest:
        out.append(f"{rest:#x}")
    return out


# --------------------------------------------------------------------------
# Fixed-size entries
# --------------------------------------------------------------------------


def _end(byteorder: ByteOrder) -> str:
    return "<" if byteorder == "little" else ">"


def _string(raw: bytes, what: str, where: str, findings: list[Finding]) -> str | None:
    text, found = decode_c_string(raw, what, where)
    findings += [error("luo.bad-string", f.message, where) for f in found]
    return text


def decode_luo_ser(
    blob: bytes, byteorder: ByteOrder = "little"
) -> tuple[LuoSer | None, bool]:
    """``struct luo_ser``: (record, plausible).

    Plausible means the compatible is a NUL-terminated ``luo-v<N>``: anything
    else is not a luo_ser (a freed page reused since boot, or damage).
    """
    if len(blob) < LUO_SER_SIZE:
        return None, False
    raw_compat = blob[:LUO_COMPAT_LEN]
    nul = raw_compat.find(b"\0")
    compat = raw_compat[: nul if nul >= 0 else LUO_COMPAT_LEN]
    plausible = nul > 5 and compat.startswith(b"luo-v") and compat[5:].isdigit()
    number, sessions_pa, flbs_pa = struct.unpack_from(_end(byteorder) + "QQQ", blob, 8)
    text = compat.decode("ascii") if plausible else None
    return LuoSer(text, number, sessions_pa, flbs_pa), plausible


def decode_session_ser(
    raw: bytes, byteorder: ByteOrder = "little", where: str = ""
) -> tuple[str | None, int, int, list[Finding]]:
    """``luo_session_ser``: (name, files_pa, file count, findings)."""
    findings: list[Finding] = []
    name = _string(raw[:SESSION_NAME_LEN], "session name", where, findings)
    files = count = 0
    if len(raw) >= SESSION_SER_SIZE:
        files, count = struct.unpack_from(_end(byteorder) + "QQ", raw, SESSION_NAME_LEN)
    return name, files, count, findings


def decode_file_ser(
    raw: bytes, byteorder: ByteOrder = "little", where: str = ""
) -> LuoFile:
    """``luo_file_ser``: handler compatible, data (phys), token."""
    findings: list[Finding] = []
    compat = _string(raw[:FILE_COMPAT_LEN], "file handler compatible", where, findings)
    data, token = struct.unpack_from(_end(byteorder) + "QQ", raw, FILE_COMPAT_LEN)
    return LuoFile(compat, token, data, findings=findings)


def decode_flb_entries(
    raw: bytes,
    count: int,
    byteorder: ByteOrder = "little",
    base: int = 0,
    where: str = "",
) -> list[LuoFlb]:
    """``count`` packed ``luo_flb_ser`` entries starting at ``raw[0]``."""
    flbs = []
    for i in range(min(count, len(raw) // FLB_SER_SIZE)):
        entry = raw[i * FLB_SER_SIZE : (i + 1) * FLB_SER_SIZE]
        findings: list[Finding] = []
        name = _string(entry[:FLB_NAME_LEN], "FLB name", where, findings)
        data, refs = struct.unpack_from(_end(byteorder) + "QQ", entry, FLB_NAME_LEN)
        flbs.append(LuoFlb(name, data, refs, pa=base + i * FLB_SER_SIZE))
    return flbs


def decode_memfd_ser(
    raw: bytes, compatible: str, byteorder: ByteOrder = "little", where: str = ""
) -> Memfd | None:
    """``memfd_luo_ser`` for a handler compatible; None if not a memfd one."""
    size = MEMFD_SER_SIZE.get(compatible)
    if size is None or len(raw) < size:
        return None
    end = _end(byteorder)
    if compatible == MEMFD_V2:
        pos, length, seals, flags, nr = struct.unpack_from(end + "QQIIQ", raw)
        at = 32
    else:
        pos, length, nr = struct.unpack_from(end + "QQQ", raw)
        seals = flags = None
        at = 24
    first, total_pages, _vflags, order = struct.unpack_from(end + "QIHH", raw, at)
    memfd = Memfd(compatible, pos, length, seals, flags, nr, first, total_pages, order)
    pages_needed = (length + PAGE_SIZE - 1) // PAGE_SIZE
    if nr > max(pages_needed, 1):
        memfd.findings.append(
            error(
                "luo.memfd-bad-count",
                f"memfd of {length} bytes lists {nr} folios (at most "
                f"{pages_needed} pages)",
                where,
            )
        )
    if pos > max(length, 0) and length:
        memfd.findings.append(
            info(
                "luo.memfd-pos-beyond-size",
                f"memfd position {pos} is beyond its size {length}",
                where,
            )
        )
    return memfd


def decode_folio_array(
    raw: bytes, count: int, byteorder: ByteOrder = "little"
) -> list[MemfdFolio]:
    """``count`` ``memfd_luo_folio_ser`` entries (pfn:52 | flags:12, index)."""
    end = _end(byteorder)
    folios = []
    for i in range(min(count, len(raw) // FOLIO_SER_SIZE)):
        word, index = struct.unpack_from(end + "QQ", raw, i * FOLIO_SER_SIZE)
        folios.append(MemfdFolio(word & ((1 << 52) - 1), word >> 52, index))
    return folios


# --------------------------------------------------------------------------
# Following pointers
# --------------------------------------------------------------------------


def _reader(
    read_phys: ReadPhys,
    missing: tuple[type[BaseException], ...],
    where: str,
    findings: list[Finding],
    structure: str,
    max_pages: int = MAX_BLOCKS,
) -> PageReader:
    """The shared bounded page reader for one walk, findings to ``findings``."""
    return PageReader(
        read_phys,
        findings.append,
        structure,
        where,
        max_phys=MAX_PHYS,
        max_pages=max_pages,
        missing=missing,
    )


def for_each_block_entry(
    read_phys: ReadPhys,
    head_pa: int,
    entry_size: int,
    byteorder: ByteOrder = "little",
    *,
    what: str = "block",
    missing: tuple[type[BaseException], ...] = (OSError,),
    findings: list[Finding] | None = None,
    where: str = "",
) -> Iterator[tuple[int, bytes]]:
    """(physical address, bytes) of each entry of a KHO block chain (7.2+).

    Each block is one page: ``kho_block_header_ser`` {next, count}, then
    ``count`` entries of ``entry_size``.  A count that does not fit the page
    or a loop is a finding; the walk stops there.
    """
    found = findings if findings is not None else []
    reader = _reader(read_phys, missing, where, found, f"LUO {what}s")
    room = (PAGE_SIZE - BLOCK_HEADER_SIZE) // entry_size
    block, listed = head_pa, 0
    while block:
        page = reader.read(block, PAGE_SIZE, what)
        if page is None:
            return
        nxt, count = struct.unpack_from(_end(byteorder) + "QQ", page)
        if count > room:
            found.append(
                error(
                    "luo.bad-count",
                    f"LUO {what} at {block:#x} claims {count} entries; {room} fit",
                    where,
                )
            )
            return
        for i in range(count):
            if listed >= MAX_ENTRIES:
                return
            at = BLOCK_HEADER_SIZE + i * entry_size
            listed += 1
            yield block + at, page[at : at + entry_size]
        block = nxt


def read_memfd_folios(
    read_phys: ReadPhys,
    memfd: Memfd,
    byteorder: ByteOrder = "little",
    *,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> None:
    """Fill ``memfd.folios`` from its ``kho_vmalloc`` folio array."""
    if not memfd.nr_folios:
        memfd.folios_complete = True
        return
    # The chunks and the pages they list.
    reader = _reader(
        read_phys,
        missing,
        where,
        memfd.findings,
        "LUO memfd folio list",
        2 * MAX_BLOCKS,
    )
    want = min(memfd.nr_folios, MAX_FOLIOS) * FOLIO_SER_SIZE
    step = PAGE_SIZE << min(memfd.folios_order, 10)
    pages: list[int] = []
    chunk = memfd.folios_first
    limit = min(memfd.folios_total_pages, (want + step - 1) // step + 1, MAX_BLOCKS)
    while chunk and len(pages) < limit:
        data = reader.read(chunk, PAGE_SIZE, "vmalloc chunk")
        if data is None:
            return
        words = struct.unpack(_end(byteorder) + f"{PAGE_SIZE // 8}Q", data)
        for phys in words[1:]:
            if not phys:
                break
            pages.append(phys)
        chunk = words[0]
    raw = b""
    for phys in pages:
        if len(raw) >= want:
            break
        data = reader.read(phys, step, "folio array page")
        if data is None:
            return
        raw += data
    if len(raw) < want:
        memfd.findings.append(
            error(
                "luo.memfd-folios-short",
                f"memfd folio array holds {len(raw) // FOLIO_SER_SIZE} entries, "
                f"nr_folios is {memfd.nr_folios}",
                where,
            )
        )
    memfd.folios = decode_folio_array(raw, memfd.nr_folios, byteorder)
    memfd.folios_complete = len(memfd.folios) == memfd.nr_folios
    for folio in memfd.folios:
        if folio.pfn * PAGE_SIZE >= MAX_PHYS:
            memfd.findings.append(
                error("luo.memfd-bad-pfn", f"memfd folio pfn {folio.pfn:#x}", where)
            )
            break


def decode_memfd_at(
    read_phys: ReadPhys,
    file: LuoFile,
    byteorder: ByteOrder = "little",
    *,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
    findings: list[Finding] | None = None,
) -> None:
    """Read a memfd file's ``memfd_luo_ser`` at ``data_pa`` and its folios.

    Problems reading the data go to ``findings`` (default: the file's).
    """
    size = MEMFD_SER_SIZE.get(file.compatible or "")
    if size is None:
        return
    found = file.findings if findings is None else findings
    reader = _reader(read_phys, missing, where, found, "LUO memfd")
    raw = reader.read_struct(file.data_pa, size, f"token {file.token:#x} data")
    if raw is None:
        return
    file.memfd = decode_memfd_ser(raw, file.compatible or "", byteorder, where)
    if file.memfd is not None:
        read_memfd_folios(
            read_phys, file.memfd, byteorder, missing=missing, where=where
        )


def walk_files(
    read_phys: ReadPhys,
    session: LuoSession,
    byteorder: ByteOrder = "little",
    *,
    blocks: bool = True,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> None:
    """A serialized session's files: a block chain (7.2+) or an array (v1)."""
    if not session.files_pa or not session.file_count:
        return
    if blocks:
        entries: Iterator[tuple[int, bytes]] = for_each_block_entry(
            read_phys,
            session.files_pa,
            FILE_SER_SIZE,
            byteorder,
            what="file block",
            missing=missing,
            findings=session.findings,
            where=where,
        )
    else:
        entries = _array(
            read_phys,
            session.files_pa,
            0,
            session.file_count,
            FILE_SER_SIZE,
            "file array",
            missing,
            session.findings,
            where,
        )
    for pa, raw in entries:
        file = decode_file_ser(raw, byteorder, where)
        file.pa = pa
        decode_memfd_at(read_phys, file, byteorder, missing=missing, where=where)
        session.files.append(file)
    if len(session.files) != session.file_count:
        session.findings.append(
            error(
                "luo.file-count",
                f"session {session.name!r}: {session.file_count} files declared, "
                f"{len(session.files)} found",
                where,
            )
        )


def _array(
    read_phys: ReadPhys,
    address: int,
    header: int,
    count: int,
    entry_size: int,
    what: str,
    missing: tuple[type[BaseException], ...],
    findings: list[Finding],
    where: str,
) -> Iterator[tuple[int, bytes]]:
    """Entries of a contiguous array (luo-v1 forms)."""
    count = min(count, MAX_ENTRIES)
    reader = _reader(read_phys, missing, where, findings, f"LUO {what}")
    raw = reader.read_struct(address + header, count * entry_size, "entries")
    if raw is None:
        return
    for i in range(count):
        at = i * entry_size
        yield address + header + at, raw[at : at + entry_size]


def walk_sessions(
    read_phys: ReadPhys,
    head_pa: int,
    byteorder: ByteOrder = "little",
    *,
    state: str = SERIALIZED,
    missing: tuple[type[BaseException], ...] = (OSError,),
    findings: list[Finding] | None = None,
    where: str = "",
) -> list[LuoSession]:
    """Every session of a 7.2+ session block chain, with files and memfds."""
    found = findings if findings is not None else []
    sessions = []
    for pa, raw in for_each_block_entry(
        read_phys,
        head_pa,
        SESSION_SER_SIZE,
        byteorder,
        what="session block",
        missing=missing,
        findings=found,
        where=where,
    ):
        name, files_pa, count, bad = decode_session_ser(raw, byteorder, where)
        session = LuoSession(name, state, count, pa=pa, files_pa=files_pa)
        session.findings += bad
        walk_files(read_phys, session, byteorder, missing=missing, where=where)
        sessions.append(session)
    return sessions


def walk_flbs(
    read_phys: ReadPhys,
    header_pa: int,
    byteorder: ByteOrder = "little",
    *,
    missing: tuple[type[BaseException], ...] = (OSError,),
    findings: list[Finding] | None = None,
    where: str = "",
) -> list[LuoFlb]:
    """The FLB array: ``luo_flb_header_ser`` {pgcnt, count} then entries."""
    found = findings if findings is not None else []
    reader = _reader(read_phys, missing, where, found, "LUO FLB array")
    header = reader.read_struct(header_pa, FLB_HEADER_SIZE, "header")
    if header is None:
        return []
    pgcnt, count = struct.unpack_from(_end(byteorder) + "QQ", header)
    room = (pgcnt * PAGE_SIZE - FLB_HEADER_SIZE) // FLB_SER_SIZE
    if not 0 < pgcnt <= MAX_BLOCKS or count > room:
        found.append(
            error(
                "luo.bad-count",
                f"LUO FLB header at {header_pa:#x}: {count} entries in {pgcnt} "
                "page(s) do not fit",
                where,
            )
        )
        return []
    raw = reader.read_struct(
        header_pa + FLB_HEADER_SIZE,
        count * FLB_SER_SIZE,
        "entries",
    )
    if raw is None:
        return []
    return decode_flb_entries(raw, count, byteorder, header_pa + FLB_HEADER_SIZE, where)


# --------------------------------------------------------------------------
# The KHO sub-node's blob
# --------------------------------------------------------------------------


def decode_luo_blob(
    blob: bytes,
    direction: str,
    byteorder: ByteOrder = "little",
    *,
    blob_phys: int | None = None,
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
) -> LuoSide:
    """The ``LUO`` sub-node's blob, either form, pointers followed if possible.

    A blob that is neither an FDT nor a ``luo_ser`` leaves ``blob`` =
    "reused" with no finding: whether that is expected (the incoming page is
    freed early in boot) is for the caller, who knows where else to look.
    """
    side = LuoSide(direction, blob="intact", blob_phys=blob_phys)
    if blob[:4] == FDT_MAGIC.to_bytes(4, "big"):
        try:
            root = parse_fdt(blob)
        except FdtError as e:
            side.blob = "reused"
            side.findings.append(error("luo.fdt-invalid", f"LUO FDT: {e}", direction))
            return side
        _luo_v1(root, side, byteorder, read_phys, missing)
        return side
    ser, plausible = decode_luo_ser(blob, byteorder)
    if ser is None or not plausible:
        side.blob = "reused"
        return side
    side.compatible = ser.compatible
    side.liveupdate_num = ser.liveupdate_num
    side.sessions_pa = ser.sessions_pa
    side.flbs_pa = ser.flbs_pa
    if ser.compatible != LUO_V5:
        side.findings.append(
            warning(
                "luo.unknown-version",
                f"LUO compatible {ser.compatible!r}: only {LUO_V5} and {LUO_V1} "
                f"are known; read with the {LUO_V5} layout",
                direction,
            )
        )
    if read_phys is None:
        return side
    if ser.sessions_pa:
        side.source = "serialized"
        side.sessions = walk_sessions(
            read_phys,
            ser.sessions_pa,
            byteorder,
            missing=missing,
            findings=side.findings,
            where=direction,
        )
    if ser.flbs_pa:
        side.flbs = walk_flbs(
            read_phys,
            ser.flbs_pa,
            byteorder,
            missing=missing,
            findings=side.findings,
            where=direction,
        )
    return side


def _luo_v1(
    root: FdtNode,
    side: LuoSide,
    byteorder: ByteOrder,
    read_phys: ReadPhys | None,
    missing: tuple[type[BaseException], ...],
) -> None:
    """The luo-v1 FDT (6.19, 7.1): number, session array, FLB array."""
    where = side.direction
    side.compatible = root.prop_str("compatible")
    side.liveupdate_num = _u64(root, "liveupdate-number", byteorder)
    if side.compatible != LUO_V1:
        side.findings.append(
            warning(
                "luo.unknown-version",
                f"LUO FDT compatible {side.compatible!r}: only {LUO_V1} is known",
                where,
            )
        )
    nodes = {node.name: node for node in root.children}
    session_node, flb_node = nodes.get("luo-session"), nodes.get("luo-flb")
    if session_node is not None:
        side.sessions_pa = _u64(session_node, "luo-session-header", byteorder)
    if flb_node is not None:
        side.flbs_pa = _u64(flb_node, "luo-flb-header", byteorder)
    if read_phys is None:
        return
    if side.sessions_pa and session_node is not None:
        side.source = "serialized"
        compat = session_node.prop_str("compatible")
        # luo-session-v1 entries were the name only; v2 adds the file set.
        entry = SESSION_NAME_LEN if compat == "luo-session-v1" else SESSION_SER_SIZE
        reader = _reader(read_phys, missing, where, side.findings, "LUO session array")
        head = reader.read_struct(
            side.sessions_pa,
            V1_SESSION_HEADER_SIZE,
            "header",
        )
        if head is not None:
            count = int.from_bytes(head, byteorder)
            for pa, raw in _array(
                read_phys,
                side.sessions_pa,
                V1_SESSION_HEADER_SIZE,
                count,
                entry,
                "session array",
                missing,
                side.findings,
                where,
            ):
                name, files_pa, nfiles, bad = decode_session_ser(raw, byteorder, where)
                session = LuoSession(name, SERIALIZED, nfiles, pa=pa, files_pa=files_pa)
                session.findings += bad
                walk_files(
                    read_phys,
                    session,
                    byteorder,
                    blocks=False,
                    missing=missing,
                    where=where,
                )
                side.sessions.append(session)
    if side.flbs_pa:
        side.flbs = walk_flbs(
            read_phys,
            side.flbs_pa,
            byteorder,
            missing=missing,
            findings=side.findings,
            where=where,
        )


def _u64(node: FdtNode, prop: str, byteorder: ByteOrder) -> int | None:
    value = node.properties.get(prop)
    if value is None or len(value) != 8:
        return None
    return int.from_bytes(value, byteorder)
