"""The kho_in/kho_out layout era from the dump's own facts (pure)."""

from __future__ import annotations

import pytest

from kho_drgn.abi import decide_kho_era

NONE = {"6.16-6.18": None, "6.19-7.0": None, "7.1+": None}


@pytest.mark.parametrize(
    ("release", "probes", "era", "chosen_by"),
    [
        # Vendor releases: the root FDT decides, whatever the string says.
        (
            "6.18.5-cloud-amd64",
            {**NONE, "6.16-6.18": "kho-v1"},
            "6.16-6.18",
            "fdt-compatible",
        ),
        (
            "7.1.0-0.rc3.el10",
            {**NONE, "6.19-7.0": "kho-v3", "7.1+": "kho-v3"},
            "7.1+",
            "fdt-compatible",
        ),
        ("vendor-kernel", {**NONE, "6.19-7.0": "kho-v1"}, "6.19-7.0", "fdt-compatible"),
        # kho-v1 fits two eras: the release picks between them.
        (
            "6.19.6",
            {**NONE, "6.19-7.0": "kho-v1", "7.1+": "kho-v1"},
            "6.19-7.0",
            "fdt-compatible",
        ),
        # No FDT (KHO disabled): the release alone.
        ("7.2.13-kho-b", NONE, "7.1+", "release"),
        # A newer compatible than known: the newest layout.
        (
            "7.4.0",
            {**NONE, "6.19-7.0": "kho-v5", "7.1+": "kho-v5"},
            "7.1+",
            "fdt-compatible",
        ),
    ],
)
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


def _pre_71_state(finalized: bool) -> object:
    """A 6.18-like KHO boot: kho-v1 FDTs, kho_in without the metadata copy."""
    from khobuild import kho_root_fdt

    from kho_drgn.fdt import decode_kho_fdt
    from kho_drgn.state import (
        Handover,
        KhoState,
        KhoStatus,
        _not_finalized,
        note_metadata_absent,
    )
    from kho_drgn.target import KhoIn, SymbolSource

    v1 = kho_root_fdt(
        [("memblock", 0x1000, 0)], "kho-v1", data_prop="fdt", size_prop=None
    )
    state = KhoState(SymbolSource.KALLSYMS, "6.18.5", KhoStatus.KEXEC, enabled=True)
    state.kho_in = KhoIn(0xE0D000, 0x1EBF0000, None, None, False)
    state.incoming = Handover("incoming", 0xE0D000, fdt=decode_kho_fdt(v1))
    if finalized:
        state.outgoing = Handover("outgoing", 0x1293000, fdt=decode_kho_fdt(v1))
    state.findings += _not_finalized(state, finalized)
    note_metadata_absent(state)
    return state


def test_metadata_absent_on_a_71_kernel() -> None:
    """A 7.1+ handover without kexec-metadata gets its own warning, and the
    kernel is not said to predate it: one finding or the other, never one
    made and then taken back."""
    from khobuild import kho_root_fdt

    from kho_drgn.fdt import decode_kho_fdt
    from kho_drgn.state import Handover, KhoState, KhoStatus, note_metadata_absent
    from kho_drgn.target import KhoIn, SymbolSource

    v4 = kho_root_fdt([("memblock", 0x1000, 64)], "kho-v4")
    state = KhoState(SymbolSource.KALLSYMS, "7.2.13", KhoStatus.KEXEC, enabled=True)
    state.kho_in = KhoIn(0xE0D000, 0x1EBF0000, "7.2.13", 1, True)
    state.incoming = Handover("incoming", 0xE0D000, fdt=decode_kho_fdt(v4))
    note_metadata_absent(state)
    codes = [f.code for f in state.all_findings()]
    assert codes == ["metadata.absent"]
    assert state.incoming.findings[0].where == "incoming"


@pytest.mark.parametrize("finalized", [True, False])
def test_pre_71_chain(finalized: bool) -> None:
    from kho_drgn.chain import build_chain, format_chain

    state = _pre_71_state(finalized)
    codes = [f.code for f in state.all_findings()]  # type: ignore[attr-defined]
    assert codes.count("metadata.predates") == 1 and "metadata.absent" not in codes
    assert ("kho.not-finalized" in codes) == (not finalized)
    lines = ["KHO: found kexec handover data. Will skip init for some devices"]
    chain = build_chain(state, lines)  # type: ignore[arg-type]
    assert (chain.kho_kexec, chain.kexec_count, chain.predates_metadata) == (
        True,
        None,
        True,
    )
    assert chain.source is not None and "found kexec handover data" in chain.source
    assert "log.boot-line-gone" not in [f.code for f in chain.findings]
    line = format_chain(chain, live=False)
    assert "6.18.5 [crashed, KHO kexec: yes, count unknown]" in line
    want = "nothing prepared (KHO not finalized)" if not finalized else "KHO finalized"
    assert want in line
