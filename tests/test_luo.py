"""The LUO decoder on bytes built the way the kernel lays them out.

Layouts from include/linux/kho/abi/{luo,block,memfd}.h (7.2) and the
6.19/7.1 luo-v1 FDT form; no dump and no drgn needed.
"""

from __future__ import annotations

import struct

import libfdt
import pytest

from kho_drgn.luo import (
    PAGE_SIZE,
    SEAL_NAMES,
    decode_folio_array,
    decode_luo_blob,
    decode_luo_ser,
    decode_memfd_ser,
    flag_names,
    for_each_block_entry,
)


class PhysMem:
    """Sparse physical memory: pages allocated on first write."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.next_free = 0x100000

    def alloc(self, pages: int = 1) -> int:
        address = self.next_free
        self.next_free += pages * PAGE_SIZE
        for i in range(pages):
            self.pages[address + i * PAGE_SIZE] = bytearray(PAGE_SIZE)
        return address

    def write(self, address: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            page, offset = divmod(address + i, PAGE_SIZE)
            self.pages[page * PAGE_SIZE][offset] = byte

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        while size:
            page, offset = divmod(address, PAGE_SIZE)
            if page * PAGE_SIZE not in self.pages:
                raise OSError(f"no page at {page * PAGE_SIZE:#x}")
            take = min(size, PAGE_SIZE - offset)
            out += self.pages[page * PAGE_SIZE][offset : offset + take]
            address += take
            size -= take
        return bytes(out)


def cstr(text: str, size: int) -> bytes:
    return text.encode().ljust(size, b"\0")


def block_chain(mem: PhysMem, entries: list[bytes], per_block: int) -> int:
    """kho_block_header_ser {next, count} + entries, one page per block."""
    if not entries:
        return 0
    blocks = [entries[i : i + per_block] for i in range(0, len(entries), per_block)]
    addresses = [mem.alloc() for _ in blocks]
    for i, (address, chunk) in enumerate(zip(addresses, blocks)):
        nxt = addresses[i + 1] if i + 1 < len(addresses) else 0
        mem.write(address, struct.pack("<QQ", nxt, len(chunk)) + b"".join(chunk))
    return addresses[0]


def memfd(mem: PhysMem, size: int, pos: int, seals: int, pfns: list[int]) -> int:
    """memfd_luo_ser (memfd-v2) + a kho_vmalloc folio array via one chunk."""
    array = mem.alloc()
    mem.write(
        array,
        b"".join(struct.pack("<QQ", pfn | (3 << 52), i) for i, pfn in enumerate(pfns)),
    )
    chunk = mem.alloc()
    mem.write(chunk, struct.pack("<QQ", 0, array))
    ser = mem.alloc()
    mem.write(
        ser,
        struct.pack("<QQIIQ", pos, size, seals, 0, len(pfns))
        + struct.pack("<QIHH", chunk, 1, 1, 0),
    )
    return ser


def flb_array(mem: PhysMem, flbs: list[tuple[str, int, int]]) -> int:
    header = mem.alloc()
    mem.write(
        header,
        struct.pack("<QQ", 1, len(flbs))
        + b"".join(cstr(n, 48) + struct.pack("<QQ", d, c) for n, d, c in flbs),
    )
    return header


def luo_v5(mem: PhysMem) -> bytes:
    """Two sessions (one with two memfds, one empty), two FLBs."""
    files = [
        cstr("memfd-v2", 48)
        + struct.pack("<QQ", memfd(mem, 12288, 5000, 0x6, [10, 11, 12]), 0x1234),
        cstr("memfd-v2", 48)
        + struct.pack("<QQ", memfd(mem, 4196, 100, 0, [20, 21]), 0x9ABC),
    ]
    files_pa = block_chain(mem, files, 63)
    sessions = [
        cstr("alpha", 64) + struct.pack("<QQ", files_pa, 2),
        cstr("empty", 64) + struct.pack("<QQ", 0, 0),
    ]
    sessions_pa = block_chain(mem, sessions, 51)
    flbs_pa = flb_array(mem, [("flb-a", 0xFEED, 3), ("flb-b", 7, 1)])
    return cstr("luo-v5", 8) + struct.pack("<QQQ", 4, sessions_pa, flbs_pa)


def test_luo_v5_whole() -> None:
    mem = PhysMem()
    side = decode_luo_blob(luo_v5(mem), "incoming", read_phys=mem.read)
    assert side.blob == "intact" and side.compatible == "luo-v5"
    assert side.liveupdate_num == 4 and side.source == "serialized"
    assert not list(side.all_findings())
    assert [(s.name, s.state, s.file_count) for s in side.sessions] == [
        ("alpha", "serialized", 2),
        ("empty", "serialized", 0),
    ]
    a, c = side.sessions[0].files
    assert (a.compatible, a.token, a.retrieved) == ("memfd-v2", 0x1234, "no")
    assert a.memfd is not None and c.memfd is not None
    assert (a.memfd.size, a.memfd.pos, a.memfd.seals) == (12288, 5000, 6)
    assert [(f.pfn, f.flags, f.index) for f in a.memfd.folios] == [
        (10, 3, 0),
        (11, 3, 1),
        (12, 3, 2),
    ]
    assert (c.memfd.size, c.memfd.pos, c.memfd.nr_folios) == (4196, 100, 2)
    assert [(f.name, f.data, f.count) for f in side.flbs] == [
        ("flb-a", 0xFEED, 3),
        ("flb-b", 7, 1),
    ]
    data = side.to_dict()
    assert data["sessions"][0]["files"][0]["token"] == 0x1234  # an integer


def test_blocks_chain_across_pages() -> None:
    mem = PhysMem()
    entries = [cstr(f"s{i}", 64) + struct.pack("<QQ", 0, 0) for i in range(120)]
    head = block_chain(mem, entries, 51)
    got = [raw[:4] for _, raw in for_each_block_entry(mem.read, head, 80)]
    assert got == [cstr(f"s{i}", 4) for i in range(120)]


def test_block_loop_and_bad_count_are_findings() -> None:
    mem = PhysMem()
    page = mem.alloc()
    mem.write(page, struct.pack("<QQ", page, 1) + bytes(80))  # next = itself
    findings: list = []
    assert len(list(for_each_block_entry(mem.read, page, 80, findings=findings))) == 1
    assert [f.code for f in findings] == ["page.cycle"]
    mem.write(page, struct.pack("<QQ", 0, 52))  # 51 fit in a page
    findings = []
    assert not list(for_each_block_entry(mem.read, page, 80, findings=findings))
    assert [f.code for f in findings] == ["luo.bad-count"]


def test_missing_memory_is_a_finding() -> None:
    mem = PhysMem()
    blob = cstr("luo-v5", 8) + struct.pack("<QQQ", 1, 0x7000_0000, 0)
    side = decode_luo_blob(blob, "incoming", read_phys=mem.read)
    assert side.sessions == []
    assert [f.code for f in side.findings] == ["memory.missing"]


@pytest.mark.parametrize(
    "blob",
    [
        bytes(32),  # a zeroed page
        b"#!/bin/busybox sh\n# LUO lab init",  # the fixture's reused page
        b"luo-v5",  # short
    ],
)
def test_reused_blob_is_not_decoded(blob: bytes) -> None:
    side = decode_luo_blob(blob, "incoming", read_phys=PhysMem().read)
    assert side.blob == "reused" and side.sessions == [] and not side.findings
    assert decode_luo_ser(blob)[1] is False


def test_unknown_luo_version_is_read_with_a_warning() -> None:
    blob = cstr("luo-v6", 8) + struct.pack("<QQQ", 9, 0, 0)
    side = decode_luo_blob(blob, "outgoing")
    assert side.liveupdate_num == 9
    assert [f.code for f in side.findings] == ["luo.unknown-version"]


def test_memfd_v1_and_v2_layouts() -> None:
    v2 = struct.pack("<QQIIQ", 7, 8192, 0x21, 0, 2) + struct.pack("<QIHH", 0, 1, 1, 0)
    m = decode_memfd_ser(v2, "memfd-v2")
    assert m is not None and (m.pos, m.size, m.seals, m.nr_folios) == (7, 8192, 0x21, 2)
    assert flag_names(0x21, SEAL_NAMES) == ["seal", "exec"]
    v1 = struct.pack("<QQQ", 7, 8192, 2) + struct.pack("<QIHH", 0, 1, 1, 0)
    m = decode_memfd_ser(v1, "memfd-v1")
    assert m is not None and (m.pos, m.size, m.seals, m.nr_folios) == (7, 8192, None, 2)
    assert decode_memfd_ser(v2, "iommu-v1") is None  # not a memfd handler
    bad = decode_memfd_ser(
        struct.pack("<QQIIQ", 0, 4096, 0, 0, 9) + bytes(16), "memfd-v2"
    )
    assert bad is not None and [f.code for f in bad.findings] == ["luo.memfd-bad-count"]


def test_folio_bitfields() -> None:
    word = (0x3 << 52) | 0xF_FFFF_FFFF_FFFF
    (folio,) = decode_folio_array(struct.pack("<QQ", word, 5), 1)
    assert (folio.pfn, folio.flags, folio.index) == (0xF_FFFF_FFFF_FFFF, 3, 5)


def _luo_v1_fdt(number: int, sessions_pa: int, flbs_pa: int) -> bytes:
    fdt = libfdt.FdtSw()
    fdt.finish_reservemap()
    with fdt.add_node(""):
        fdt.property_string("compatible", "luo-v1")
        fdt.property("liveupdate-number", struct.pack("<Q", number))
        with fdt.add_node("luo-session"):
            fdt.property_string("compatible", "luo-session-v2")
            fdt.property("luo-session-header", struct.pack("<Q", sessions_pa))
        with fdt.add_node("luo-flb"):
            fdt.property_string("compatible", "luo-flb-v1")
            fdt.property("luo-flb-header", struct.pack("<Q", flbs_pa))
    return bytes(fdt.as_fdt().as_bytearray())


def test_luo_v1_fdt_form() -> None:
    """6.19/7.1: contiguous arrays, {u64 count} session header, memfd-v1."""
    mem = PhysMem()
    ser = mem.alloc()
    mem.write(ser, struct.pack("<QQQ", 0, 4096, 0) + struct.pack("<QIHH", 0, 0, 0, 0))
    files = mem.alloc()
    mem.write(files, cstr("memfd-v1", 48) + struct.pack("<QQ", ser, 42))
    sessions = mem.alloc()
    mem.write(
        sessions,
        struct.pack("<Q", 1) + cstr("old", 64) + struct.pack("<QQ", files, 1),
    )
    flbs = flb_array(mem, [("flb-x", 1, 1)])
    side = decode_luo_blob(
        _luo_v1_fdt(3, sessions, flbs), "incoming", read_phys=mem.read
    )
    assert not list(side.all_findings())
    assert (side.compatible, side.liveupdate_num) == ("luo-v1", 3)
    (session,) = side.sessions
    assert (session.name, session.file_count) == ("old", 1)
    (file,) = session.files
    assert (file.compatible, file.token) == ("memfd-v1", 42)
    assert file.memfd is not None and file.memfd.size == 4096
    assert [f.name for f in side.flbs] == ["flb-x"]


def test_unterminated_session_name() -> None:
    mem = PhysMem()
    head = block_chain(mem, [b"x" * 64 + struct.pack("<QQ", 0, 0)], 51)
    blob = cstr("luo-v5", 8) + struct.pack("<QQQ", 1, head, 0)
    side = decode_luo_blob(blob, "incoming", read_phys=mem.read)
    assert side.sessions[0].name is None
    assert [f.code for f in side.all_findings()] == ["luo.bad-string"]


# --------------------------------------------------------------------------
# The kernel's lists, through kallsyms at the 7.2 offsets, on a synthetic
# program: sessions retrieved in the new kernel, and outgoing sessions of a
# kernel that crashed before any kexec (the states the fixture cannot show).
# --------------------------------------------------------------------------

DIRECT_MAP = 0xFFFF888000000000
KERNEL = 0xFFFFFFFF82000000


class KernelImage:
    """Kernel data at KERNEL plus physical memory seen through the direct map."""

    def __init__(self, mem: PhysMem) -> None:
        self.mem = mem
        self.data = bytearray(0x4000)
        self.symbols: dict[str, int] = {}
        self.next = KERNEL

    def var(self, name: str, size: int) -> int:
        self.symbols[name] = self.next
        self.next += (size + 63) // 64 * 64
        return self.symbols[name]

    def write(self, address: int, data: bytes) -> None:
        if address >= KERNEL:
            at = address - KERNEL
            self.data[at : at + len(data)] = data
        else:
            self.mem.write(address - DIRECT_MAP, data)

    def word(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<Q", value))

    def program(self) -> object:
        import drgn

        platform = drgn.Platform(
            drgn.Architecture.X86_64,
            drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
        )
        prog = drgn.Program(platform)
        kernel = bytes(self.data)
        prog.add_memory_segment(
            KERNEL, len(kernel), lambda a, n, o, p: kernel[o : o + n]
        )
        prog.add_memory_segment(
            DIRECT_MAP, 1 << 32, lambda a, n, o, p: self.mem.read(o, n)
        )
        prog.add_memory_segment(
            0, 1 << 32, lambda a, n, o, p: self.mem.read(a, n), True
        )
        symbols = [
            drgn.Symbol(
                name, address, 64, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT
            )
            for name, address in self.symbols.items()
        ]

        def find(
            prog: object, name: str | None, address: int | None, one: bool
        ) -> list:
            return [
                s
                for s in symbols
                if (name is None or s.name == name)
                and (address is None or s.address <= address < s.address + s.size)
            ]

        prog.register_symbol_finder("test", find, enable_index=0)
        prog.cache["kho_drgn.symbols"] = "kallsyms"  # no DWARF: the offsets
        return prog


def _list(image: KernelImage, head: int, entries: list[int]) -> None:
    """Link ``entries`` (addresses of their list_head) after ``head``."""
    nodes = [head, *entries]
    for i, node in enumerate(nodes):
        image.word(node, nodes[(i + 1) % len(nodes)])
        image.word(node + 8, nodes[i - 1])


def _session(
    image: KernelImage,
    name: str,
    retrieved: int,
    files: list[tuple[int, int, int]],
    handler: int,
) -> int:
    """A struct luo_session with struct luo_files (token, status, data)."""
    base = DIRECT_MAP + image.mem.alloc()
    image.write(base, cstr(name, 64))
    image.write(base + 80, bytes([retrieved]))
    entries = []
    for token, status, data in files:
        file = DIRECT_MAP + image.mem.alloc()
        image.word(file, handler)
        image.word(file + 16, data)
        image.write(file + 32, struct.pack("<i", status))
        image.word(file + 80, token)
        entries.append(file + 64)
    _list(image, base + 88, entries)
    return base + 64


def test_kernel_lists_retrieved_and_preserving() -> None:
    from kho_drgn.luo_target import luo_state, read_kernel_luo
    from kho_drgn.state import Handover, KhoState, KhoStatus
    from kho_drgn.target import SymbolSource

    mem = PhysMem()
    image = KernelImage(mem)
    glob = image.var("luo_global", 24)
    sessions = image.var("luo_session_global", 256)
    flbs = image.var("luo_flb_global", 72)
    _list(image, flbs + 48, [])  # no FLB registered
    image.word(image.var("page_offset_base", 8), DIRECT_MAP)
    handler = image.var("memfd_luo_handler", 88)
    image.write(handler + 8, cstr("memfd-v2", 48))
    image.word(glob + 16, 3)  # liveupdate_num
    out_memfd = memfd(mem, 8192, 10, 0x1, [40, 41])
    _list(
        image,
        sessions + 8,
        [
            _session(image, "back", 1, [(0x42, 1, 0)], handler),
            _session(image, "waiting", 0, [(0x43, 0, 0)], handler),
        ],
    )
    _list(
        image,
        sessions + 128 + 8,
        [
            _session(image, "going", 0, [(0x99, 0, out_memfd)], handler),
        ],
    )
    prog = image.program()

    kernel = read_kernel_luo(prog)
    assert kernel is not None and kernel.source == "kallsyms"
    assert kernel.liveupdate_num == 3
    assert [(s.name, s.state) for s in kernel.incoming_sessions] == [
        ("back", "retrieved"),
        ("waiting", "restored"),
    ]
    back = kernel.incoming_sessions[0].files[0]
    assert (back.compatible, back.token, back.retrieved) == ("memfd-v2", 0x42, "yes")

    # This kernel's outgoing LUO blob, as a cold-booted 7.2 kernel has it
    # before any kexec: sessions_pa 0 (written at kexec time only).
    blob = mem.alloc()
    mem.write(blob, cstr("luo-v5", 8) + struct.pack("<QQQ", 4, 0, 0))
    state = KhoState(SymbolSource.KALLSYMS, "7.2.0", KhoStatus.COLD_BOOT)
    state.outgoing = Handover("outgoing", None, fdt=_kho_root_with_luo(blob))
    luo = luo_state(prog, state, {})
    assert luo is not None and luo.kernel_source == "kallsyms"
    assert luo.outgoing is not None and luo.outgoing.liveupdate_num == 4
    assert luo.outgoing is not None and luo.outgoing.source == "kernel"
    (going,) = luo.outgoing.sessions
    assert (going.name, going.state, going.file_count) == ("going", "preserving", 1)
    (file,) = going.files
    assert (file.token, file.retrieved) == (0x99, "no")
    assert file.memfd is not None
    assert (file.memfd.size, file.memfd.pos, file.memfd.seals) == (8192, 10, 1)
    assert [f.pfn for f in file.memfd.folios] == [40, 41]
    assert luo.incoming is not None and luo.incoming.source == "kernel"
    assert [s.state for s in luo.incoming.sessions] == ["retrieved", "restored"]


def _kho_root_with_luo(blob_phys: int) -> object:
    from kho_drgn.fdt import decode_kho_fdt

    fdt = libfdt.FdtSw()
    fdt.finish_reservemap()
    with fdt.add_node(""):
        fdt.property_string("compatible", "kho-v4")
        fdt.property("preserved-memory-map", struct.pack("<Q", 0))
        with fdt.add_node("LUO"):
            fdt.property("preserved-data", struct.pack("<Q", blob_phys))
            fdt.property("blob-size", struct.pack("<Q", 32))
    return decode_kho_fdt(bytes(fdt.as_fdt().as_bytearray()))


def test_fdt_era_luo_is_not_read_at_the_72_offsets() -> None:
    """Without DWARF, a kernel whose LUO blob is the luo-v1 FDT (6.19, 7.1)
    is read from its sub-node only: the 7.2 offsets do not apply."""
    from kho_drgn.luo_target import read_kernel_luo

    image = KernelImage(PhysMem())
    image.var("luo_global", 24)
    image.var("luo_session_global", 256)
    prog = image.program()
    assert read_kernel_luo(prog, "luo-v1") is None
    assert read_kernel_luo(prog, None) is None
    assert read_kernel_luo(prog, "luo-v5") is not None


@pytest.mark.parametrize("retrieved", [1, 0])
def test_retrieved_memfd_data_is_one_info(retrieved: int) -> None:
    """A kernel-list memfd the new kernel retrieved has had its serialized
    data consumed: reading it fails, and that is one info, made by
    luo_target from its own list (the decoder's findings are not rewritten)."""
    from drgn import FaultError

    from kho_drgn.luo import LuoFile
    from kho_drgn.luo_target import _kernel_memfd

    def freed(address: int, size: int) -> bytes:
        raise FaultError("could not read memory", address)

    file = LuoFile(
        "memfd-v2", 0x1234, 0x7000000, source="kernel", retrieve_status=retrieved
    )
    _kernel_memfd(freed, file, "little", "incoming")
    assert file.memfd is None
    want = "luo.memfd-consumed" if retrieved else "memory.missing"
    assert [f.code for f in file.findings] == [want]
