"""Root KHO FDT decoding without drgn, on FDTs built the kernel's way."""

from __future__ import annotations

import pytest
from khobuild import fdt_with_node_props, kho_root_fdt, raw_u64

from kho_drgn.fdt import FdtError, decode_kho_fdt, for_each_fdt_node, parse_fdt

SUBTREES = [("memblock", 0x1299000, 210), ("kexec-metadata", 0x248000, 73)]


def test_kernel_built_root() -> None:
    fdt = decode_kho_fdt(kho_root_fdt(SUBTREES), where="incoming")
    assert fdt.compatible == "kho-v4" and fdt.abi is not None
    assert fdt.memory_map_phys == 0x228000
    # kho_add_subtree inserts each node first: newest first, as in the dumps.
    assert [s.name for s in fdt.subtrees] == ["kexec-metadata", "memblock"]
    md = fdt.subtree("kexec-metadata")
    assert md is not None and (md.phys, md.size) == (0x248000, 73)
    assert fdt.findings == [] and all(not s.findings for s in fdt.subtrees)


def test_u64_props_are_cpu_byte_order_not_fdt_cells() -> None:
    blob = kho_root_fdt([("kexec-metadata", 0x248000, 73)])
    # fdtdump would show <0x00802400 0x00000000>: raw little-endian bytes.
    assert raw_u64(0x248000) in blob
    be = decode_kho_fdt(kho_root_fdt(SUBTREES, byteorder="big"), "big")
    assert be.subtree("memblock").phys == 0x1299000  # type: ignore[union-attr]


def test_property_order_does_not_matter() -> None:
    fdt = decode_kho_fdt(kho_root_fdt(SUBTREES, size_first=True))
    assert {(s.name, s.phys, s.size) for s in fdt.subtrees} == {
        (n, p, s) for n, p, s in SUBTREES
    }


def test_missing_or_short_subtree_props_are_findings() -> None:
    blob = fdt_with_node_props(
        {
            "no-size": {"preserved-data": raw_u64(0x1000)},
            "short": {"preserved-data": b"\x00\x10\x00\x00", "blob-size": raw_u64(8)},
            "ok": {"preserved-data": raw_u64(0x2000), "blob-size": raw_u64(16)},
        }
    )
    fdt = decode_kho_fdt(blob, where="outgoing")
    by_name = {s.name: s for s in fdt.subtrees}
    assert [f.code for f in by_name["no-size"].findings] == ["fdt.subtree-broken"]
    assert "blob-size" in by_name["no-size"].findings[0].message
    assert by_name["short"].phys is None
    assert "preserved-data" in by_name["short"].findings[0].message
    assert by_name["ok"].findings == [] and by_name["ok"].size == 16


def test_unknown_compatible_is_reported_and_still_read() -> None:
    fdt = decode_kho_fdt(kho_root_fdt(SUBTREES, compatible="kho-v99"))
    assert [f.code for f in fdt.findings] == ["fdt.unknown-compatible"]
    assert fdt.abi is None and len(fdt.subtrees) == 2


def test_no_compatible_no_memory_map() -> None:
    fdt = decode_kho_fdt(kho_root_fdt(SUBTREES, compatible=None, memory_map=None))
    assert {f.code for f in fdt.findings} == {"fdt.no-compatible", "fdt.no-memory-map"}


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"\0" * len(b), "bad FDT magic"),
        (lambda b: b[:6], "too short"),
        (lambda b: b[:4] + (len(b) + 100).to_bytes(4, "big") + b[8:], "truncated"),
        (lambda b: b[:4] + (20).to_bytes(4, "big") + b[8:], "smaller than its header"),
        (lambda b: b[:60], "truncated"),
        (lambda b: b[:8] + (0xFFFF0).to_bytes(4, "big") + b[12:], "corrupt"),
        (lambda b: b[:40] + b"\xff" * (len(b) - 40), "corrupt"),
    ],
    ids=[
        "zeroed",
        "short",
        "totalsize-too-big",
        "totalsize-tiny",
        "cut",
        "bad-offset",
        "garbage-struct",
    ],
)
def test_damaged_fdts_raise_fdt_error(mangle: object, message: str) -> None:
    blob = kho_root_fdt(SUBTREES)
    with pytest.raises(FdtError, match=message):
        decode_kho_fdt(mangle(blob))  # type: ignore[operator]


def test_generic_walk_yields_every_node() -> None:
    root = parse_fdt(kho_root_fdt(SUBTREES))
    assert [n.path for n in for_each_fdt_node(root)] == [
        "/",
        "/kexec-metadata",
        "/memblock",
    ]


@pytest.mark.parametrize(
    ("compatible", "data_prop", "size_prop", "memory_map_format"),
    [
        ("kho-v1", "fdt", None, "chunks"),
        ("kho-v2", "preserved-data", None, "radix"),
        ("kho-v3", "preserved-data", "blob-size", "radix"),
        ("kho-v4", "preserved-data", "blob-size", "radix"),
    ],
)
def test_every_abi_version(
    compatible: str, data_prop: str, size_prop: str | None, memory_map_format: str
) -> None:
    """Each version's root FDT, built with its own property names."""
    blob = kho_root_fdt(
        [("memblock", 0x5000, 210)],
        compatible=compatible,
        data_prop=data_prop,
        size_prop=size_prop,
    )
    fdt = decode_kho_fdt(blob)
    assert fdt.abi is not None and fdt.abi.compatible == compatible
    assert fdt.abi.memory_map_format == memory_map_format
    (ref,) = fdt.subtrees
    assert ref.phys == 0x5000 and ref.findings == []
    # Without a size property the size comes from the sub-FDT's header later.
    assert ref.size == (210 if size_prop else None)


def test_v3_requires_blob_size_but_v2_does_not() -> None:
    for compatible, broken in (("kho-v2", False), ("kho-v3", True)):
        blob = kho_root_fdt([("x", 0x5000, 1)], compatible=compatible, size_prop=None)
        (ref,) = decode_kho_fdt(blob).subtrees
        assert bool(ref.findings) is broken


def test_v1_reads_fdt_property_not_preserved_data() -> None:
    blob = kho_root_fdt([("x", 0x5000, 1)], compatible="kho-v1")  # preserved-data
    (ref,) = decode_kho_fdt(blob).subtrees
    assert ref.phys is None
    assert "'fdt'" in ref.findings[0].message


def test_composite_compatible_uses_its_base_version() -> None:
    fdt = decode_kho_fdt(kho_root_fdt(SUBTREES, compatible="kho-v4,radix-v2"))
    assert fdt.abi is not None and fdt.abi.compatible == "kho-v4"
    assert decode_kho_fdt(kho_root_fdt(SUBTREES, compatible="kho-v40")).abi is None


def test_layout_by_release() -> None:
    """kho_in/kho_out offsets per era, from the kernel's struct definitions
    (x86_64, no lock debugging): 6.16-6.18 kho_in {dir; fdt_phys; ...} and
    kho_out {notifier head 48; dir 8; mutex 32; ser.fdt page *}; 6.19 moved
    the direct-map FDT pointer first; 7.1 added the metadata copies."""
    from kho_drgn.abi import kho_layout_for_release

    def era(release: str) -> tuple[object, ...] | None:
        layout = kho_layout_for_release(release)
        if layout is None:
            return None
        return (layout.in_fdt_phys, layout.in_scratch_phys, layout.out_fdt,
                layout.out_fdt_is_page, layout.in_previous_release,
                layout.in_kexec_count)  # fmt: skip

    assert era("6.15.0") is None
    assert era("garbage") is None
    old = (8, 16, 88, True, None, None)
    assert era("6.16.3") == era("6.17.9") == era("6.18.1") == old
    assert era("6.19.0") == era("7.0.2") == (0, 8, 0, False, None, None)
    assert era("7.1.0") == era("7.2.13-kho-b") == (0, 8, 0, False, 16, 84)
