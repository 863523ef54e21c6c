"""Preserved memory in a target: each handover's map, checked against struct pages.

Finding (drgn reads) lives here; the map walkers themselves are pure
(:mod:`kho_drgn.memmap`).  Two sources describe what the previous kernel
preserved:

* the incoming ``preserved-memory-map``, read once at boot; its pages are not
  kept, so in a dump it may already be overwritten (7.2 reuses the root page);
* the struct pages: at boot the kernel marks the head page of every incoming
  preserved block with ``page->private = KHO_PAGE_MAGIC << 32 | order``
  (6.18+) and clears it when the block is restored.  Pages still carrying the
  magic are preserved blocks nobody has claimed yet.

The outgoing map is what the next kernel will be handed; each outgoing blob
should lie inside it, or it will not survive the kexec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from drgn import FaultError, Program

from kho_drgn.abi import KHO_PAGE_MAGIC
from kho_drgn.checks import check_blobs_preserved, compare_with_magic
from kho_drgn.findings import Finding, info, warning
from kho_drgn.memmap import (
    CHUNK_BITMAP_BITS_PAGE,
    EMPTY_WITH_BLOBS,
    PAGE_SIZE,
    MapLimits,
    MemoryMapSummary,
    chunk_bitmap_bits_for_release,
    summarize_memory_map,
)
from kho_drgn.state import Handover, KhoState, KhoStatus
from kho_drgn.target import (
    TARGET_ERRORS,
    SymbolSource,
    kho_target,
    read_phys,
    symbol_address,
    symbol_source,
    target_byteorder,
)

#: Struct pages read per request while scanning for the magic.
SCAN_BATCH_PAGES = 4096
#: Scan at most this many pages (16 GiB of RAM) unless told otherwise: the
#: scan reads 64 bytes per page of RAM.
DEFAULT_SCAN_MAX_PAGES = 1 << 22
#: Tagged blocks kept for listing (the count is always whole).
MAX_TAGGED_KEPT = 1 << 16


class PageLayout(NamedTuple):
    """Where struct pages are and where ``private`` sits in one."""

    vmemmap: int
    page_size: int
    private_offset: int
    max_pfn: int
    source: str  # "dwarf" or "vmcoreinfo"


@dataclass(eq=False)
class MagicScan:
    """Head pages whose ``page->private`` carries ``KHO_PAGE_MAGIC``."""

    pages_scanned: int = 0
    pages_unreadable: int = 0
    #: phys -> order of each tagged block (the first ``MAX_TAGGED_KEPT``).
    tagged: dict[int, int] = field(default_factory=dict)
    tagged_count: int = 0
    #: False when the scan stopped at the page limit.
    complete: bool = True

    @property
    def tagged_pages(self) -> int:
        return sum(1 << order for order in self.tagged.values())


@dataclass(eq=False)
class PreservedMemory:
    """One handover's preserved-memory map, with its checks."""

    direction: str
    summary: MemoryMapSummary | None
    #: Only on the incoming side of a KHO-booted kernel.
    magic: MagicScan | None = None
    #: Tagged blocks that the incoming map does not list (disagreement).
    tagged_not_in_map: int = 0
    #: Blocks listed in the incoming map whose page no longer has the magic:
    #: restored by their owners (normal), or the map is stale.
    restored: int = 0
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self, ranges: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "map": None if self.summary is None else self.summary.to_dict(),
            "page_magic": None,
        }
        if data["map"] is not None and not ranges:
            data["map"].pop("ranges")
        if self.magic is not None:
            data["page_magic"] = {
                "pages_scanned": self.magic.pages_scanned,
                "pages_unreadable": self.magic.pages_unreadable,
                "complete": self.magic.complete,
                "tagged_blocks": self.magic.tagged_count,
                "tagged_pages": self.magic.tagged_pages,
                "tagged": [
                    {"phys": phys, "order": order}
                    for phys, order in sorted(self.magic.tagged.items())
                ],
                "tagged_not_in_map": self.tagged_not_in_map,
                "restored": self.restored,
            }
        return data


def page_layout(prog: Program) -> PageLayout | None:
    """struct page geometry from DWARF, else from VMCOREINFO; None if neither."""
    max_pfn = _read_word_symbol(prog, "max_pfn")
    if max_pfn is None:
        return None
    if symbol_source(prog) is SymbolSource.DWARF:
        try:
            from drgn import offsetof, sizeof

            page_type = prog.type("struct page")
            vmemmap = prog["vmemmap"].value_()
            return PageLayout(
                vmemmap,
                sizeof(page_type),
                offsetof(page_type, "private"),
                max_pfn,
                "dwarf",
            )
        except TARGET_ERRORS:
            pass
    vmcoreinfo = kho_target(prog).vmcoreinfo
    if vmcoreinfo is None:
        return None
    vmemmap = vmcoreinfo.number("SYMBOL(vmemmap)")
    size = vmcoreinfo.number("SIZE(page)")
    offset = vmcoreinfo.number("OFFSET(page.private)")
    if vmemmap is None or not size or offset is None or not 0 <= offset <= size - 8:
        return None
    return PageLayout(vmemmap, size, offset, max_pfn, "vmcoreinfo")


def _read_word_symbol(prog: Program, name: str) -> int | None:
    address = symbol_address(prog, name)
    if address is None:
        return None
    try:
        return int(prog.read_word(address))
    except TARGET_ERRORS:
        return None


def scan_page_magic(
    prog: Program, layout: PageLayout, max_pages: int = DEFAULT_SCAN_MAX_PAGES
) -> MagicScan:
    """Find the head pages still tagged with ``KHO_PAGE_MAGIC`` (not restored).

    Reads the struct pages in batches and searches each batch for the magic
    bytes (``bytes.find``, not a Python loop per page).  Batches that are not
    in the target (holes, filtered dumps) are counted as unreadable.
    """
    byteorder = target_byteorder(prog)
    magic = KHO_PAGE_MAGIC.to_bytes(4, byteorder)
    # private = magic << 32 | order: where the magic's bytes sit in the word.
    magic_at = layout.private_offset + (4 if byteorder == "little" else 0)
    order_at = layout.private_offset + (0 if byteorder == "little" else 4)
    last = min(layout.max_pfn, max_pages)
    scan = MagicScan(complete=layout.max_pfn <= max_pages)
    for first in range(0, last, SCAN_BATCH_PAGES):
        count = min(SCAN_BATCH_PAGES, last - first)
        scan.pages_scanned += count
        try:
            data = prog.read(layout.vmemmap + first * layout.page_size,
                             count * layout.page_size)  # fmt: skip
        except FaultError:
            scan.pages_unreadable += count
            continue
        position = data.find(magic)
        while position != -1:
            index, offset = divmod(position, layout.page_size)
            if offset == magic_at:
                base = index * layout.page_size + order_at
                order = int.from_bytes(data[base : base + 4], byteorder)
                scan.tagged_count += 1
                if len(scan.tagged) < MAX_TAGGED_KEPT:
                    scan.tagged[(first + index) * PAGE_SIZE] = order
            position = data.find(magic, position + 1)
    return scan


def read_memory_map(
    prog: Program,
    handover: Handover,
    release: str | None,
    limits: MapLimits | None = None,
) -> MemoryMapSummary | None:
    """Walk a handover's ``preserved-memory-map``; None when it has none."""
    fdt = handover.fdt
    if fdt is None or fdt.memory_map_phys is None:
        return None
    map_format = fdt.abi.memory_map_format if fdt.abi is not None else "radix"
    bitmap_bits = (
        chunk_bitmap_bits_for_release(release)
        if map_format == "chunks"
        else CHUNK_BITMAP_BITS_PAGE
    )
    if limits is None:
        max_pfn = _read_word_symbol(prog, "max_pfn")
        limits = MapLimits() if not max_pfn else MapLimits(max_phys=max_pfn * PAGE_SIZE)
    blobs = sum(1 for s in fdt.subtrees if s.phys is not None and s.size)
    return summarize_memory_map(
        lambda address, size: read_phys(prog, address, size),
        fdt.memory_map_phys,
        target_byteorder(prog),
        map_format="chunks" if map_format == "chunks" else "radix",
        bitmap_bits=bitmap_bits,
        limits=limits,
        missing=(FaultError,),
        where=handover.direction,
        blobs=blobs,
    )


def preserved_memory(
    prog: Program,
    state: KhoState,
    scan_pages: bool = True,
    scan_max_pages: int = DEFAULT_SCAN_MAX_PAGES,
    directions: tuple[str, ...] = ("incoming", "outgoing"),
) -> list[PreservedMemory]:
    """The handovers' maps (those of ``directions``); with ``scan_pages``, the
    incoming one is checked against the struct pages (64 bytes read per page
    of RAM)."""
    results = []
    for handover in (state.incoming, state.outgoing):
        if handover is None or handover.fdt is None:
            continue
        if handover.direction not in directions:
            continue
        summary = read_memory_map(prog, handover, state.release)
        result = PreservedMemory(handover.direction, summary)
        incoming = handover.direction == "incoming"
        if incoming and summary is not None and not summary.complete:
            # Expected, not damage: the kernel read the map once at boot and
            # did not keep its pages (7.2 reuses the root page).  One finding
            # says so instead of the walk's, which stay in the map's JSON.
            result.findings.append(
                info(
                    "memmap.incoming-reused",
                    "the incoming map is read once at boot and its pages are "
                    f"not kept: it has been overwritten since ({_tally(summary)})",
                    "incoming",
                )
            )
        elif summary is not None:
            result.findings.extend(summary.findings)
        if incoming and scan_pages and state.status is KhoStatus.KEXEC:
            layout = page_layout(prog)
            if layout is None:
                result.findings.append(
                    warning(
                        "memmap.no-page-layout",
                        "cannot locate struct pages (no DWARF, no VMCOREINFO "
                        "SIZE(page)/OFFSET(page.private)): the map is not "
                        "checked against KHO_PAGE_MAGIC",
                        "incoming",
                    )
                )
            else:
                result.magic = scan_page_magic(prog, layout, scan_max_pages)
                _note_scan(result.magic, result.findings)
                result.tagged_not_in_map, result.restored, found = compare_with_magic(
                    summary, result.magic
                )
                result.findings.extend(found)
        if handover.direction == "outgoing":
            result.findings.extend(check_blobs_preserved(handover, summary))
        results.append(result)
    return results


def _note_scan(scan: MagicScan, findings: list[Finding]) -> None:
    if not scan.complete:
        findings.append(
            info(
                "memmap.scan-partial",
                f"KHO_PAGE_MAGIC scan stopped after {scan.pages_scanned} pages "
                "(raise the page limit to scan all of memory)",
                "incoming",
            )
        )
    if scan.pages_scanned and scan.pages_unreadable == scan.pages_scanned:
        findings.append(
            info(
                "memmap.scan-unreadable",
                "no struct page could be read (vmemmap not in the dump?): "
                "the map is not checked against KHO_PAGE_MAGIC",
                "incoming",
            )
        )


def _tally(summary: MemoryMapSummary) -> str:
    """What stopped a walk, e.g. "the root is not a map" or "2 invalid keys"."""
    codes = [f.code for f in summary.findings if not f.message.startswith("...")]
    if "memmap.not-a-map" in codes and not summary.blocks:
        return "its root page is no longer a map"
    if EMPTY_WITH_BLOBS in codes:
        return "its root page is empty: zeroed since"
    parts = [
        f"{summary.invalid_keys} invalid key(s)" if summary.invalid_keys else "",
        f"{codes.count('memory.missing')} page(s) missing"
        if "memory.missing" in codes
        else "",
        f"{summary.blocks} plausible block(s) read" if summary.blocks else "",
    ]
    return ", ".join(p for p in parts if p) or "the walk stopped early"
