"""Subtree blob decoders: the fixtures' real blobs, and blobs built the kernel's way."""

from __future__ import annotations

import struct

import libfdt
import pytest
from fixturedata import load_truth, shared_dir
from khobuild import metadata_blob

from kho_drgn.subtrees import (
    KHO_TEST_MAGIC,
    SubtreeView,
    decode_kho_test,
    decode_luo,
    decode_memblock,
    decode_subtree,
    decode_unknown,
)

PAGE = 4096


def fdt(root_props: dict[str, bytes], children: dict[str, dict[str, bytes]]) -> bytes:
    """An FDT written with libfdt's sequential writer, like the kernel does."""
    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        for name, value in root_props.items():
            sw.property(name, value)
        for child, props in children.items():
            with sw.add_node(child):
                for name, value in props.items():
                    sw.property(name, value)
    return bytes(sw.as_fdt().as_bytearray())


def memblock_blob(regions: dict[str, tuple[int, int]], order: str = "little") -> bytes:
    return fdt(
        {"compatible": b"memblock-v1\0"},
        {
            name: {
                "compatible": b"reserve-mem-v1\0",
                "start": start.to_bytes(8, order),  # type: ignore[arg-type]
                "size": size.to_bytes(8, order),  # type: ignore[arg-type]
            }
            for name, (start, size) in regions.items()
        },
    )


def kho_test_blob(info: bytes, nr: int = 2, magic: int = KHO_TEST_MAGIC) -> bytes:
    le = "<"
    return fdt(
        {"compatible": b"kho-test-v1\0", "magic": struct.pack(le + "I", magic)},
        {
            "data": {
                "nr_folios": struct.pack(le + "I", nr),
                "folios_info": info,
                "csum": struct.pack(le + "I", 0x1234),
            }
        },
    )


def pages_reader(pages: dict[int, bytes]):  # type: ignore[no-untyped-def]
    def read(address: int, size: int) -> bytes:
        base = address & ~(PAGE - 1)
        if base not in pages:
            raise OSError(f"no page at {address:#x}")
        return pages[base][address - base : address - base + size]

    return read


def codes(view: SubtreeView) -> set[str]:
    return {f.code for f in view.findings}


@pytest.mark.fixtures
def test_real_blobs_from_the_fixtures() -> None:
    if shared_dir() is None:
        pytest.skip("../shared is missing: no real blobs")
    debugfs = load_truth("chain-aab").debugfs
    memblock = decode_subtree("memblock", debugfs["kho/out/sub_fdts/memblock"])
    assert memblock.kind == "memblock" and memblock.compatible == "memblock-v1"
    assert memblock.entries == [
        {"name": "khotest", "compatible": "reserve-mem-v1",
         "start": 0x1F66C000, "size": 1 << 20},
    ]  # fmt: skip
    assert not memblock.findings
    test = decode_subtree("kho_test", debugfs["kho/out/sub_fdts/kho_test"])
    assert test.kind == "kho-test" and test.fields["magic_ok"]
    assert test.fields["nr_folios"] == 16  # lib/test_kho.c: max_mem / folio size
    assert test.fields["folios_info"]["total_pages"] == 1
    assert test.entries == []  # no memory to follow the vmalloc area into
    md = decode_subtree("kexec-metadata", debugfs["kho/in/sub_fdts/kexec-metadata"])
    assert md.fields == {"version": 1, "previous_release": "7.2.13-kho-a",
                         "kexec_count": 2, "valid": True}  # fmt: skip
    assert "count 2" in md.summary() and "khotest" in memblock.summary()


def test_memblock_regions_and_guards() -> None:
    view = decode_memblock(memblock_blob({"a": (0x1000, 0x2000), "b": (0x9000, 0)}))
    assert [e["name"] for e in view.entries] == ["a", "b"]
    assert view.fields == {"regions": 2, "bytes": 0x2000}
    assert codes(view) == {"subtree.memblock.bad-region"}
    big = decode_memblock(memblock_blob({"a": (0x1000, 0x2000)}, "big"), "big")
    assert big.entries[0]["start"] == 0x1000 and not big.findings
    bad = fdt({"compatible": b"memblock-v1\0"},
              {"x": {"compatible": b"other\0", "start": b"\1\2"}})  # fmt: skip
    view = decode_memblock(bad)
    assert codes(view) == {
        "subtree.memblock.bad-compatible",
        "subtree.memblock.bad-region",
    }


def test_kho_test_follows_the_vmalloc_area() -> None:
    """folios_info is a struct kho_vmalloc: a chunk page lists the data pages,
    which hold one u64 phys|order per folio."""
    chunk, data = 0x10000, 0x20000
    info = struct.pack("<QIHH", chunk, 1, 1, 0)
    pages = {
        chunk: struct.pack("<QQQ", 0, data, 0).ljust(PAGE, b"\0"),
        data: struct.pack("<QQ", 0x400000 | 3, 0x800000 | 9).ljust(PAGE, b"\0"),
    }
    view = decode_kho_test(kho_test_blob(info), read_phys=pages_reader(pages))
    assert view.entries == [{"phys": 0x400000, "order": 3},
                            {"phys": 0x800000, "order": 9}]  # fmt: skip
    assert view.fields["folios_info"]["flags"] == "alloc"
    # 6.17: the u64 array itself (16 bytes with two folios would read as a
    # kho_vmalloc descriptor: the newer layout wins that tie)
    words = struct.pack("<QQQ", 0x5000 | 1, 0x9000, 0xA000 | 2)
    legacy = decode_kho_test(kho_test_blob(words, nr=3))
    assert legacy.entries == [{"phys": 0x5000, "order": 1},
                              {"phys": 0x9000, "order": 0},
                              {"phys": 0xA000, "order": 2}]  # fmt: skip


def test_incoming_kho_test_list_freed_at_boot() -> None:
    """The new kernel restores the incoming folios and frees their list
    (lib/test_kho.c): a zeroed chunk page there is one info, not damage;
    the same page on the outgoing side is a warning."""
    chunk = 0x10000
    info = struct.pack("<QIHH", chunk, 1, 1, 0)
    freed = pages_reader({chunk: bytes(PAGE)})
    incoming = decode_kho_test(kho_test_blob(info), read_phys=freed, where="incoming")
    assert [(f.code, f.severity.value) for f in incoming.findings] == [
        ("subtree.kho-test.consumed", "info")
    ]
    assert "0 folios, nr_folios is 2" in incoming.findings[0].message
    assert incoming.fields["nr_folios"] == 2
    outgoing = decode_kho_test(kho_test_blob(info), read_phys=freed, where="outgoing")
    assert codes(outgoing) == {"subtree.kho-test.short"}
    # a reused page with a wild pointer is folded too, a whole list is quiet
    wild = pages_reader({chunk: struct.pack("<QQ", 0, 0x20001).ljust(PAGE, b"\0")})
    folded = decode_kho_test(kho_test_blob(info), read_phys=wild, where="incoming")
    assert codes(folded) == {"subtree.kho-test.consumed"}
    assert "not 4096-byte aligned" in folded.findings[0].message
    data = 0x20000
    whole = pages_reader({
        chunk: struct.pack("<QQ", 0, data).ljust(PAGE, b"\0"),
        data: struct.pack("<QQ", 0x400000, 0x800000).ljust(PAGE, b"\0"),
    })  # fmt: skip
    intact = decode_kho_test(kho_test_blob(info), read_phys=whole, where="incoming")
    assert not intact.findings and len(intact.entries) == 2


def test_kho_test_guards() -> None:
    bad_magic = decode_kho_test(kho_test_blob(b"\0" * 16, magic=0xDEAD))
    assert "subtree.kho-test.bad-magic" in codes(bad_magic)
    assert "BAD" in bad_magic.summary()
    odd = decode_kho_test(kho_test_blob(b"\0" * 5))
    assert "subtree.kho-test.bad-folios-info" in codes(odd)
    # a chunk that points at itself, a missing page, an unaligned pointer
    loop = 0x10000
    pages = {loop: struct.pack("<QQ", loop, 0x20000).ljust(PAGE, b"\0")}
    info = struct.pack("<QIHH", loop, 4, 1, 0)
    view = decode_kho_test(kho_test_blob(info), read_phys=pages_reader(pages))
    assert codes(view) & {"page.cycle", "memory.missing"}
    view = decode_kho_test(
        kho_test_blob(struct.pack("<QIHH", 0x10001, 1, 1, 0)),
        read_phys=pages_reader({}),
    )
    assert "page.bad-pointer" in codes(view)
    nodata = fdt({"compatible": b"kho-test-v1\0",
                  "magic": struct.pack("<I", KHO_TEST_MAGIC)}, {})  # fmt: skip
    assert "subtree.kho-test.no-data" in codes(decode_kho_test(nodata))


def luo_blob(number: int, sessions: int, compat: bytes = b"luo-v5") -> bytes:
    return compat.ljust(8, b"\0") + struct.pack("<QQQ", number, sessions, 0)


def test_luo_sessions() -> None:
    block = 0x30000
    session = b"vm-1".ljust(64, b"\0") + struct.pack("<QQ", 0x40000, 3)
    pages = {block: (struct.pack("<QQ", 0, 1) + session).ljust(PAGE, b"\0")}
    view = decode_subtree("LUO", luo_blob(7, block), read_phys=pages_reader(pages))
    assert view.kind == "luo" and view.compatible == "luo-v5"
    assert view.fields["liveupdate_num"] == 7 and view.fields["sessions"] == 1
    assert view.entries == [{"session": "vm-1", "files": 3, "files_pa": 0x40000}]
    assert "liveupdate #7" in view.summary()
    short = decode_luo(b"luo-v5\0\0" + b"\0" * 8)
    assert "subtree.luo.short" in codes(short)
    future = decode_subtree("LUO", luo_blob(1, 0, b"luo-v9"))
    assert "subtree.luo.unknown-version" in codes(future)
    many = {block: struct.pack("<QQ", block, 1 << 40).ljust(PAGE, b"\0")}
    view = decode_subtree("LUO", luo_blob(1, block), read_phys=pages_reader(many))
    assert {"subtree.luo.bad-count", "page.cycle"} <= codes(view)


def test_luo_v1_fdt() -> None:
    number = (5).to_bytes(8, "little")
    blob = fdt({"compatible": b"luo-v1\0", "liveupdate-number": number},
               {"luo-session": {"compatible": b"luo-session-v1\0"}})  # fmt: skip
    view = decode_subtree("LUO", blob)
    assert view.kind == "luo" and view.fields["liveupdate_num"] == 5
    assert view.entries == [{"node": "luo-session", "compatible": "luo-session-v1"}]


def test_unknown_blobs_and_name_mismatch() -> None:
    nested = fdt({"compatible": b"acme-v3\0", "n": b"\1\2\3\4"}, {"sub": {}})
    view = decode_subtree("acme", nested)
    assert view.kind == "fdt" and view.compatible == "acme-v3"
    assert view.entries[0]["properties"] == {"compatible": "acme-v3", "n": "01020304"}
    assert [e["path"] for e in view.entries] == ["/", "/sub"]
    assert "subtree.unknown" in codes(view)
    raw = decode_unknown(b"\x01\x02" * 40, name="blob")
    assert raw.kind == "raw" and raw.fields["first_bytes"].startswith("01 02 01")
    assert "80 bytes" in raw.summary()
    swapped = decode_subtree("memblock", kho_test_blob(b"\0" * 16))
    assert swapped.kind == "kho-test" and "subtree.name-mismatch" in codes(swapped)
    md = decode_subtree("kexec-metadata", metadata_blob(version=2))
    assert md.kind == "kexec-metadata" and not md.fields["valid"]
    assert "invalid" in md.summary()


def test_never_raises_on_truncations_and_garbage() -> None:
    blobs = [
        memblock_blob({"a": (0x1000, 0x2000)}),
        kho_test_blob(struct.pack("<QIHH", 0x10000, 1, 1, 0)),
        luo_blob(1, 0x30000),
        metadata_blob(),
    ]
    names = ["memblock", "kho_test", "LUO", "kexec-metadata", "x"]
    for blob in blobs:
        for cut in range(len(blob) + 1):
            for name in names:
                view = decode_subtree(name, blob[:cut], read_phys=pages_reader({}))
                view.summary()
                view.to_dict()


def test_a_new_format_is_one_module_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The registry is the only place decode_subtree learns formats from."""
    import kho_drgn.formats as formats
    from kho_drgn.fdt import FdtNode
    from kho_drgn.formats.base import DecodeContext, SubtreeFormat

    def decode(
        name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
    ) -> SubtreeView:
        assert root is not None
        return SubtreeView(name, "demo", root.prop_str("compatible"), len(blob))

    demo = SubtreeFormat(
        kind="demo",
        decode=decode,
        summary=lambda view: f"demo blob of {view.size} bytes",
        node_names=("demo",),
        compatibles=("demo-v1",),
    )
    blob = fdt({"compatible": b"demo-v1\0"}, {})
    assert decode_subtree("demo", blob).kind == "fdt"  # unknown before
    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, demo))
    view = decode_subtree("demo", blob)
    assert view.kind == "demo" and view.findings == []
    assert view.summary() == f"demo blob of {len(blob)} bytes"
    # Under another format's node name, it is reported, and still decoded.
    mismatched = decode_subtree("memblock", blob)
    assert mismatched.kind == "demo"
    assert [f.code for f in mismatched.findings] == ["subtree.name-mismatch"]
