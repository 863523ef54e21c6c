"""The kho_in/kho_out layout era from the dump's own facts (pure)."""

from __future__ import annotations

import pytest

from kho_drgn.abi import decide_kho_era

NONE = {"6.16-6.18": None, "6.19-7.0": None, "7.1+": None}


@pytest.mark.parametrize(
    ("release", "probes", "era", "chosen_by"),
    [
        # Vendor releases: the root FDT decides, whatever the string says.
        ("6.18.5-cloud-amd64", {**NONE, "6.16-6.18": "kho-v1"}, "6.16-6.18",
         "fdt-compatible"),
        ("7.1.0-0.rc3.el10", {**NONE, "6.19-7.0": "kho-v3", "7.1+": "kho-v3"},
         "7.1+", "fdt-compatible"),
        ("vendor-kernel", {**NONE, "6.19-7.0": "kho-v1"}, "6.19-7.0",
         "fdt-compatible"),
        # kho-v1 fits two eras: the release picks between them.
        ("6.19.6", {**NONE, "6.19-7.0": "kho-v1", "7.1+": "kho-v1"}, "6.19-7.0",
         "fdt-compatible"),
        # No FDT (KHO disabled): the release alone.
        ("7.2.13-kho-b", NONE, "7.1+", "release"),
        # A newer compatible than known: the newest layout.
        ("7.4.0", {**NONE, "6.19-7.0": "kho-v5", "7.1+": "kho-v5"}, "7.1+",
         "fdt-compatible"),
    ],
)  # fmt: skip
def test_era_decided(
    release: str, probes: dict[str, str | None], era: str, chosen_by: str
) -> None:
    decision = decide_kho_era(release, probes)
    assert (decision.layout.era, decision.chosen_by) == (era, chosen_by)
    assert decision.problem is None
    assert decision.facts[0].startswith(f"release {release!r}")


def test_release_contradicted_by_the_fdt() -> None:
    decision = decide_kho_era("7.2.1", {**NONE, "6.16-6.18": "kho-v1"})
    assert decision.layout.era == "6.16-6.18"
    assert decision.problem is not None and "7.1+" in decision.problem


def test_nothing_fits() -> None:
    decision = decide_kho_era("garbage", NONE)
    assert (decision.layout.era, decision.chosen_by) == ("7.1+", "default")
    assert decision.problem is not None and "'garbage'" in decision.problem
    assert "not parseable" in decision.facts[0]


def _root_fdt(compatible: str) -> bytes:
    import struct

    import libfdt

    fdt = libfdt.FdtSw()
    fdt.finish_reservemap()
    with fdt.add_node(""):
        fdt.property_string("compatible", compatible)
        fdt.property("preserved-memory-map", struct.pack("<Q", 0x228000))
        with fdt.add_node("kexec-metadata"):
            fdt.property("preserved-data", struct.pack("<Q", 0x248000))
            fdt.property("blob-size", struct.pack("<Q", 73))
    return bytes(fdt.as_fdt().as_bytearray())


def test_newer_root_compatible_read_with_the_newest_layout() -> None:
    """kho-v5 (not out yet): read as kho-v4 as far as it validates, said."""
    from kho_drgn.fdt import decode_kho_fdt

    fdt = decode_kho_fdt(_root_fdt("kho-v5"), "little", "incoming")
    assert fdt.compatible == "kho-v5"
    assert [f.code for f in fdt.findings] == ["fdt.unknown-compatible"]
    assert fdt.memory_map_phys == 0x228000
    (sub,) = fdt.subtrees
    assert (sub.name, sub.phys, sub.size) == ("kexec-metadata", 0x248000, 73)


@pytest.mark.parametrize("prefix", ["scratch", "bootmem"])
def test_debugfs_scratch_and_bootmem_names(prefix: str) -> None:
    """7.4 renames out/scratch_{phys,len} to out/bootmem_{phys,len}."""
    from kho_drgn.debugfs import decode_debugfs

    state = decode_debugfs(
        {
            f"out/{prefix}_phys": b"0x1b400000\n0x10c00000\n",
            f"out/{prefix}_len": b"0x3800000\n0xa800000\n",
        }
    )
    assert [(a.addr, a.size) for a in state.scratch] == [
        (0x1B400000, 0x3800000),
        (0x10C00000, 0xA800000),
    ]
    assert not [f for f in state.findings if f.code == "debugfs.scratch-mismatch"]
