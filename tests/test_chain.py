"""Chain building, cross-checks and the one-line rendering, without drgn targets."""

from __future__ import annotations

from khobuild import kho_root_fdt, metadata_blob

from kho_drgn.chain import KHO_IN_OVER_BLOB, build_chain, find_boot_line
from kho_drgn.fdt import decode_kho_fdt
from kho_drgn.metadata import decode_kexec_metadata
from kho_drgn.report import KhoReport, TargetInfo
from kho_drgn.state import Handover, KhoState, KhoStatus
from kho_drgn.target import KhoIn, SymbolSource

BOOT_LINE = "KHO: exec from: 7.2.13-kho-a (count 2)"


def handover(direction: str, release: bytes, count: int, version: int = 1) -> Handover:
    fdt = decode_kho_fdt(kho_root_fdt([("kexec-metadata", 0x1000, 73)]))
    md = decode_kexec_metadata(metadata_blob(release, count, version), where=direction)
    return Handover(direction, fdt_phys=0x2000, fdt=fdt, metadata=md)


def kexec_state(
    in_release: bytes = b"7.2.13-kho-a",
    in_count: int = 2,
    out_release: bytes = b"7.2.13-kho-b",
    out_count: int = 3,
    copy: tuple[str, int] | None = ("7.2.13-kho-a", 2),
    running: str = "7.2.13-kho-b",
    in_version: int = 1,
) -> KhoState:
    kho_in = KhoIn(
        fdt_phys=0x2000,
        scratch_phys=0x3000,
        previous_release=copy[0] if copy else "",
        kexec_count=copy[1] if copy else 0,
        has_metadata_copy=True,
    )
    return KhoState(
        symbols=SymbolSource.DWARF,
        release=running,
        status=KhoStatus.KEXEC,
        enabled=True,
        kho_in=kho_in,
        incoming=handover("incoming", in_release, in_count, in_version),
        outgoing=handover("outgoing", out_release, out_count),
    )


def line(state: KhoState, log: list[str] | None = None, kind: str = "vmcore") -> str:
    chain = build_chain(state, log)
    report = KhoReport(TargetInfo(kind, None, SymbolSource.DWARF), state, chain, None)
    return report.chain_line


def codes(state: KhoState, log: list[str] | None = None) -> list[str]:
    return [f.code for f in build_chain(state, log).findings]


def test_consistent_kexec_chain() -> None:
    state = kexec_state()
    chain = build_chain(state, [BOOT_LINE])
    assert (chain.previous_release, chain.kexec_count) == ("7.2.13-kho-a", 2)
    assert (chain.next_release, chain.next_kexec_count) == ("7.2.13-kho-b", 3)
    assert chain.findings == []
    assert line(state, [BOOT_LINE]) == (
        "cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b "
        "[crashed, kexec #2] -> next: 7.2.13-kho-b, count 3"
    )


def test_first_kexec_and_long_chains_and_live() -> None:
    first = kexec_state(in_count=1, out_count=2, copy=("7.2.13-kho-a", 1))
    assert line(first, []).startswith(
        "cold boot -> 7.2.13-kho-a -> 7.2.13-kho-b [crashed, kexec #1]"
    )
    long = kexec_state(in_count=5, out_count=6, copy=("7.2.13-kho-a", 5))
    assert "cold boot -> (4 kexecs) -> 7.2.13-kho-a" in line(long, [])
    assert "[running, kexec #2]" in line(kexec_state(), [BOOT_LINE], kind="live")


def test_cold_boot() -> None:
    state = KhoState(
        SymbolSource.DWARF,
        "7.2.13-kho-b",
        KhoStatus.COLD_BOOT,
        True,
        outgoing=handover("outgoing", b"7.2.13-kho-b", 1),
    )
    assert codes(state, []) == []
    assert line(state, []) == (
        "cold boot -> 7.2.13-kho-b [crashed, cold boot] -> next: 7.2.13-kho-b, count 1"
    )
    assert codes(state, [BOOT_LINE]) == ["check.boot-line-on-cold-boot"]


def test_blob_changed_after_boot() -> None:
    """Blob and boot-time copy disagree: the chain follows the one the boot
    line and the outgoing count bear out, the copy on a tie."""
    state = kexec_state(copy=("7.2.13-kho-z", 2))
    assert codes(state, [BOOT_LINE]) == ["check.blob-vs-kho-in"]
    chain = build_chain(state, [BOOT_LINE])
    assert chain.source == "incoming kexec-metadata blob"
    assert chain.previous_release == "7.2.13-kho-a"

    damaged_blob = kexec_state(in_count=5)  # copy a/2, outgoing 3, boot line a/2
    chain = build_chain(damaged_blob, [BOOT_LINE])
    assert chain.source == KHO_IN_OVER_BLOB and chain.kexec_count == 2
    assert [f.code for f in chain.findings] == ["check.blob-vs-kho-in"]
    assert "follows the copy" in chain.findings[0].message
    assert line(damaged_blob, [BOOT_LINE]) == (
        "cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b [crashed, kexec #2] "
        "-> next: 7.2.13-kho-b, count 3 (!) 1 cross-check failed: see findings"
    )

    tie = build_chain(kexec_state(in_count=5, out_count=9), None)
    assert tie.source == KHO_IN_OVER_BLOB and tie.kexec_count == 2


def test_outgoing_count_and_release_checks() -> None:
    assert codes(kexec_state(out_count=7), [BOOT_LINE]) == ["check.outgoing-count"]
    assert codes(kexec_state(out_release=b"7.2.13-kho-a"), [BOOT_LINE]) == [
        "check.outgoing-release"
    ]


def test_boot_line_mismatch_gone_and_unreadable() -> None:
    other = "KHO: exec from: 6.99.0 (count 9)"
    assert codes(kexec_state(), [other]) == ["check.boot-line"]
    assert codes(kexec_state(), ["unrelated"]) == ["log.boot-line-gone"]
    gone = build_chain(kexec_state(), ["unrelated"], log_wrapped=True).findings[0]
    assert "wrapped" in gone.message
    assert codes(kexec_state(), None) == ["log.unavailable"]


def test_invalid_incoming_blob_falls_back_to_kho_in_copy() -> None:
    state = kexec_state(in_version=2)
    chain = build_chain(state, [BOOT_LINE])
    assert chain.source is not None and "kho_in" in chain.source
    assert (chain.previous_release, chain.kexec_count) == ("7.2.13-kho-a", 2)


def test_disabled_states() -> None:
    off = KhoState(SymbolSource.DWARF, "7.2.13-kho-b", KhoStatus.DISABLED, False)
    assert "KHO disabled" in line(off, [])
    assert build_chain(off, []).findings == []
    nokho = KhoState(SymbolSource.DWARF, "6.1.0", KhoStatus.NOT_BUILT)
    assert "KHO not built in" in line(nokho, [])
    after = KhoState(
        SymbolSource.DWARF,
        "7.2.13-kho-b",
        KhoStatus.DISABLED_WITH_INCOMING,
        False,
        incoming=handover("incoming", b"7.2.13-kho-a", 2),
    )
    assert line(after, []) == (
        "cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b "
        "[crashed, kexec #2, KHO off] -> next: nothing (KHO disabled)"
    )


def test_find_boot_line() -> None:
    bl = find_boot_line(["x", BOOT_LINE + "\n", "y"])
    assert bl is not None and (bl.release, bl.kexec_count) == ("7.2.13-kho-a", 2)
    assert find_boot_line(["KHO: exec from: weird (count x)"]) is None


def test_kernel_warnings_become_findings() -> None:
    lines = [BOOT_LINE, "KHO: kexec-metadata version 2 not supported (expected 1)"]
    assert codes(kexec_state(), lines) == ["log.kernel-warning"]


def test_findings_most_severe_first_each_once() -> None:
    from kho_drgn.findings import error, info, most_severe_first, warning

    a, b, c, d = info("i", "x"), warning("w", "x"), error("e1", "x"), error("e2", "x")
    assert most_severe_first([a, b, c, a, d, b]) == [c, d, b, a]


def zeroed_kho_in_state(out_count: int = 3, unreadable: bool = False) -> KhoState:
    """kho_in zeroed (as on a cold boot) or unreadable; kho_out intact."""
    from kho_drgn.findings import error
    from kho_drgn.state import KHO_IN_UNREADABLE

    state = KhoState(
        SymbolSource.DWARF,
        "7.2.13-kho-b",
        KhoStatus.COLD_BOOT,
        True,
        kho_in=None if unreadable else KhoIn(0, 0, "", 0, True),
        outgoing=handover("outgoing", b"7.2.13-kho-b", out_count),
    )
    if unreadable:
        state.findings.append(error(KHO_IN_UNREADABLE, "kho_in is not in the dump"))
    return state


def test_zeroed_kho_in_boot_line_and_outgoing_count_agree() -> None:
    """kho_in zeroed reads as a cold boot; the boot line (count 2) and the
    outgoing count 3 agree on a KHO kexec: they give the chain."""
    from kho_drgn.chain import BOOT_LINE_OVER_KHO_IN

    state = zeroed_kho_in_state()
    chain = build_chain(state, [BOOT_LINE])
    assert (chain.previous_release, chain.kexec_count) == ("7.2.13-kho-a", 2)
    assert chain.source == BOOT_LINE_OVER_KHO_IN
    assert [f.code for f in chain.findings] == ["check.kho-in-vs-log"]
    assert "zeroed" in chain.findings[0].message
    assert line(state, [BOOT_LINE]) == (
        "cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b [crashed, kexec #2] "
        "-> next: 7.2.13-kho-b, count 3 (!) 1 cross-check failed: see findings"
    )
    # They disagree: nothing to overrule kho_in with; the old checks say why.
    other = zeroed_kho_in_state(out_count=7)
    assert build_chain(other, [BOOT_LINE]).kexec_count == 0
    assert set(codes(other, [BOOT_LINE])) == {
        "check.outgoing-count",
        "check.boot-line-on-cold-boot",
    }
    # A real cold boot (no boot line, outgoing count 1) stays one.
    cold = zeroed_kho_in_state(out_count=1)
    assert codes(cold, []) == [] and "[crashed, cold boot]" in line(cold, [])


def test_unreadable_kho_in() -> None:
    unreadable = zeroed_kho_in_state(unreadable=True)
    chain = build_chain(unreadable, [BOOT_LINE])
    assert (chain.previous_release, chain.kexec_count) == ("7.2.13-kho-a", 2)
    assert "could not be read" in chain.findings[0].message
    # Without a boot line only the outgoing count is left: kexec #2 from ?.
    chain = build_chain(unreadable, [])
    assert (chain.previous_release, chain.kexec_count) == (None, 2)
    assert chain.source == "outgoing count (kho_in unreadable)"
    report = KhoReport(
        TargetInfo("vmcore", None, SymbolSource.DWARF),
        unreadable,
        chain,
        None,
        list(unreadable.all_findings()),
    )
    assert report.chain_line.startswith(
        "cold boot -> (1 kexec) -> (unknown previous kernel) -> 7.2.13-kho-b "
        "[crashed, kexec #2]"
    )
    assert report.chain_line.endswith("(!) 1 error finding: see findings")


def test_kho_variables_zeroed_but_log_found_handover() -> None:
    from kho_drgn.chain import LOG_OVER_KHO_VARIABLES

    off = KhoState(SymbolSource.DWARF, "7.2.13-kho-b", KhoStatus.DISABLED, True)
    found = "KHO: found kexec handover data."
    chain = build_chain(off, [found, BOOT_LINE])
    assert (chain.previous_release, chain.kexec_count) == ("7.2.13-kho-a", 2)
    assert chain.source == LOG_OVER_KHO_VARIABLES
    assert [f.code for f in chain.findings] == ["check.kho-vars-vs-log"]
    assert line(off, [found, BOOT_LINE]) == (
        "cold boot -> (1 kexec) -> 7.2.13-kho-a -> 7.2.13-kho-b [crashed, kexec #2] "
        "-> next: (no valid outgoing metadata) (!) 1 cross-check failed: see findings"
    )
    only_found = build_chain(off, [found])
    assert only_found.kexec_count is None
    assert "check.kho-vars-vs-log" in [f.code for f in only_found.findings]
    assert "kexec #?" in line(off, [found])


def test_any_error_finding_marks_the_chain_line() -> None:
    from kho_drgn.chain import error_mark
    from kho_drgn.findings import error, warning

    state = kexec_state(in_version=2)  # metadata.unknown-version, chain from kho_in
    chain = build_chain(state, [BOOT_LINE])
    report = KhoReport(
        TargetInfo("vmcore", None, SymbolSource.DWARF),
        state,
        chain,
        None,
        list(state.all_findings()) + chain.findings,
    )
    assert report.chain_line.endswith(" (!) 1 error finding: see findings")
    check = error("check.x", "m")
    assert error_mark([warning("w", "m")]) == ""
    assert error_mark([check, check, error("e", "m")]) == (
        " (!) 1 cross-check failed, 1 other error: see findings"
    )
