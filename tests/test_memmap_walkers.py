"""Preserved-memory map walkers on maps built the way the kernel builds them."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kho_drgn.memmap import (
    CHUNK_BITMAP_BITS_PAGE,
    CHUNK_BITMAP_BITS_SMALL,
    MapLimits,
    MapWalk,
    PhysReadError,
    PreservedBlock,
    chunk_bitmap_bits_for_release,
    for_each_chunk_block,
    for_each_radix_block,
    radix_bitmap_index,
    radix_decode_key,
    radix_encode_key,
    radix_table_index,
    summarize_memory_map,
)

PAGE = 4096


class Memory:
    """Physical pages for the walkers, allocated like the kernel's get_zeroed_page."""

    def __init__(self, byteorder: str = "little", base: int = 0x100000) -> None:
        self.pages: dict[int, bytearray] = {}
        self.next = base
        self.order = "<" if byteorder == "little" else ">"

    def alloc(self) -> int:
        address = self.next
        self.next += PAGE
        self.pages[address] = bytearray(PAGE)
        return address

    def word(self, address: int, index: int) -> int:
        return int(
            struct.unpack_from(self.order + "Q", self.pages[address], index * 8)[0]
        )

    def set_word(self, address: int, index: int, value: int) -> None:
        struct.pack_into(self.order + "Q", self.pages[address], index * 8, value)

    def read(self, address: int, size: int) -> bytes:
        base = address & ~(PAGE - 1)
        if base not in self.pages:
            raise PhysReadError(f"no page at {address:#x}")
        return bytes(self.pages[base][address - base : address - base + size])


def radix_map(blocks: Iterable[tuple[int, int]], memory: Memory) -> int:
    """kho_radix_add_page: walk levels 5..1 allocating tables, set the leaf bit."""
    root = memory.alloc()
    for phys, order in blocks:
        key = radix_encode_key(phys, order)
        node = root
        for level in range(5, 0, -1):
            index = radix_table_index(key, level)
            child = memory.word(node, index)
            if not child:
                child = memory.alloc()
                memory.set_word(node, index, child)
            node = child
        bit = radix_bitmap_index(key)
        word = memory.word(node, bit // 64)
        memory.set_word(node, bit // 64, word | (1 << (bit % 64)))
    return root


def chunk_map(blocks: Iterable[tuple[int, int]], memory: Memory, bits: int) -> int:
    """kho_mem_serialize: one chunk per order, one bitmap per PRESERVE_BITS run."""
    by_order: dict[int, dict[int, set[int]]] = {}
    for phys, order in blocks:
        index = phys >> (12 + order)
        by_order.setdefault(order, {}).setdefault(index // bits, set()).add(
            index % bits
        )
    first = previous = 0
    for order, runs in sorted(by_order.items()):
        chunk = memory.alloc()
        if previous:
            memory.set_word(previous, 0, chunk)
        else:
            first = chunk
        previous = chunk
        struct.pack_into(memory.order + "II", memory.pages[chunk], 8, order, len(runs))
        for n, (run, set_bits) in enumerate(sorted(runs.items())):
            bitmap = memory.alloc()  # a page even when the kernel kzallocs 512 B
            for bit in set_bits:
                word = memory.word(bitmap, bit // 64)
                memory.set_word(bitmap, bit // 64, word | (1 << (bit % 64)))
            start = (run * bits) << (order + 12)
            memory.set_word(chunk, 2 + 2 * n, start)
            memory.set_word(chunk, 3 + 2 * n, bitmap)
    return first


BLOCKS = [(0x0, 0), (0x1000, 0), (0x400000, 9), (0x1F66C000, 2), (0x1F680000, 7),
          ((1 << 52) - 0x1000, 0), (0x40000000, 18)]  # fmt: skip


def walk_all(
    walker: Callable[..., Iterable[PreservedBlock]], *args: object, **kwargs: object
) -> tuple[set[tuple[int, int]], MapWalk]:
    walk = MapWalk()
    found = {(b.phys, b.order) for b in walker(*args, walk=walk, **kwargs)}
    return found, walk


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_radix_round_trip(byteorder: str) -> None:
    memory = Memory(byteorder)
    root = radix_map(BLOCKS, memory)
    found, walk = walk_all(for_each_radix_block, memory.read, root, byteorder)
    assert found == set(BLOCKS)
    assert walk.complete and not walk.findings


def test_radix_key_codec() -> None:
    for phys, order in BLOCKS:
        key = radix_encode_key(phys, order)
        assert radix_decode_key(key) == (phys, order)
    assert radix_decode_key(0) is None
    assert radix_decode_key(1 << 53) is None  # order bit above the order-0 bit


@pytest.mark.parametrize("bits", [CHUNK_BITMAP_BITS_SMALL, CHUNK_BITMAP_BITS_PAGE])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_chunk_round_trip(bits: int, byteorder: str) -> None:
    memory = Memory(byteorder)
    blocks = [b for b in BLOCKS if b[0] < 1 << 46]
    first = chunk_map(blocks, memory, bits)
    found, walk = walk_all(
        for_each_chunk_block, memory.read, first, byteorder, bitmap_bits=bits
    )
    assert found == set(blocks)
    assert walk.complete and not walk.findings


def test_chunk_bitmap_size_by_release() -> None:
    assert chunk_bitmap_bits_for_release("6.16.3") == CHUNK_BITMAP_BITS_SMALL
    assert chunk_bitmap_bits_for_release("6.17.8") == CHUNK_BITMAP_BITS_SMALL
    assert chunk_bitmap_bits_for_release("6.17.9") == CHUNK_BITMAP_BITS_PAGE
    assert chunk_bitmap_bits_for_release("7.0.1-foo") == CHUNK_BITMAP_BITS_PAGE
    assert chunk_bitmap_bits_for_release(None) == CHUNK_BITMAP_BITS_PAGE


def test_summary_counts_and_ranges() -> None:
    memory = Memory()
    blocks = [(0x10000, 0), (0x11000, 0), (0x12000, 1), (0x200000, 9)]
    root = radix_map(blocks, memory)
    summary = summarize_memory_map(memory.read, root)
    assert summary.blocks_by_order == {0: 2, 1: 1, 9: 1}
    assert summary.pages == 2 + 2 + 512 and summary.bytes == summary.pages * PAGE
    assert [(r.start, r.size) for r in summary.ranges] == [
        (0x10000, 0x4000), (0x200000, 0x200000),
    ]  # fmt: skip
    assert summary.complete and summary.overlaps == 0
    overlap = summarize_memory_map(
        memory.read, radix_map([(0, 9), (0x1000, 0)], memory)
    )
    assert overlap.overlaps == 1
    assert "memmap.overlap" in {f.code for f in overlap.findings}
    few = summarize_memory_map(memory.read, root, max_ranges=1)
    assert few.ranges_truncated and few.blocks == 4
    assert "memmap.too-many-ranges" in {f.code for f in few.findings}


def codes(walk: MapWalk) -> set[str]:
    return {f.code for f in walk.findings}


def test_radix_guards() -> None:
    memory = Memory()
    root = radix_map([(0x5000, 0)], memory)
    level4 = memory.word(root, next(i for i in range(512) if memory.word(root, i)))
    # a cycle: a level-4 slot pointing back at the root
    memory.set_word(level4, 7, root)
    found, walk = walk_all(for_each_radix_block, memory.read, root)
    assert (0x5000, 0) in found
    assert "page.cycle" in codes(walk) and not walk.complete
    # out of range, unaligned and missing children
    memory.set_word(level4, 7, 1 << 60)
    memory.set_word(level4, 8, 0x100010)
    memory.set_word(level4, 9, 0x7000000)
    _, walk = walk_all(for_each_radix_block, memory.read, root)
    assert {"page.bad-pointer", "memory.missing"} <= codes(walk)
    # a root that is not a map (overwritten with text), an empty map, bad depth
    memory.pages[root][:] = (b"not a radix node " * 300)[:PAGE]
    found, walk = walk_all(for_each_radix_block, memory.read, root)
    assert not found and "memmap.not-a-map" in codes(walk)
    _, walk = walk_all(for_each_radix_block, memory.read, 0)
    assert codes(walk) == {"memmap.empty"} and walk.complete
    _, walk = walk_all(for_each_radix_block, memory.read, root, depth=40)
    assert "memmap.bad-depth" in codes(walk)


def test_radix_limits() -> None:
    """A leaf with every bit set is 32768 blocks: the block limit stops it."""
    memory = Memory()
    root = radix_map([(0, 0)], memory)
    node = root
    for level in range(5, 0, -1):
        node = memory.word(node, radix_table_index(radix_encode_key(0, 0), level))
    memory.pages[node][:] = b"\xff" * PAGE
    blocks = list(
        for_each_radix_block(memory.read, root, limits=MapLimits(max_blocks=100))
    )
    assert len(blocks) == 100
    walk = MapWalk()
    list(for_each_radix_block(memory.read, root, limits=MapLimits(max_nodes=3),
                              walk=walk))  # fmt: skip
    assert "page.too-many" in codes(walk)
    walk = MapWalk()
    list(for_each_radix_block(memory.read, root, limits=MapLimits(max_phys=1 << 20),
                              walk=walk))  # fmt: skip
    assert {"page.bad-pointer"} & codes(walk) or walk.out_of_range_blocks


def test_chunk_guards() -> None:
    memory = Memory()
    first = chunk_map([(0x5000, 0), (0x200000, 9)], memory, CHUNK_BITMAP_BITS_PAGE)
    # the list loops back on itself
    second = memory.word(first, 0)
    memory.set_word(second, 0, first)
    found, walk = walk_all(for_each_chunk_block, memory.read, first)
    assert found == {(0x5000, 0), (0x200000, 9)}
    assert "page.cycle" in codes(walk)
    # a huge count, a huge order, a NULL bitmap
    memory.set_word(second, 0, 0)
    struct.pack_into("<II", memory.pages[first], 8, 0, 1 << 30)
    struct.pack_into("<II", memory.pages[second], 8, 99, 1)
    _, walk = walk_all(for_each_chunk_block, memory.read, first)
    assert {"memmap.chunk-bad-count", "memmap.chunk-bad-order",
            "memmap.pointer-null"} <= codes(walk)  # fmt: skip
    _, walk = walk_all(for_each_chunk_block, memory.read, first, bitmap_bits=123)
    assert "memmap.bad-bitmap-size" in codes(walk)
    _, walk = walk_all(for_each_chunk_block, memory.read, 0x9990000)
    assert "memory.missing" in codes(walk)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    st.sets(
        st.tuples(st.integers(0, (1 << 40) - 1), st.integers(0, 10)).map(
            lambda t: ((t[0] >> (12 + t[1])) << (12 + t[1]), t[1])
        ),
        max_size=40,
    )
)
def test_round_trip_property(blocks: set[tuple[int, int]]) -> None:
    """Any set of aligned blocks comes back exactly, from either format."""
    memory = Memory()
    found, walk = walk_all(for_each_radix_block, memory.read, radix_map(blocks, memory))
    assert found == blocks and walk.complete
    if blocks:
        first = chunk_map(blocks, memory, CHUNK_BITMAP_BITS_PAGE)
        found, walk = walk_all(for_each_chunk_block, memory.read, first)
        assert found == blocks and walk.complete
