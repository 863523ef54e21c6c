"""The preserved-memory map walkers (``kho_drgn.memmap``) on maps built
exactly as the kernel writes them.

The builders below follow the kernel source, not ``kho_drgn.memmap``:

* ``radix_map``: ``kho_radix_add_page`` of kernel/liveupdate/kexec_handover.c
  (7.1+): the root from ``kzalloc(PAGE_SIZE)``, every missing node on the way
  down from level 5 to 1 from ``get_zeroed_page`` and stored with
  ``virt_to_phys``, then ``__set_bit(key % 32768)`` in the leaf;
* ``chunk_map``: ``__kho_preserve_order`` then ``kho_mem_serialize`` of
  kernel/kexec_handover.c (6.16..7.0, kho-v1): per-order bitmaps of
  ``PRESERVE_BITS`` bits (512-byte ``kzalloc`` before 6.17.9, a page after),
  one chunk page per order (more when 255 bitmaps are not enough), entries
  ``{phys_start = (index * PRESERVE_BITS) << (order + 12), bitmap phys}``.

Physical memory is a dict of page address -> page bytes; ``read_phys`` raises
``PhysReadError`` for a page that is not there.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kho_drgn.findings import Severity, error
from kho_drgn.memmap import (
    CHUNK_BITMAP_BITS_PAGE,
    CHUNK_BITMAP_BITS_SMALL,
    CHUNK_MAX_ENTRIES,
    DEFAULT_MAX_PHYS,
    MAX_FINDINGS_PER_CODE,
    RADIX_TREE_DEPTH,
    MapLimits,
    MapWalk,
    PhysReadError,
    PreservedBlock,
    for_each_chunk_block,
    for_each_merged_range,
    for_each_preserved_block,
    for_each_radix_block,
    radix_bitmap_index,
    radix_decode_key,
    radix_encode_key,
    radix_table_index,
    summarize_memory_map,
)

PAGE = 4096
Block = tuple[int, int]  # (phys, order)

# --------------------------------------------------------------------------
# The kernel's formulas, written out from the C source (independent of memmap)
# --------------------------------------------------------------------------

KHO_ORDER_0_LOG2 = 64 - 12  # enum kho_radix_consts, 4 KiB pages
KHO_TABLE_SIZE_LOG2 = 9  # const_ilog2(PAGE_SIZE / sizeof(phys_addr_t))
KHO_BITMAP_SIZE_LOG2 = 12 + 3  # PAGE_SHIFT + const_ilog2(BITS_PER_BYTE)
KHO_TREE_MAX_DEPTH = -(-(KHO_ORDER_0_LOG2 - KHO_BITMAP_SIZE_LOG2) // 9) + 1


def k_encode(phys: int, order: int) -> int:
    """kho_radix_encode_key: h = 1UL << (52 - order); l = phys >> (12 + order)."""
    return (1 << (KHO_ORDER_0_LOG2 - order)) | (phys >> (12 + order))


def k_decode(key: int) -> Block:
    """kho_radix_decode_key: order = 52 - fls64(key) + 1; phys = key << (12 + order)."""
    order = KHO_ORDER_0_LOG2 - key.bit_length() + 1
    return (key << (12 + order)) % (1 << 64), order


def k_table_index(key: int, level: int) -> int:
    return (key >> ((level - 1) * KHO_TABLE_SIZE_LOG2 + KHO_BITMAP_SIZE_LOG2)) % 512


def k_bitmap_index(key: int) -> int:
    return key % (1 << KHO_BITMAP_SIZE_LOG2)


# --------------------------------------------------------------------------
# Physical memory and the two builders
# --------------------------------------------------------------------------


class Phys:
    """Target physical memory: page address -> page, in one byte order."""

    def __init__(self, byteorder: str = "little", base: int = 0x100000) -> None:
        self.byteorder = byteorder
        self.fmt = "<" if byteorder == "little" else ">"
        self.pages: dict[int, bytearray] = {}
        self.next_page = base
        self.slab: list[int] = []  # free 512-byte kmalloc objects

    def get_zeroed_page(self) -> int:
        address = self.next_page
        self.next_page += PAGE
        self.pages[address] = bytearray(PAGE)
        return address

    def kzalloc(self, size: int) -> int:
        """kzalloc: a page for PAGE_SIZE, else a naturally aligned object
        from a kmalloc-512 slab page (eight per page)."""
        if size == PAGE:
            return self.get_zeroed_page()
        assert size == 512
        if not self.slab:
            page = self.get_zeroed_page()
            self.slab = [page + i * 512 for i in range(8)][::-1]
        return self.slab.pop()

    def _at(self, address: int) -> tuple[bytearray, int]:
        return self.pages[address & ~(PAGE - 1)], address % PAGE

    def u64(self, address: int) -> int:
        page, off = self._at(address)
        return int(struct.unpack_from(self.fmt + "Q", page, off)[0])

    def set_u64(self, address: int, value: int) -> None:
        page, off = self._at(address)
        struct.pack_into(self.fmt + "Q", page, off, value)

    def set_u32(self, address: int, value: int) -> None:
        page, off = self._at(address)
        struct.pack_into(self.fmt + "I", page, off, value)

    def set_bit(self, bitmap: int, bit: int) -> None:
        """__set_bit on an unsigned long bitmap."""
        word = bitmap + bit // 64 * 8
        self.set_u64(word, self.u64(word) | 1 << bit % 64)

    def read_phys(self, address: int, size: int) -> bytes:
        out = b""
        while len(out) < size:
            base = (address + len(out)) & ~(PAGE - 1)
            if base not in self.pages:
                raise PhysReadError(f"no page at {base:#x}")
            off = (address + len(out)) - base
            out += bytes(self.pages[base][off : off + size - len(out)])
        return out


def radix_map(
    blocks: Iterable[Block], byteorder: str = "little", mem: Phys | None = None
) -> tuple[Phys, int]:
    """A radix tree as kho_init + kho_radix_add_page build it; (memory, root)."""
    mem = mem or Phys(byteorder)
    root = mem.kzalloc(PAGE)  # kho_init: tree->root = kzalloc(PAGE_SIZE)
    for phys, order in blocks:
        key = k_encode(phys, order)
        node = root
        for level in range(KHO_TREE_MAX_DEPTH - 1, 0, -1):
            slot = node + k_table_index(key, level) * 8
            if not mem.u64(slot):
                mem.set_u64(slot, mem.get_zeroed_page())
            node = mem.u64(slot)
        mem.set_bit(node, k_bitmap_index(key))
    return mem, root


def chunk_map(
    blocks: Iterable[Block],
    bitmap_bits: int = CHUNK_BITMAP_BITS_PAGE,
    byteorder: str = "little",
    mem: Phys | None = None,
) -> tuple[Phys, int]:
    """A kho-v1 map as __kho_preserve_order + kho_mem_serialize build it;
    (memory, first chunk) (0 when nothing is preserved)."""
    mem = mem or Phys(byteorder)
    # the tracker: xarray orders -> xarray phys_bits (pfn_high / bits) -> bitmap
    track: dict[int, dict[int, int]] = {}
    for phys, order in blocks:
        pfn_high = (phys >> 12) >> order
        bitmaps = track.setdefault(order, {})
        index = pfn_high // bitmap_bits
        if index not in bitmaps:
            bitmaps[index] = mem.kzalloc(bitmap_bits // 8)
        mem.set_bit(bitmaps[index], pfn_high % bitmap_bits)
    first = chunk = 0

    def new_chunk(order: int) -> int:
        new = mem.kzalloc(PAGE)
        mem.set_u32(new + 8, order)  # hdr.order
        if chunk:
            mem.set_u64(chunk, new)  # KHOSER_STORE_PTR(hdr.next): virt_to_phys
        return new

    for order in sorted(track):  # xa_for_each: ascending index
        chunk = new_chunk(order)
        first = first or chunk
        count = 0
        for index in sorted(track[order]):
            if count == CHUNK_MAX_ENTRIES:
                chunk, count = new_chunk(order), 0
            entry = chunk + 16 + count * 16
            mem.set_u64(entry, (index * bitmap_bits) << (order + 12))
            mem.set_u64(entry + 8, track[order][index])
            count += 1
            mem.set_u32(chunk + 12, count)  # hdr.num_elms
    return mem, first


def walk_radix(mem: Phys, root: int, **kwargs: object) -> tuple[list[Block], MapWalk]:
    walk = MapWalk(where="test")
    blocks = [
        (b.phys, b.order)
        for b in for_each_radix_block(
            mem.read_phys, root, mem.byteorder, walk=walk, **kwargs
        )
    ]
    return blocks, walk


def walk_chunks(mem: Phys, first: int, **kwargs: object) -> tuple[list[Block], MapWalk]:
    walk = MapWalk(where="test")
    blocks = [
        (b.phys, b.order)
        for b in for_each_chunk_block(
            mem.read_phys, first, mem.byteorder, walk=walk, **kwargs
        )
    ]
    return blocks, walk


def codes(walk: MapWalk) -> set[str]:
    return {f.code for f in walk.findings}


def path(mem: Phys, root: int, key: int) -> list[int]:
    """The nodes on the way to ``key``: [root (level 5), level 4, .., leaf]."""
    nodes = [root]
    for level in range(KHO_TREE_MAX_DEPTH - 1, 0, -1):
        nodes.append(mem.u64(nodes[-1] + k_table_index(key, level) * 8))
    return nodes


def leaf_of(mem: Phys, root: int, key: int) -> int:
    return path(mem, root, key)[-1]


TOP = 1 << 52  # MAX_PHYSMEM_BITS on x86_64
BLOCKS: list[Block] = [
    (0x0, 0), (0x1000, 0), (0x2000, 1), (0x400000, 9), (0x1F66C000, 2),
    (0x1F680000, 7), (0x40000000, 18), (0x8000000000, 27),
    (TOP - 0x1000, 0), (TOP - 0x200000, 9), (TOP - (1 << 30), 18),
    (1 << 50, 38), (0, 40),  # orders >= 38: keys below bit 15, the all-zero path
]  # fmt: skip


# --------------------------------------------------------------------------
# Kernel source facts
# --------------------------------------------------------------------------


def test_radix_constants_match_the_header() -> None:
    assert KHO_TREE_MAX_DEPTH == RADIX_TREE_DEPTH == 6
    # v3+ computes DIV_ROUND_UP(52 - 15 + 1, 9) + 1: the same 6 for 4 KiB pages
    assert -(-(KHO_ORDER_0_LOG2 - KHO_BITMAP_SIZE_LOG2 + 1) // 9) + 1 == 6


@pytest.mark.parametrize("phys,order", [*BLOCKS, (0x1234000, 0), (TOP - 0x1000, 0)])
def test_key_codec_matches_the_kernel(phys: int, order: int) -> None:
    key = radix_encode_key(phys, order)
    assert key == k_encode(phys, order)
    assert key.bit_length() == 53 - order  # the order bit
    assert radix_decode_key(key) == k_decode(key) == (phys, order)
    for level in range(1, 6):
        assert radix_table_index(key, level) == k_table_index(key, level)
    assert radix_bitmap_index(key) == k_bitmap_index(key)


def test_key_layout() -> None:
    """63:60 zero, 59:51 level 5, ..., 23:15 level 1, 14:0 the leaf bit."""
    key = k_encode((1 << 64) - 0x1000, 0)  # every address bit set, order 0
    assert key == (1 << 53) - 1
    assert [radix_table_index(key, lv) for lv in range(5, 0, -1)] == [3] + [511] * 4
    assert radix_bitmap_index(key) == 0x7FFF
    assert radix_table_index(k_encode(0, 0), 5) == 2  # the order-0 bit, bit 52
    assert radix_table_index(k_encode(0, 1), 5) == 1
    assert radix_table_index(k_encode(0, 2), 5) == 0


def test_decode_rejects_keys_the_kernel_cannot_write() -> None:
    assert radix_decode_key(0) is None
    assert radix_decode_key(1 << 53) is None  # order bit above the order-0 bit
    assert radix_decode_key((1 << 64) - 1) is None


# --------------------------------------------------------------------------
# Round trips: exactly the blocks put in, in the kernel's walk order
# --------------------------------------------------------------------------


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_radix_returns_exactly_the_blocks(byteorder: str) -> None:
    mem, root = radix_map(BLOCKS, byteorder)
    blocks, walk = walk_radix(mem, root)
    # __kho_radix_walk_tree: slots in ascending order, depth first = key order
    assert blocks == sorted(BLOCKS, key=lambda b: k_encode(*b))
    assert walk.complete and walk.findings == []
    assert walk.nodes_read == len(mem.pages) and walk.blocks == len(BLOCKS)


@pytest.mark.parametrize("bits", [CHUNK_BITMAP_BITS_SMALL, CHUNK_BITMAP_BITS_PAGE])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_chunks_return_exactly_the_blocks(bits: int, byteorder: str) -> None:
    mem, first = chunk_map(BLOCKS, bits, byteorder)
    blocks, walk = walk_chunks(mem, first, bitmap_bits=bits)
    # kho_mem_deserialize: chunks in list order (orders ascending), entries
    # in index order, bits ascending
    assert blocks == sorted(BLOCKS, key=lambda b: (b[1], b[0]))
    assert walk.complete and walk.findings == []


def test_chunks_many_bitmaps_span_several_chunks() -> None:
    """More than 255 bitmaps of one order: kho_mem_serialize starts a new chunk."""
    blocks = [(i * CHUNK_BITMAP_BITS_SMALL * PAGE, 0) for i in range(600)]
    blocks += [(0x200000 * i, 9) for i in range(3)]
    mem, first = chunk_map(blocks, CHUNK_BITMAP_BITS_SMALL)
    found, walk = walk_chunks(mem, first, bitmap_bits=CHUNK_BITMAP_BITS_SMALL)
    assert found == sorted(blocks, key=lambda b: (b[1], b[0]))
    chunks = 4  # 255 + 255 + 90 order-0 entries, one order-9 chunk
    small_bitmaps = 601  # the order-9 blocks share one bitmap
    assert walk.nodes_read == chunks + small_bitmaps and walk.complete


def test_small_bitmaps_share_slab_pages() -> None:
    """512-byte bitmaps are kmalloc objects, eight to a page, 512-aligned."""
    mem, first = chunk_map([(0, 0), (1 << 24, 0)], CHUNK_BITMAP_BITS_SMALL)
    assert mem.u64(first + 24) - mem.u64(first + 40) in (512, -512)
    found, walk = walk_chunks(mem, first, bitmap_bits=CHUNK_BITMAP_BITS_SMALL)
    assert found == [(0, 0), (1 << 24, 0)] and walk.complete


def test_chunk_bitmap_size_must_match_the_kernel() -> None:
    """Read with the other PRESERVE_BITS, a map comes out wrong and says so."""
    mem, first = chunk_map([(1 << 24, 0)], CHUNK_BITMAP_BITS_SMALL)
    _, walk = walk_chunks(mem, first, bitmap_bits=CHUNK_BITMAP_BITS_PAGE)
    assert "memmap.chunk-bad-start" in codes(walk)  # 16 MiB is not 128 MiB-aligned


def test_for_each_preserved_block_dispatches() -> None:
    mem, root = radix_map(BLOCKS)
    found = {(b.phys, b.order) for b in for_each_preserved_block(mem.read_phys, root)}
    assert found == set(BLOCKS)
    mem, first = chunk_map(BLOCKS, CHUNK_BITMAP_BITS_SMALL)
    found = {
        (b.phys, b.order)
        for b in for_each_preserved_block(
            mem.read_phys,
            first,
            map_format="chunks",
            bitmap_bits=CHUNK_BITMAP_BITS_SMALL,
        )
    }
    assert found == set(BLOCKS)


# --------------------------------------------------------------------------
# summarize_memory_map: per-order totals, pages, bytes, ranges
# --------------------------------------------------------------------------

SUMMARY_BLOCKS: list[Block] = [
    (0x10000, 0), (0x11000, 0), (0x12000, 1),  # one range 0x10000..0x14000
    (0x200000, 9), (0x400000, 9),  # 0x200000..0x600000
    (0x40000000, 18),  # 1 GiB
    (TOP - 0x1000, 0),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["radix", "chunks"])
def test_summary_counts_and_ranges(fmt: str) -> None:
    if fmt == "radix":
        mem, root = radix_map(SUMMARY_BLOCKS, "big")
    else:
        mem, root = chunk_map(SUMMARY_BLOCKS, CHUNK_BITMAP_BITS_PAGE, "big")
    s = summarize_memory_map(
        mem.read_phys, root, "big", map_format=fmt, where="outgoing"
    )
    assert s.blocks_by_order == {0: 3, 1: 1, 9: 2, 18: 1}
    assert s.pages_by_order() == {0: 3, 1: 2, 9: 1024, 18: 1 << 18}
    assert s.blocks == 7 and s.pages == 3 + 2 + 1024 + (1 << 18)
    assert s.bytes == s.pages * PAGE
    assert [(r.start, r.end) for r in s.ranges] == [
        (0x10000, 0x14000), (0x200000, 0x600000),
        (0x40000000, 0x80000000), (TOP - 0x1000, TOP),
    ]  # fmt: skip
    assert s.complete and s.findings == [] and s.overlaps == 0
    d = s.to_dict()
    assert d["format"] == fmt and d["range_count"] == 4 and d["blocks"] == 7
    assert d["orders"][1] == {"order": 1, "blocks": 1, "pages": 2, "bytes": 8192}
    assert d["nodes_read"] == len(mem.pages)


def test_overlaps_counted_and_merged() -> None:
    mem, root = radix_map([(0, 9), (0x1000, 0), (0x3000, 1), (0x300000, 0)])
    s = summarize_memory_map(mem.read_phys, root)
    assert s.overlaps == 2  # both small blocks lie inside the order-9 one
    assert [(r.start, r.end) for r in s.ranges] == [(0, 0x200000), (0x300000, 0x301000)]
    assert [f.code for f in s.findings] == ["memmap.overlap"]
    assert s.complete  # overlaps are reported, the walk was whole


def test_too_many_ranges() -> None:
    blocks = [(i * 0x10000, 0) for i in range(10)]
    mem, root = radix_map(blocks)
    s = summarize_memory_map(mem.read_phys, root, max_ranges=4)
    assert s.ranges_truncated and len(s.ranges) == 4 and s.blocks == 10
    assert "memmap.too-many-ranges" in {f.code for f in s.findings}
    assert s.complete  # the counts are whole


def test_empty_map_with_blobs_is_the_walks_own_finding() -> None:
    """A map page of zeros walks whole to nothing; told that the handover
    names blobs (each preserved memory), the walk itself says it is not whole."""
    mem, root = radix_map([])
    s = summarize_memory_map(mem.read_phys, root, where="incoming")
    assert s.blocks == 0 and s.complete and s.findings == []
    s = summarize_memory_map(mem.read_phys, root, where="incoming", blobs=2)
    assert not s.complete
    assert [(f.code, f.severity, f.where) for f in s.findings] == [
        ("memmap.empty-with-blobs", Severity.ERROR, "incoming")
    ]
    assert "hands over 2 blob(s)" in s.findings[0].message
    full, root = radix_map([(0x5000, 0)])
    assert summarize_memory_map(full.read_phys, root, blobs=2).findings == []


def test_merged_ranges_helper() -> None:
    blocks = [
        PreservedBlock(0x3000, 0),
        PreservedBlock(0, 1),
        PreservedBlock(0x2000, 0),
    ]
    assert [(r.start, r.size) for r in for_each_merged_range(blocks)] == [(0, 0x4000)]


# --------------------------------------------------------------------------
# Guards: each one terminates, reports its code, and marks the walk partial
# --------------------------------------------------------------------------


def test_empty_map() -> None:
    mem = Phys()
    for walker in (walk_radix, walk_chunks):
        blocks, walk = walker(mem, 0)
        assert blocks == [] and codes(walk) == {"memmap.empty"} and walk.complete
        assert walk.findings[0].severity is Severity.INFO
    # a root with nothing preserved yet (a cold boot's tree): empty, whole
    mem, root = radix_map([])
    blocks, walk = walk_radix(mem, root)
    assert blocks == [] and walk.findings == [] and walk.complete


def test_radix_cycle_child_points_at_ancestor() -> None:
    mem, root = radix_map([(0x5000, 0), (0x9000, 0)])
    level1 = path(mem, root, k_encode(0x5000, 0))[4]
    mem.set_u64(level1 + 7 * 8, root)  # a level-1 slot back at the root
    level3 = mem.u64(mem.u64(root + 2 * 8))
    mem.set_u64(level3 + 9 * 8, mem.u64(root + 2 * 8))  # ... and one at level 4
    blocks, walk = walk_radix(mem, root)
    assert blocks == [(0x5000, 0), (0x9000, 0)]
    assert "page.cycle" in codes(walk) and not walk.complete


def test_radix_shared_node() -> None:
    mem, root = radix_map([(0x5000, 0)])
    leaf = leaf_of(mem, root, k_encode(0x5000, 0))
    level1 = path(mem, root, k_encode(0x5000, 0))[4]
    mem.set_u64(level1 + 1 * 8, leaf)  # the same leaf under a second slot
    blocks, walk = walk_radix(mem, root)
    assert blocks == [(0x5000, 0)]  # walked once
    assert "page.cycle" in codes(walk) and not walk.complete


def test_radix_pointer_guards() -> None:
    mem, root = radix_map([(0x5000, 0)])
    level1 = path(mem, root, k_encode(0x5000, 0))[4]
    mem.set_u64(level1 + 10 * 8, TOP)  # out of range
    mem.set_u64(level1 + 11 * 8, 0x100010)  # unaligned
    mem.set_u64(level1 + 12 * 8, 0x7000000)  # not in the dump
    blocks, walk = walk_radix(mem, root)
    assert blocks == [(0x5000, 0)] and not walk.complete
    assert {"page.bad-pointer", "memory.missing"} <= codes(walk)
    bad = " ".join(f.message for f in walk.findings if f.code == "page.bad-pointer")
    assert "past the end of physical memory" in bad and "4096-byte aligned" in bad
    # the root itself
    for bad_root, code, says in [
        (TOP, "page.bad-pointer", "past the end"),
        (root + 8, "page.bad-pointer", "not 4096-byte aligned"),
        (0x7000000, "memory.missing", "not in the target"),
    ]:
        blocks, walk = walk_radix(mem, bad_root)
        assert blocks == [] and code in codes(walk) and not walk.complete
        assert any(says in f.message for f in walk.findings), walk.findings
    # a smaller max_phys puts the node itself out of range
    blocks, walk = walk_radix(mem, root, limits=MapLimits(max_phys=root))
    assert "page.bad-pointer" in codes(walk) and blocks == []


class Raises:
    def __init__(self, mem: Phys, bad: int, exc: BaseException | None) -> None:
        self.mem, self.bad, self.exc = mem, bad, exc
        self.byteorder = mem.byteorder

    def read_phys(self, address: int, size: int) -> bytes:
        if address & ~(PAGE - 1) == self.bad:
            if self.exc is None:
                return self.mem.read_phys(address, size)[: size // 2]  # short
            raise self.exc
        return self.mem.read_phys(address, size)


@pytest.mark.parametrize(
    "exc", [PhysReadError("gone"), OSError(5, "EIO"), None], ids=["phys", "os", "short"]
)
def test_missing_pages(exc: BaseException | None) -> None:
    mem, root = radix_map([(0x5000, 0), (TOP - 0x1000, 0)])
    bad = leaf_of(mem, root, k_encode(0x5000, 0))
    blocks, walk = walk_radix(Raises(mem, bad, exc), root)
    assert blocks == [(TOP - 0x1000, 0)]
    assert "memory.missing" in codes(walk) and not walk.complete
    cmem, first = chunk_map([(0x5000, 0), (0x200000, 9)])
    bitmap = cmem.u64(first + 24)
    blocks, walk = walk_chunks(Raises(cmem, bitmap, exc), first)
    assert blocks == [(0x200000, 9)] and "memory.missing" in codes(walk)
    blocks, walk = walk_chunks(Raises(cmem, first, exc), first)
    assert blocks == [] and "memory.missing" in codes(walk) and not walk.complete


def test_missing_with_a_custom_exception() -> None:
    mem, root = radix_map([(0x5000, 0)])
    raises = Raises(mem, root, KeyError("x"))
    with pytest.raises(KeyError):  # not declared missing: the caller's bug
        walk_radix(raises, root)
    blocks, walk = walk_radix(raises, root, missing=(KeyError,))
    assert blocks == [] and "memory.missing" in codes(walk)


@pytest.mark.parametrize(
    "content",
    [random.Random(7).randbytes(PAGE), (b"Linux version 7.2.13 " * 200)[:PAGE],
     b"\xff" * PAGE, (b"\x00" * 8 + b"\x01\x10\x00\x00\x00\x00\x00\x00") * 256],
    ids=["random", "ascii", "ones", "unaligned-small"],
)  # fmt: skip
def test_root_page_that_is_not_a_map(content: bytes) -> None:
    """The incoming map's pages are reused after boot: an overwritten root."""
    mem, root = radix_map(BLOCKS)
    mem.pages[root][:] = content
    blocks, walk = walk_radix(mem, root)
    assert blocks == [] and not walk.complete
    assert "memmap.not-a-map" in codes(walk)
    assert walk.nodes_read == 1  # nothing followed


def test_inner_node_that_is_not_a_map() -> None:
    mem, root = radix_map([(0x5000, 0), (1 << 40, 0)])
    level1 = path(mem, root, k_encode(0x5000, 0))[4]
    assert level1 != path(mem, root, k_encode(1 << 40, 0))[4]
    mem.pages[level1][:] = (b"overwritten! " * 316)[:PAGE]
    blocks, walk = walk_radix(mem, root)
    assert blocks == [(1 << 40, 0)] and "memmap.not-a-map" in codes(walk)
    assert not walk.complete


def test_invalid_keys() -> None:
    mem, root = radix_map([(0x5000, 0)])
    good = mem.u64(root + 2 * 8)
    mem.set_u64(root + 4 * 8, good)  # slot 4 at level 5: key bit 53, no order
    blocks, walk = walk_radix(mem, root)
    assert blocks == [(0x5000, 0)]
    assert "memmap.invalid-key" in codes(walk) and walk.invalid_keys == 1
    assert not walk.complete
    # key 0 in the all-zero leaf: fls64(0) = 0, order 53
    mem, root = radix_map([(0, 40)])
    leaf = leaf_of(mem, root, k_encode(0, 40))
    mem.set_bit(leaf, 0)
    blocks, walk = walk_radix(mem, root)
    assert blocks == [(0, 40)] and walk.invalid_keys == 1


def test_a_finding_for_many_items_is_not_counted_again() -> None:
    """Fixed: finish() compared items with findings, so one finding standing
    for 5 keys got a spurious "... and 4 more" (latent: the bulk counts of
    out-of-range blocks made it live)."""
    walk = MapWalk()
    walk.report(error("memmap.invalid-key", "5 keys"), 5)
    walk.finish()
    assert [f.message for f in walk.findings] == ["5 keys"]
    walk = MapWalk()
    for n in range(MAX_FINDINGS_PER_CODE + 2):
        walk.report(error("memmap.block-out-of-range", f"{n}"), 10)
    walk.finish()
    assert walk.findings[-1].message == (
        "... and 20 more memmap.block-out-of-range in this map"
    )
    assert walk.findings[-1].severity is Severity.ERROR


def test_finding_counts_per_code() -> None:
    """At most MAX_FINDINGS_PER_CODE of a code, then one "... and N more"."""
    mem, root = radix_map([(0x5000, 0)])
    level1 = path(mem, root, k_encode(0x5000, 0))[4]
    for slot in range(20, 40):
        mem.set_u64(level1 + slot * 8, 0x100008)  # 20 unaligned pointers
    _, walk = walk_radix(mem, root)
    unaligned = [f for f in walk.findings if f.code == "page.bad-pointer"]
    assert len(unaligned) == MAX_FINDINGS_PER_CODE + 1
    assert unaligned[-1].message == "... and 12 more page.bad-pointer in this map"


def test_block_out_of_range() -> None:
    mem, root = radix_map([(0x5000, 0), (0x7FF000, 0), (0x800000, 0), (0x900000, 2)])
    blocks, walk = walk_radix(mem, root, limits=MapLimits(max_phys=0x800000))
    assert blocks == [(0x5000, 0), (0x7FF000, 0)]
    assert walk.out_of_range_blocks == 2 and not walk.complete
    assert "memmap.block-out-of-range" in codes(walk)
    cmem, first = chunk_map([(0x5000, 0), (0x7FF000, 0), (0x800000, 0), (0x900000, 2)])
    blocks, walk = walk_chunks(cmem, first, limits=MapLimits(max_phys=0x800000))
    assert blocks == [(0x5000, 0), (0x7FF000, 0)] and walk.out_of_range_blocks == 2


def test_full_leaves_out_of_range_are_counted_at_once() -> None:
    """Regression: every set bit past max_phys took a step and a finding, so
    wild full leaves were not bounded by max_blocks (60 leaves: 2.5 s)."""
    mem, root = radix_map([(1 << 40, 0)])
    level1 = path(mem, root, k_encode(1 << 40, 0))[4]
    for slot in range(60):
        leaf = mem.get_zeroed_page()
        mem.pages[leaf][:] = b"\xff" * PAGE
        mem.set_u64(level1 + slot * 8, leaf)
    start = time.monotonic()
    blocks, walk = walk_radix(
        mem, root, limits=MapLimits(max_phys=1 << 30, max_blocks=10)
    )
    assert time.monotonic() - start < 0.5
    assert blocks == [] and walk.out_of_range_blocks == 60 * 32768
    oor = [f for f in walk.findings if f.code == "memmap.block-out-of-range"]
    assert len(oor) == MAX_FINDINGS_PER_CODE + 1
    assert oor[-1].message.startswith(f"... and {52 * 32768} more")


def test_chunk_phys_start_past_2_64_is_out_of_range() -> None:
    """deserialize_bitmap's u64 sum would wrap to a low address; no kernel
    wrote such an entry, so its blocks are out of range, not at 0."""
    mem, first = chunk_map([(0x5000, 0)])
    mem.set_u64(first + 16, (1 << 64) - 0x2000)  # phys_start near 2^64
    blocks, walk = walk_chunks(mem, first, limits=MapLimits(max_phys=1 << 64))
    assert blocks == [] and walk.out_of_range_blocks == 1
    assert "memmap.block-out-of-range" in codes(walk)


def test_max_blocks_on_a_full_leaf() -> None:
    mem, root = radix_map([(0, 0)])
    leaf = leaf_of(mem, root, k_encode(0, 0))
    mem.pages[leaf][:] = b"\xff" * PAGE  # 32768 order-0 pages
    blocks, walk = walk_radix(mem, root, limits=MapLimits(max_blocks=1000))
    assert len(blocks) == 1000 and blocks[-1] == (999 * PAGE, 0)
    assert "memmap.too-many-blocks" in codes(walk) and not walk.complete
    blocks, walk = walk_radix(mem, root)
    assert len(blocks) == 32768 and walk.complete
    cmem, first = chunk_map([(0, 0)])
    cmem.pages[cmem.u64(first + 24)][:] = b"\xff" * PAGE
    blocks, walk = walk_chunks(cmem, first, limits=MapLimits(max_blocks=1000))
    assert len(blocks) == 1000 and "memmap.too-many-blocks" in codes(walk)


def test_max_nodes() -> None:
    mem, root = radix_map([(i << 30, 0) for i in range(10)])
    blocks, walk = walk_radix(mem, root, limits=MapLimits(max_nodes=8))
    assert walk.nodes_read == 8 and not walk.complete
    assert "page.too-many" in codes(walk)
    cmem, first = chunk_map([(i << 30, 0) for i in range(10)])
    blocks, walk = walk_chunks(cmem, first, limits=MapLimits(max_nodes=4))
    assert walk.nodes_read == 4 and blocks == [(i << 30, 0) for i in range(3)]
    assert "page.too-many" in codes(walk)


@pytest.mark.parametrize("depth", [0, 1, 7, 40])
def test_bad_depth(depth: int) -> None:
    mem, root = radix_map([(0x5000, 0)])
    blocks, walk = walk_radix(mem, root, depth=depth)
    assert blocks == [] and "memmap.bad-depth" in codes(walk) and not walk.complete
    assert walk.nodes_read == 0


def test_chunk_list_cycles() -> None:
    mem, first = chunk_map([(0x5000, 0), (0x200000, 9), (0x40000000, 18)])
    second = mem.u64(first)
    third = mem.u64(second)
    mem.set_u64(third, first)  # the list loops
    blocks, walk = walk_chunks(mem, first)
    assert blocks == [(0x5000, 0), (0x200000, 9), (0x40000000, 18)]
    assert "page.cycle" in codes(walk) and not walk.complete
    mem.set_u64(first, first)  # a chunk pointing at itself
    blocks, walk = walk_chunks(mem, first)
    assert blocks == [(0x5000, 0)] and "page.cycle" in codes(walk)
    # two entries sharing one bitmap
    mem, first = chunk_map([(0, 0), (1 << 30, 0)])
    mem.set_u64(first + 40, mem.u64(first + 24))
    blocks, walk = walk_chunks(mem, first)
    assert blocks == [(0, 0)] and "page.cycle" in codes(walk)


def test_chunk_header_guards() -> None:
    mem, first = chunk_map([(0x5000, 0), (0x200000, 9)])
    second = mem.u64(first)
    mem.set_u32(first + 12, 256)  # num_elms past 255
    mem.set_u32(second + 8, 99)  # order past 52
    blocks, walk = walk_chunks(mem, first)
    assert blocks == [(0x5000, 0)] and not walk.complete
    assert {"memmap.chunk-bad-count", "memmap.chunk-bad-order",
            "memmap.pointer-null"} <= codes(walk)  # fmt: skip
    assert walk.nodes_read == 3  # the 254 empty entries are NULL, not read
    mem.set_u32(first + 12, 0xFFFFFFFF)
    blocks, walk = walk_chunks(mem, first)
    assert blocks == [(0x5000, 0)] and "memmap.chunk-bad-count" in codes(walk)


def test_chunk_pointer_guards() -> None:
    mem, first = chunk_map([(0x5000, 0), (1 << 30, 0), (1 << 31, 0)],
                           CHUNK_BITMAP_BITS_SMALL)  # fmt: skip
    mem.set_u64(first + 24, mem.u64(first + 24) + 256)  # not 512-aligned
    mem.set_u64(first + 40, TOP)  # out of range
    mem.set_u64(first, first + 8)  # unaligned next
    blocks, walk = walk_chunks(mem, first, bitmap_bits=CHUNK_BITMAP_BITS_SMALL)
    assert blocks == [(1 << 31, 0)] and not walk.complete
    bad = [f.message for f in walk.findings if f.code == "page.bad-pointer"]
    assert any("not 4096-byte aligned" in m for m in bad)
    assert any("past the end of physical memory" in m for m in bad)
    _, walk = walk_chunks(mem, first, bitmap_bits=123)
    assert "memmap.bad-bitmap-size" in codes(walk) and walk.nodes_read == 0


# --------------------------------------------------------------------------
# Round trip property
# --------------------------------------------------------------------------


@st.composite
def block_sets(draw: st.DrawFn) -> set[Block]:
    def aligned(order: int) -> st.SearchStrategy[Block]:
        size, count = PAGE << order, TOP >> (12 + order)  # blocks below 2^52
        near_top = st.integers(max(0, count - 64), count - 1)
        near_zero = st.integers(0, min(64, count - 1))
        anywhere = st.integers(0, count - 1)
        return st.one_of(near_zero, near_top, anywhere).map(lambda n: (n * size, order))

    orders = st.one_of(st.integers(0, 11), st.integers(12, 40))
    return draw(st.sets(orders.flatmap(aligned), max_size=40))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    block_sets(),
    st.sampled_from(["little", "big"]),
    st.sampled_from([CHUNK_BITMAP_BITS_SMALL, CHUNK_BITMAP_BITS_PAGE]),
)
def test_round_trip_property(blocks: set[Block], byteorder: str, bits: int) -> None:
    """Any set of aligned blocks below 2^52 comes back exactly, from both
    formats, in the kernel's walk order, whole and without findings."""
    mem, root = radix_map(sorted(blocks), byteorder)
    found, walk = walk_radix(mem, root)
    assert found == sorted(blocks, key=lambda b: k_encode(*b))
    assert walk.complete and walk.findings == []
    mem, first = chunk_map(sorted(blocks), bits, byteorder)
    found, walk = walk_chunks(mem, first, bitmap_bits=bits)
    assert found == sorted(blocks, key=lambda b: (b[1], b[0]))
    assert walk.complete
    assert codes(walk) == (set() if blocks else {"memmap.empty"})
    s = summarize_memory_map(
        mem.read_phys, first, byteorder, map_format="chunks", bitmap_bits=bits
    )
    assert s.blocks == len(blocks)
    assert s.pages == sum(1 << o for _, o in blocks)
    assert sum(r.size for r in s.ranges) <= s.bytes
    assert DEFAULT_MAX_PHYS == TOP
