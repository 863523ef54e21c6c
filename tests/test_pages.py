"""The shared bounded page reader (kho_drgn.pages) on synthetic pages."""

from __future__ import annotations

import pytest

from kho_drgn.findings import Finding, Severity
from kho_drgn.pages import PAGE_SIZE, PageReader, PhysReadError

PAGES = {0x1000 * i: bytes([i]) * PAGE_SIZE for i in range(1, 8)}


def read_phys(address: int, size: int) -> bytes:
    base = address - address % PAGE_SIZE
    if base not in PAGES:
        raise PhysReadError(f"no page at {base:#x}")
    return PAGES[base][address - base : address - base + size]


def reader(**kwargs: object) -> tuple[PageReader, list[Finding]]:
    found: list[Finding] = []
    options: dict[str, object] = {"where": "incoming", **kwargs}
    return PageReader(read_phys, found.append, "test list", **options), found  # type: ignore[arg-type]


def test_reads_a_page() -> None:
    pages, found = reader()
    assert pages.read(0x2000, PAGE_SIZE, "node") == bytes([2]) * PAGE_SIZE
    assert found == [] and pages.pages_read == 1 and pages.seen == {0x2000}


@pytest.mark.parametrize(
    "address, says",
    [
        (0, "pointer 0x0 is null"),
        (0x2008, "pointer 0x2008 is not 4096-byte aligned"),
        (1 << 52, "is past the end of physical memory (0x10000000000000)"),
    ],
    ids=["null", "unaligned", "out-of-range"],
)
def test_bad_pointer_says_which(address: int, says: str) -> None:
    pages, found = reader()
    assert pages.read(address, PAGE_SIZE, "node") is None
    assert [(f.code, f.severity, f.where) for f in found] == [
        ("page.bad-pointer", Severity.ERROR, "incoming")
    ]
    assert found[0].message.startswith("test list: node pointer ")
    assert says in found[0].message
    assert pages.pages_read == 0  # nothing was read


def test_out_of_range_against_max_phys_and_size() -> None:
    pages, found = reader(max_phys=0x4000)
    assert pages.read(0x3000, PAGE_SIZE, "node") is not None  # ends at max_phys
    assert pages.read(0x4000, PAGE_SIZE, "node") is None
    assert pages.read(0x3000, 2 * PAGE_SIZE, "node") is None  # its end is past
    assert [f.code for f in found] == ["page.bad-pointer"] * 2


def test_alignment_is_the_structures() -> None:
    pages, found = reader()
    assert pages.read(0x2200, 512, "bitmap", align=512) is not None
    assert pages.read(0x2100, 512, "bitmap", align=512) is None
    assert "not 512-byte aligned" in found[0].message
    assert pages.read_struct(0x3008, 48, "data") == bytes([3]) * 48  # packed


def test_cycle_once_per_walk() -> None:
    pages, found = reader()
    assert pages.read(0x1000, PAGE_SIZE, "block") is not None
    assert pages.read(0x1000, PAGE_SIZE, "block") is None
    assert [(f.code, f.severity) for f in found] == [("page.cycle", Severity.ERROR)]
    assert "block at 0x1000 is reached twice" in found[0].message
    # a read outside the cycle check, and a new walk, see the page again
    assert pages.read(0x1000, PAGE_SIZE, "data", once=False) is not None
    assert reader()[0].read(0x1000, PAGE_SIZE, "block") is not None


def test_budget_stops_the_walk_once() -> None:
    pages, found = reader(max_pages=3)
    got = [pages.read(0x1000 * i, PAGE_SIZE, "node") for i in range(1, 7)]
    assert [g is not None for g in got] == [True, True, True, False, False, False]
    assert pages.exhausted and pages.pages_read == 3
    assert [(f.code, f.severity) for f in found] == [
        ("page.too-many", Severity.WARNING)
    ]
    assert "more than 3 pages" in found[0].message


def test_missing_page() -> None:
    pages, found = reader()
    assert pages.read(0x9000, PAGE_SIZE, "node") is None
    assert [(f.code, f.severity) for f in found] == [
        ("memory.missing", Severity.WARNING)
    ]
    assert "node at physical 0x9000 is not in the target (no page at 0x9000)" in (
        found[0].message
    )
    assert pages.pages_read == 1  # tried: it counts against the budget


def test_missing_exceptions_are_the_callers() -> None:
    def broken(address: int, size: int) -> bytes:
        raise KeyError(address)

    found: list[Finding] = []
    pages = PageReader(broken, found.append, "test", missing=(KeyError,))
    assert pages.read(0x1000, PAGE_SIZE, "node") is None
    assert [f.code for f in found] == ["memory.missing"]
    other = PageReader(broken, found.append, "test")
    with pytest.raises(KeyError):  # not "missing": a bug, not absent memory
        other.read(0x1000, PAGE_SIZE, "node")


def test_short_read_is_missing() -> None:
    found: list[Finding] = []
    pages = PageReader(lambda a, s: b"\0" * (s - 1), found.append, "test")
    assert pages.read(0x1000, PAGE_SIZE, "node") is None
    assert [f.code for f in found] == ["memory.missing"]
    assert "read 4095 of 4096 bytes" in found[0].message


@pytest.mark.parametrize("damage", ["cycle", "bad-pointer"])
def test_one_code_whatever_the_structure(damage: str) -> None:
    """A page that links to itself, or to an unaligned address, is the same
    finding in the preserved-memory map, a LUO block chain and the LUO
    subtree's session blocks."""
    import struct

    from kho_drgn.formats.luo import decode_luo
    from kho_drgn.luo import SESSION_SER_SIZE, for_each_block_entry
    from kho_drgn.memmap import MapWalk, for_each_chunk_block

    head = 0x3000
    nxt = head if damage == "cycle" else head + 8
    page = struct.pack("<QQ", nxt, 0).ljust(PAGE_SIZE, b"\0")

    def memory(address: int, size: int) -> bytes:
        if address - address % PAGE_SIZE != head:
            raise PhysReadError(f"{address:#x}")
        return page[address - head : address - head + size]

    walk = MapWalk(where="incoming")
    assert list(for_each_chunk_block(memory, head, walk=walk)) == []
    blocks: list[Finding] = []
    entries = for_each_block_entry(memory, head, SESSION_SER_SIZE, findings=blocks)
    assert list(entries) == []
    blob = b"luo-v5\0\0" + struct.pack("<QQQ", 1, head, 0)
    view = decode_luo(blob, read_phys=memory, where="incoming")
    for findings, structure in [
        (walk.findings, "preserved-memory map"),
        (blocks, "LUO blocks"),
        (view.findings, "LUO session blocks"),
    ]:
        assert [f.code for f in findings] == [f"page.{damage}"], structure
        assert findings[0].message.startswith(f"{structure}: "), findings[0]
