"""Walking KHO's preserved-memory map: which physical blocks are handed over.

Pure: target memory comes through ``read_phys(address, size) -> bytes``, so
the walkers run on drgn (``prog.read(address, size, True)``) and on synthetic
pages in tests alike.  Two formats exist (the root FDT's ``compatible`` says
which, see ``kho_drgn.abi.KhoAbi.memory_map_format``):

* ``"radix"`` (kho-v2..v4, Linux 7.1+): a 6-level radix tree of page-sized
  nodes, include/linux/kho/abi/kexec_handover.h ("KHO persistent memory
  tracker"); encode/decode in kernel/liveupdate/kexec_handover.c
  (``kho_radix_encode_key``/``kho_radix_decode_key``/``__kho_radix_walk_tree``).
* ``"chunks"`` (kho-v1, Linux 6.16..7.0): a linked list of
  ``struct khoser_mem_chunk`` pages, each pointing at per-order bitmaps,
  kernel/kexec_handover.c (``kho_mem_serialize``/``kho_mem_deserialize``).

Every guard (bad pointer, cycle, missing page, limits) becomes a finding and
the walk skips or stops: it never raises on bad data and never runs unbounded.
Map pages are read through :class:`kho_drgn.pages.PageReader`, the reader every
structure in physical memory shares (``page.*`` findings, ``max_nodes`` its
page budget); the map's own guards are ``memmap.*``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from kho_drgn.findings import Finding, Severity, error, info, warning
from kho_drgn.pages import DEFAULT_MISSING, MAX_PHYS, PageReader, ReadPhys

# Re-exported: walkers' callers raise it from their read_phys.
from kho_drgn.pages import PhysReadError as PhysReadError

ByteOrder = Literal["little", "big"]
MapFormat = Literal["radix", "chunks"]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
_U64_MASK = (1 << 64) - 1
#: No block can end past 2^64 (a 64-bit phys_addr_t).
_PHYS_LIMIT = 1 << 64

# Radix tree (kho-v2..v4): enum kho_radix_consts in
# include/linux/kho/abi/kexec_handover.h, for 4 KiB pages.  Checked against
# torvalds/linux include/linux/kho/abi/kexec_handover.h@3f2ad900 and the 7.1+
# kernel/liveupdate/kexec_handover.c: every table entry is virt_to_phys() of
# a get_zeroed_page() node (the root: kzalloc(PAGE_SIZE), page-aligned);
# __kho_radix_walk_tree visits slots 0..511 depth first from level 5 with
# key = start | (i << ((level - 1) * 9 + 15)), and the leaf calls
# kho_radix_decode_key(key | bit) for each set bit: walk order = key order.
# The kernel checks nothing while walking (no cycle, range or order check).
#: ``KHO_ORDER_0_LOG2`` = 64 - PAGE_SHIFT: the order bit of an order-0 key.
RADIX_ORDER_0_LOG2 = 64 - PAGE_SHIFT
#: ``KHO_TABLE_SIZE_LOG2``: 512 u64 physical addresses per inner node.
RADIX_TABLE_SIZE_LOG2 = 9
#: ``KHO_BITMAP_SIZE_LOG2``: 32768 bits per leaf.
RADIX_BITMAP_SIZE_LOG2 = PAGE_SHIFT + 3
#: ``KHO_TREE_MAX_DEPTH``: five table levels (5..1) and the leaf level 0.
RADIX_TREE_DEPTH = 6
#: A deeper tree would index key bits past bit 63; refuse it.
RADIX_MAX_DEPTH = (64 - RADIX_BITMAP_SIZE_LOG2) // RADIX_TABLE_SIZE_LOG2 + 1
#: The largest order a key can encode (order bit at bit 0).
RADIX_MAX_ORDER = RADIX_ORDER_0_LOG2

# Chunk lists (kho-v1): kernel/kexec_handover.c of 6.16 (torvalds/linux
# kernel/kexec_handover.c@00c010e130e5):
#   struct khoser_mem_chunk_hdr { u64 next (phys); unsigned int order;
#                                 unsigned int num_elms; };          /* 16 B */
#   struct khoser_mem_bitmap_ptr { phys_addr_t phys_start;
#                                  u64 bitmap (phys); };            /* 16 B */
#   struct khoser_mem_chunk { hdr; bitmaps[(PAGE_SIZE - 16) / 16]; } /* page */
#   phys_start = (xa_index * PRESERVE_BITS) << (order + PAGE_SHIFT)
#   bit b preserves [phys_start + (b << (order + PAGE_SHIFT)), + PAGE_SIZE << order)
# Checked against 6.16 (@00c010e1: chunks kzalloc(PAGE_SIZE), bitmaps
# kzalloc(512), so 512-byte aligned) and linux-mm@04b9e515 (6.19/7.0: both
# get_zeroed_page()): ``next`` and ``bitmap`` are KHOSER_STORE_PTR, i.e.
# virt_to_phys(); kho_mem_deserialize reads num_elms entries unchecked.
CHUNK_HEADER_SIZE = 16
CHUNK_ENTRY_SIZE = 16
CHUNK_MAX_ENTRIES = (PAGE_SIZE - CHUNK_HEADER_SIZE) // CHUNK_ENTRY_SIZE
#: ``PRESERVE_BITS`` = 512 * 8 (a 512-byte kzalloc'd bitmap) in 6.16..6.17.8.
CHUNK_BITMAP_BITS_SMALL = 512 * 8
#: ``PRESERVE_BITS`` = PAGE_SIZE * 8 from "kho: increase metadata bitmap size
#: to PAGE_SIZE" (6.18, backported to 6.17.9); the compatible stayed kho-v1.
CHUNK_BITMAP_BITS_PAGE = PAGE_SIZE * 8
#: Orders past this would shift a physical address out of 64 bits.
CHUNK_MAX_ORDER = 64 - PAGE_SHIFT

#: Physical addresses fit in 52 bits (MAX_PHYSMEM_BITS on x86_64 and arm64).
DEFAULT_MAX_PHYS = MAX_PHYS
#: Map pages read at most (256 MiB of map): past this the map is damage.
DEFAULT_MAX_NODES = 1 << 16
#: Blocks yielded at most by one walk.
DEFAULT_MAX_BLOCKS = 1 << 20
#: Merged ranges kept at most by ``summarize_memory_map``.
DEFAULT_MAX_RANGES = 1 << 16
#: Finding code: a map that walks to nothing though blobs were handed over.
EMPTY_WITH_BLOBS = "memmap.empty-with-blobs"
#: Findings kept per code; the rest are counted in one closing finding.
MAX_FINDINGS_PER_CODE = 8


class PreservedBlock(NamedTuple):
    """One preserved block: ``PAGE_SIZE << order`` bytes at ``phys``."""

    phys: int
    order: int

    @property
    def size(self) -> int:
        return PAGE_SIZE << self.order

    @property
    def end(self) -> int:
        return self.phys + self.size


class PhysRange(NamedTuple):
    """A physical range ``[start, end)`` of merged preserved blocks."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class MapLimits(NamedTuple):
    """Bounds for walking an untrusted map."""

    #: Exclusive bound for node pages and blocks (e.g. the target's memory
    #: end); anything at or past it is reported and skipped.
    max_phys: int = DEFAULT_MAX_PHYS
    #: Map pages (radix nodes, chunks, bitmaps) read before giving up.
    max_nodes: int = DEFAULT_MAX_NODES
    #: Blocks yielded before giving up.
    max_blocks: int = DEFAULT_MAX_BLOCKS


@dataclass(eq=False)
class MapWalk:
    """How one walk went: findings, pages read, and whether it was whole.

    Pass one to a ``for_each_*`` walker to get its findings; a walker
    without one keeps them to itself.
    """

    where: str = ""
    nodes_read: int = 0
    blocks: int = 0
    #: Leaf keys, and table slots, that encode no valid order.
    invalid_keys: int = 0
    out_of_range_blocks: int = 0
    #: False when a guard stopped the walk or skipped part of the map.
    complete: bool = True
    findings: list[Finding] = field(default_factory=list)
    #: code -> [findings reported, items they stand for, items in kept findings]
    _counts: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _finished: bool = field(default=False, repr=False)

    def report(self, finding: Finding, count: int = 1) -> None:
        """Record a finding standing for ``count`` items (keys, blocks),
        keeping the first few findings of each code."""
        counts = self._counts.setdefault(finding.code, [0, 0, 0])
        counts[1] += count
        if counts[0] < MAX_FINDINGS_PER_CODE:
            counts[2] += count
            self.findings.append(finding)
        counts[0] += 1

    def finish(self) -> None:
        """Close the walk: one finding per code for what was not kept."""
        if self._finished:
            return
        self._finished = True
        severities = {f.code: f.severity for f in reversed(self.findings)}
        # Compare items with items: one finding may stand for many keys or
        # blocks (fixed: findings were compared with items, so one finding
        # for 5 keys got "... and 4 more"; latent until bitmap_blocks).
        for code, (_, total, n) in self._counts.items():
            severity = severities.get(code, Severity.WARNING)
            if total > n:
                self.findings.append(
                    Finding(
                        code,
                        severity,
                        f"... and {total - n} more {code} in this map",
                        self.where,
                    )
                )


class _Reader:
    """Reads map pages once each (through the shared :class:`PageReader`:
    pointer, cycle and page-budget guards) and counts blocks."""

    def __init__(
        self,
        read_phys: ReadPhys,
        limits: MapLimits,
        missing: tuple[type[BaseException], ...],
        walk: MapWalk,
    ) -> None:
        self.limits = limits
        self.walk = walk
        self.pages = PageReader(
            read_phys,
            self._page_finding,
            "preserved-memory map",
            walk.where,
            max_phys=limits.max_phys,
            max_pages=limits.max_nodes,
            missing=missing,
        )
        self._stopped = False

    def _page_finding(self, finding: Finding) -> None:
        """A page the walk cannot use: reported, and the map is not whole."""
        self.walk.report(finding)
        self.walk.complete = False

    @property
    def stopped(self) -> bool:
        return self._stopped or self.pages.exhausted

    def stop(self, finding: Finding) -> None:
        self.walk.report(finding)
        self.walk.complete = False
        self._stopped = True

    def node(self, address: int, size: int, what: str) -> bytes | None:
        """A map page at ``address`` (``size`` bytes, ``size``-aligned), or
        None with a finding when it is unusable."""
        before = self.pages.pages_read
        data = self.pages.read(address, size, what, align=size)
        self.walk.nodes_read += self.pages.pages_read - before
        return data

    @property
    def phys_end(self) -> int:
        """Where blocks must end: ``max_phys``, and never past 2^64."""
        return min(self.limits.max_phys, _PHYS_LIMIT)

    def out_of_range(self, count: int, phys: int, order: int) -> None:
        """``count`` blocks of ``order``, the first at ``phys``, end past
        the end of physical memory."""
        walk = self.walk
        walk.out_of_range_blocks += count
        walk.complete = False
        what = (
            f"preserved block {phys:#x} (order {order}) ends"
            if count == 1
            else f"{count} preserved blocks of order {order} from {phys:#x} end"
        )
        walk.report(
            error(
                "memmap.block-out-of-range",
                f"{what} past the end of physical memory ({self.phys_end:#x})",
                walk.where,
            ),
            count,
        )

    def block(self, phys: int, order: int) -> PreservedBlock | None:
        """A decoded block, or None (with a finding) if out of range/too many."""
        if phys + (PAGE_SIZE << order) > self.phys_end:
            self.out_of_range(1, phys, order)
            return None
        if not self.take_block():
            return None
        return PreservedBlock(phys, order)

    def take_block(self) -> bool:
        """Count one more block; False (and stop) past ``max_blocks``."""
        walk = self.walk
        if walk.blocks >= self.limits.max_blocks:
            self.stop(
                warning(
                    "memmap.too-many-blocks",
                    f"the map holds more than {self.limits.max_blocks} blocks; "
                    "stopped walking (raise the limit to see them all)",
                    walk.where,
                )
            )
            return False
        walk.blocks += 1
        return True

    def bitmap_blocks(
        self, bitmap: bytes, byteorder: ByteOrder, base: int, order: int
    ) -> Iterator[PreservedBlock]:
        """The blocks of a bitmap whose bit ``b`` is the order-``order`` block
        at ``base + (b << (PAGE_SHIFT + order))``: a radix leaf under one key
        prefix, or a kho-v1 chunk entry.

        The addresses grow with ``b``, so every set bit past the last block
        that fits below ``max_phys`` is counted out of range in one go.
        (Fixed: the walk used to take one step and one finding per such bit,
        so wild leaves or bitmaps, up to 32768 bits each, were not bounded by
        ``max_blocks``: 60 full leaves past ``max_phys`` took 2.5 s, the
        default ``max_nodes`` of them hours.)

        A block past 2^64 is out of range too: the kernel's ``unsigned long``
        arithmetic (``deserialize_bitmap``: ``phys_start + (bit << (order +
        PAGE_SHIFT))``) would wrap it to a low address, but no kernel wrote
        such an entry, so it is damage, not a block at that low address.
        """
        step = PAGE_SHIFT + order
        size = PAGE_SIZE << order
        end = self.phys_end
        fit = 0 if base + size > end else (end - size - base >> step) + 1
        fit = min(fit, len(bitmap) * 8)  # bits 0..fit-1 are blocks in range
        value = _bitmap_int(bitmap, byteorder)
        beyond = value >> fit
        if beyond:
            first = fit + (beyond & -beyond).bit_length() - 1
            self.out_of_range(_popcount_int(beyond), base + (first << step), order)
        if not value & ((1 << fit) - 1):
            return
        for bit in for_each_set_bit(bitmap, byteorder):
            if bit >= fit or not self.take_block():
                return
            yield PreservedBlock(base + (bit << step), order)


def _words(data: bytes, byteorder: ByteOrder) -> tuple[int, ...]:
    """The page as u64 (``unsigned long``) words in the target's byte order."""
    fmt = ("<" if byteorder == "little" else ">") + f"{len(data) // 8}Q"
    return struct.unpack(fmt, data[: len(data) // 8 * 8])


def for_each_set_bit(bitmap: bytes, byteorder: ByteOrder) -> Iterator[int]:
    """Set bits of a kernel bitmap (``unsigned long`` words), lowest first."""
    for index, word in enumerate(_words(bitmap, byteorder)):
        base = index * 64
        while word:
            low = word & -word
            yield base + low.bit_length() - 1
            word ^= low


def _popcount(data: bytes) -> int:
    return bin(int.from_bytes(data, "little")).count("1")


def _popcount_int(value: int) -> int:
    return bin(value).count("1")


def _bitmap_int(bitmap: bytes, byteorder: ByteOrder) -> int:
    """A kernel bitmap as one integer: bit ``b`` of the bitmap is bit ``b``."""
    if byteorder == "little":
        return int.from_bytes(bitmap, "little")
    return int.from_bytes(
        b"".join(bitmap[i : i + 8][::-1] for i in range(0, len(bitmap) // 8 * 8, 8)),
        "little",
    )


def radix_encode_key(phys: int, order: int) -> int:
    """``kho_radix_encode_key``: the order bit, then phys >> (12 + order)."""
    return (1 << (RADIX_ORDER_0_LOG2 - order)) | (phys >> (PAGE_SHIFT + order))


def radix_decode_key(key: int) -> tuple[int, int] | None:
    """``kho_radix_decode_key``: (phys, order), or None when no order fits.

    order = 53 - fls64(key); a key of 0 (order 53) or with a bit above the
    order-0 bit (order < 0) is not one the kernel can write.
    """
    order = RADIX_ORDER_0_LOG2 + 1 - key.bit_length()
    if key <= 0 or not 0 <= order <= RADIX_MAX_ORDER:
        return None
    return (key << (PAGE_SHIFT + order)) & _U64_MASK, order


def radix_table_index(key: int, level: int) -> int:
    """``kho_radix_get_table_index``: the slot of ``key`` at level 1..5."""
    shift = (level - 1) * RADIX_TABLE_SIZE_LOG2 + RADIX_BITMAP_SIZE_LOG2
    return (key >> shift) & ((1 << RADIX_TABLE_SIZE_LOG2) - 1)


def radix_bitmap_index(key: int) -> int:
    """``kho_radix_get_bitmap_index``: the bit of ``key`` in its leaf."""
    return key & ((1 << RADIX_BITMAP_SIZE_LOG2) - 1)


def for_each_radix_block(
    read_phys: ReadPhys,
    root_phys: int,
    byteorder: ByteOrder = "little",
    *,
    limits: MapLimits | None = None,
    missing: tuple[type[BaseException], ...] = DEFAULT_MISSING,
    walk: MapWalk | None = None,
    depth: int = RADIX_TREE_DEPTH,
) -> Iterator[PreservedBlock]:
    """Preserved blocks of a radix-tree map (kho-v2..v4), in key order.

    Walks like ``__kho_radix_walk_tree``: inner nodes are 512 u64 physical
    addresses (0 = empty), leaves 32768-bit bitmaps; a leaf bit ``i`` under
    key prefix ``p`` is the key ``p | i``.  Key order is by descending order,
    then ascending address.  Problems go to ``walk.findings``.
    """
    walk = walk if walk is not None else MapWalk()
    reader = _Reader(read_phys, limits or MapLimits(), missing, walk)
    try:
        if not root_phys:
            walk.report(
                info(
                    "memmap.empty", "the preserved-memory map is empty (0)", walk.where
                )
            )
            return
        if not 2 <= depth <= RADIX_MAX_DEPTH:
            reader.stop(
                error(
                    "memmap.bad-depth",
                    f"radix tree depth {depth} is impossible (2..{RADIX_MAX_DEPTH})",
                    walk.where,
                )
            )
            return
        stack: list[tuple[int, int, int]] = [(root_phys, depth - 1, 0)]
        while stack and not reader.stopped:
            address, level, prefix = stack.pop()
            what = "radix leaf" if level == 0 else f"radix level-{level} node"
            page = reader.node(address, PAGE_SIZE, what)
            if page is None:
                continue
            if level == 0:
                yield from _radix_leaf(page, prefix, byteorder, reader)
                continue
            is_root = level == depth - 1
            children = _radix_children(page, level, prefix, byteorder, reader)
            if children is None:
                what = "root" if is_root else f"level-{level} node at {address:#x}"
                finding = error(
                    "memmap.not-a-map",
                    f"the radix {what} does not look like one: none of its "
                    "entries is a usable pointer (overwritten or reused page?)",
                    walk.where,
                )
                if is_root:
                    reader.stop(finding)
                    return
                walk.report(finding)
                walk.complete = False
                continue
            stack.extend(reversed(children))
    finally:
        walk.finish()


def _radix_children(
    page: bytes, level: int, prefix: int, byteorder: ByteOrder, reader: _Reader
) -> list[tuple[int, int, int]] | None:
    """The non-empty slots of an inner node as (address, level, key prefix).

    Slots whose keys could not hold a valid order are reported and dropped.
    None when the node has entries but not one is a plausible pointer: the
    page is not a radix node at all (after a KHO boot the incoming map's
    pages are free to be reused).
    """
    walk, limits = reader.walk, reader.limits
    shift = (level - 1) * RADIX_TABLE_SIZE_LOG2 + RADIX_BITMAP_SIZE_LOG2
    entries = [(i, e) for i, e in enumerate(_words(page, byteorder)) if e]
    plausible = sum(
        1
        for i, e in entries
        if not e % PAGE_SIZE
        and e + PAGE_SIZE <= limits.max_phys
        and (prefix | (i << shift)).bit_length() <= RADIX_ORDER_0_LOG2 + 1
    )
    if entries and not plausible:
        return None
    children = []
    for index, entry in entries:
        child_prefix = prefix | (index << shift)
        if child_prefix.bit_length() > RADIX_ORDER_0_LOG2 + 1:
            walk.invalid_keys += 1
            walk.complete = False
            walk.report(
                error(
                    "memmap.invalid-key",
                    f"radix level-{level} slot {index} leads to keys "
                    f"{child_prefix:#x}.. with no valid order; skipped",
                    walk.where,
                )
            )
            continue
        children.append((entry, level - 1, child_prefix))
    return children


def _radix_leaf(
    page: bytes, prefix: int, byteorder: ByteOrder, reader: _Reader
) -> Iterator[PreservedBlock]:
    walk = reader.walk
    decoded = radix_decode_key(prefix) if prefix else None
    if decoded is not None:
        # Every key of this leaf has the prefix's order bit: one order, and
        # bit b is the block at the prefix's address + (b << (12 + order)).
        yield from reader.bitmap_blocks(page, byteorder, *decoded)
        return
    if prefix:
        # Every key in this leaf has the same (impossible) order bit.
        bad = _popcount(page)
        if bad:
            walk.invalid_keys += bad
            walk.complete = False
            walk.report(
                error(
                    "memmap.invalid-key",
                    f"radix leaf with key prefix {prefix:#x} holds {bad} keys "
                    "with no valid order (order bit above bit "
                    f"{RADIX_ORDER_0_LOG2})",
                    walk.where,
                ),
                bad,
            )
        return
    for bit in for_each_set_bit(page, byteorder):
        key = prefix | bit
        decoded = radix_decode_key(key)
        if decoded is None:
            walk.invalid_keys += 1
            walk.complete = False
            walk.report(
                error(
                    "memmap.invalid-key",
                    f"radix key {key:#x} encodes no valid order",
                    walk.where,
                )
            )
            continue
        block = reader.block(*decoded)
        if reader.stopped:
            return
        if block is not None:
            yield block


def chunk_bitmap_bits_for_release(release: str | None) -> int:
    """``PRESERVE_BITS`` of a kho-v1 kernel release (the compatible does not
    say): 4096 before 6.17.9, ``PAGE_SIZE * 8`` from 6.17.9 and 6.18 on.

    Unparsable releases get the page-sized bitmap (the newer kernels).
    """
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    if match is None:
        return CHUNK_BITMAP_BITS_PAGE
    major, minor = int(match.group(1)), int(match.group(2))
    patch = int(match.group(3) or 0)
    if (major, minor) > (6, 17) or ((major, minor) == (6, 17) and patch >= 9):
        return CHUNK_BITMAP_BITS_PAGE
    return CHUNK_BITMAP_BITS_SMALL


def for_each_chunk_block(
    read_phys: ReadPhys,
    first_chunk_phys: int,
    byteorder: ByteOrder = "little",
    *,
    bitmap_bits: int = CHUNK_BITMAP_BITS_PAGE,
    limits: MapLimits | None = None,
    missing: tuple[type[BaseException], ...] = DEFAULT_MISSING,
    walk: MapWalk | None = None,
) -> Iterator[PreservedBlock]:
    """Preserved blocks of a kho-v1 chunk-list map, as ``kho_mem_deserialize``
    reads it: each chunk's entries, then its ``next`` chunk.

    ``bitmap_bits`` is ``PRESERVE_BITS`` (see ``chunk_bitmap_bits_for_release``).
    Problems go to ``walk.findings``.
    """
    walk = walk if walk is not None else MapWalk()
    reader = _Reader(read_phys, limits or MapLimits(), missing, walk)
    end = "<" if byteorder == "little" else ">"
    try:
        if bitmap_bits not in (CHUNK_BITMAP_BITS_SMALL, CHUNK_BITMAP_BITS_PAGE):
            reader.stop(
                error(
                    "memmap.bad-bitmap-size",
                    f"chunk bitmaps of {bitmap_bits} bits are not a kernel's "
                    f"({CHUNK_BITMAP_BITS_SMALL} or {CHUNK_BITMAP_BITS_PAGE})",
                    walk.where,
                )
            )
            return
        if not first_chunk_phys:
            walk.report(
                info(
                    "memmap.empty",
                    "the preserved-memory map is empty (0): nothing preserved, "
                    "or (6.19..7.0) KHO was not finalized",
                    walk.where,
                )
            )
            return
        address = first_chunk_phys
        while address and not reader.stopped:
            chunk = reader.node(address, PAGE_SIZE, "chunk")
            if chunk is None:
                return  # its next pointer is lost with it
            next_chunk, order, count = struct.unpack_from(end + "QII", chunk)
            if count > CHUNK_MAX_ENTRIES:
                walk.complete = False
                walk.report(
                    error(
                        "memmap.chunk-bad-count",
                        f"chunk at {address:#x} claims {count} bitmaps, more "
                        f"than fit in a page ({CHUNK_MAX_ENTRIES}); reading "
                        f"{CHUNK_MAX_ENTRIES}",
                        walk.where,
                    )
                )
                count = CHUNK_MAX_ENTRIES
            if order > CHUNK_MAX_ORDER:
                walk.complete = False
                walk.report(
                    error(
                        "memmap.chunk-bad-order",
                        f"chunk at {address:#x} has order {order}; its "
                        f"{count} bitmaps are skipped",
                        walk.where,
                    )
                )
            else:
                yield from _chunk_entries(
                    chunk, address, order, count, bitmap_bits, end, reader
                )
            address = next_chunk
    finally:
        walk.finish()


def _chunk_entries(
    chunk: bytes,
    address: int,
    order: int,
    count: int,
    bitmap_bits: int,
    end: str,
    reader: _Reader,
) -> Iterator[PreservedBlock]:
    walk = reader.walk
    byteorder: ByteOrder = "little" if end == "<" else "big"
    step = PAGE_SHIFT + order
    for index in range(count):
        offset = CHUNK_HEADER_SIZE + index * CHUNK_ENTRY_SIZE
        phys_start, bitmap_phys = struct.unpack_from(end + "QQ", chunk, offset)
        if phys_start % (bitmap_bits << step):
            walk.report(
                warning(
                    "memmap.chunk-bad-start",
                    f"chunk at {address:#x} entry {index}: phys_start "
                    f"{phys_start:#x} is not a multiple of {bitmap_bits} "
                    f"order-{order} blocks (wrong bitmap size for this "
                    "kernel, or damage)",
                    walk.where,
                )
            )
        if not bitmap_phys:
            walk.complete = False
            walk.report(
                error(
                    "memmap.pointer-null",
                    f"chunk at {address:#x} entry {index} has a NULL bitmap",
                    walk.where,
                )
            )
            continue
        bitmap = reader.node(bitmap_phys, bitmap_bits // 8, "bitmap")
        if bitmap is None:
            if reader.stopped:
                return
            continue
        yield from reader.bitmap_blocks(bitmap, byteorder, phys_start, order)
        if reader.stopped:
            return


def for_each_preserved_block(
    read_phys: ReadPhys,
    root_phys: int,
    byteorder: ByteOrder = "little",
    *,
    map_format: MapFormat = "radix",
    bitmap_bits: int = CHUNK_BITMAP_BITS_PAGE,
    limits: MapLimits | None = None,
    missing: tuple[type[BaseException], ...] = DEFAULT_MISSING,
    walk: MapWalk | None = None,
) -> Iterator[PreservedBlock]:
    """Preserved blocks of either map format (``KhoAbi.memory_map_format``)."""
    if map_format == "chunks":
        return for_each_chunk_block(
            read_phys,
            root_phys,
            byteorder,
            bitmap_bits=bitmap_bits,
            limits=limits,
            missing=missing,
            walk=walk,
        )
    return for_each_radix_block(
        read_phys, root_phys, byteorder, limits=limits, missing=missing, walk=walk
    )


def for_each_merged_range(blocks: Iterable[PreservedBlock]) -> Iterator[PhysRange]:
    """Blocks sorted and merged: touching or overlapping blocks become one range.

    Materialises ``blocks``; bound it first (the walkers are bounded).
    """
    current: PhysRange | None = None
    for block in sorted(blocks, key=lambda b: b.phys):
        if current is not None and block.phys <= current.end:
            current = PhysRange(current.start, max(current.end, block.end))
            continue
        if current is not None:
            yield current
        current = PhysRange(block.phys, block.end)
    if current is not None:
        yield current


@dataclass(eq=False)
class MemoryMapSummary:
    """What a preserved-memory map holds: blocks per order and merged ranges."""

    map_format: str
    root_phys: int
    #: order -> number of blocks of that order.
    blocks_by_order: dict[int, int] = field(default_factory=dict)
    #: Merged ranges, sorted; at most ``max_ranges`` of them.
    ranges: list[PhysRange] = field(default_factory=list)
    #: True when more ranges existed than were kept.
    ranges_truncated: bool = False
    #: Runs of blocks that start inside an earlier range (preserved twice).
    overlaps: int = 0
    nodes_read: int = 0
    invalid_keys: int = 0
    out_of_range_blocks: int = 0
    #: False when the walk stopped or skipped part of the map.
    complete: bool = True
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return sum(self.blocks_by_order.values())

    @property
    def pages(self) -> int:
        return sum(n << order for order, n in self.blocks_by_order.items())

    @property
    def bytes(self) -> int:
        return self.pages * PAGE_SIZE

    def pages_by_order(self) -> dict[int, int]:
        return {o: n << o for o, n in sorted(self.blocks_by_order.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.map_format,
            "root_phys": self.root_phys,
            "complete": self.complete,
            "nodes_read": self.nodes_read,
            "blocks": self.blocks,
            "pages": self.pages,
            "bytes": self.bytes,
            "orders": [
                {
                    "order": order,
                    "blocks": n,
                    "pages": n << order,
                    "bytes": (n << order) * PAGE_SIZE,
                }
                for order, n in sorted(self.blocks_by_order.items())
            ],
            "range_count": len(self.ranges),
            "ranges_truncated": self.ranges_truncated,
            "ranges": [{"start": r.start, "size": r.size} for r in self.ranges],
            "overlaps": self.overlaps,
            "invalid_keys": self.invalid_keys,
            "out_of_range_blocks": self.out_of_range_blocks,
            "findings": [f.to_dict() for f in self.findings],
        }


def summarize_memory_map(
    read_phys: ReadPhys,
    root_phys: int,
    byteorder: ByteOrder = "little",
    *,
    map_format: MapFormat = "radix",
    bitmap_bits: int = CHUNK_BITMAP_BITS_PAGE,
    limits: MapLimits | None = None,
    missing: tuple[type[BaseException], ...] = DEFAULT_MISSING,
    max_ranges: int = DEFAULT_MAX_RANGES,
    where: str = "",
    blobs: int = 0,
) -> MemoryMapSummary:
    """Walk a map and count it: blocks/pages/bytes per order, merged ranges.

    Adjacent blocks are merged as they come (within an order the walk is in
    address order), then across orders; a run starting inside an earlier
    range is counted in ``overlaps`` and reported.  ``blobs`` is how many
    subtree blobs the handover's FDT hands over: each must be preserved
    memory, so a map that walks whole to no block at all while there are
    some is not whole (its root page was zeroed or reused).
    """
    walk = MapWalk(where=where)
    summary = MemoryMapSummary(map_format=map_format, root_phys=root_phys)
    runs: list[list[int]] = []  # [start, end] as the walk yields them
    for block in for_each_preserved_block(
        read_phys,
        root_phys,
        byteorder,
        map_format=map_format,
        bitmap_bits=bitmap_bits,
        limits=limits,
        missing=missing,
        walk=walk,
    ):
        summary.blocks_by_order[block.order] = (
            summary.blocks_by_order.get(block.order, 0) + 1
        )
        if runs and runs[-1][1] == block.phys:
            runs[-1][1] = block.end
        elif len(runs) < max_ranges:
            runs.append([block.phys, block.end])
        else:
            summary.ranges_truncated = True
    walk.findings.extend(_merge_runs(runs, summary, where))
    if summary.ranges_truncated:
        walk.findings.append(
            warning(
                "memmap.too-many-ranges",
                f"the map has more than {max_ranges} separate ranges; only "
                "the first ones are listed (counts are whole)",
                where,
            )
        )
    if blobs and walk.complete and not summary.blocks:
        walk.complete = False
        walk.findings.append(
            error(
                EMPTY_WITH_BLOBS,
                f"the preserved-memory map at {root_phys:#x} has no blocks, "
                f"but the {where} FDT hands over {blobs} blob(s), which must "
                "be preserved memory: its root page was zeroed or reused, the "
                "map cannot be walked",
                where,
            )
        )
    summary.nodes_read = walk.nodes_read
    summary.invalid_keys = walk.invalid_keys
    summary.out_of_range_blocks = walk.out_of_range_blocks
    summary.complete = walk.complete
    summary.findings = walk.findings
    return summary


def _merge_runs(
    runs: list[list[int]], summary: MemoryMapSummary, where: str
) -> list[Finding]:
    merged: list[PhysRange] = []
    first_overlap: tuple[int, int] | None = None
    for start, end in sorted(runs):
        if merged and start <= merged[-1].end:
            if start < merged[-1].end:
                summary.overlaps += 1
                first_overlap = first_overlap or (start, merged[-1].start)
            merged[-1] = PhysRange(merged[-1].start, max(merged[-1].end, end))
        else:
            merged.append(PhysRange(start, end))
    summary.ranges = merged
    if first_overlap is None:
        return []
    return [
        warning(
            "memmap.overlap",
            f"{summary.overlaps} preserved range(s) overlap others "
            f"(first at {first_overlap[0]:#x}, inside the range from "
            f"{first_overlap[1]:#x}): memory preserved twice, or damage",
            where,
        )
    ]
