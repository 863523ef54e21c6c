"""Cross-checks: wherever two sources of one fact are compared, in one place.

Each check is a function of finished data -- the decoded state, the chain
worked out from it, the kernel log, the preserved-memory maps -- that
returns findings; none reads the target or changes what it is given.  The
decoders report only what their own bytes say; whether the incoming blob
agrees with ``kho_in``, the outgoing count with the incoming one, the boot
line with both, each blob with the maps, is said here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kho_drgn.findings import Finding, error, info, warning
from kho_drgn.memmap import PAGE_SIZE, MemoryMapSummary, PhysRange
from kho_drgn.state import Handover, KhoState, KhoStatus

if TYPE_CHECKING:
    from kho_drgn.chain import BootLine, KexecChain
    from kho_drgn.fdt import KhoFdt
    from kho_drgn.preserved import MagicScan

__all__ = (
    "KERNEL_COMPLAINTS",
    "check_blobs_preserved",
    "check_boot_line",
    "check_debugfs_blob",
    "check_kernel_complaints",
    "check_kho_in_copy",
    "check_outgoing",
    "check_scratch",
    "compare_with_magic",
    "covered",
)


def check_kho_in_copy(state: KhoState, follows_copy: bool) -> list[Finding]:
    """The incoming blob against the copy the kernel made of it at boot."""
    kho_in = state.kho_in
    md = state.incoming.metadata if state.incoming else None
    if kho_in is None or not kho_in.has_metadata_copy or md is None or not md.valid:
        return []
    if kho_in.previous_release is None:
        return []  # the copy is unreadable itself: its own finding says so
    if state.status is not KhoStatus.KEXEC:
        return []
    if (md.previous_release, md.kexec_count) == (
        kho_in.previous_release,
        kho_in.kexec_count,
    ):
        return []
    return [
        error(
            "check.blob-vs-kho-in",
            f"incoming kexec-metadata blob says {md.previous_release!r} count "
            f"{md.kexec_count}, but the copy the kernel made at boot (kho_in) "
            f"says {kho_in.previous_release!r} count {kho_in.kexec_count}: "
            "one of them changed after boot; the chain follows "
            + (
                "the copy, which the boot line and outgoing count bear out "
                "at least as well"
                if follows_copy
                else "the blob, which the boot line and outgoing count bear out"
            ),
            "incoming",
        )
    ]


def check_outgoing(state: KhoState, chain: KexecChain) -> list[Finding]:
    """Outgoing metadata: count is incoming + 1, release is the running one."""
    md = state.outgoing.metadata if state.outgoing else None
    if md is None or not md.valid:
        return []
    findings = []
    if chain.kexec_count is not None and md.kexec_count != chain.kexec_count + 1:
        findings.append(
            error(
                "check.outgoing-count",
                f"outgoing kexec_count is {md.kexec_count}, expected "
                f"{chain.kexec_count + 1} (incoming {chain.kexec_count} + 1)",
                "outgoing",
            )
        )
    if state.release is not None and md.previous_release != state.release:
        findings.append(
            error(
                "check.outgoing-release",
                f"outgoing previous_release is {md.previous_release!r}, but the "
                f"running kernel is {state.release!r}",
                "outgoing",
            )
        )
    return findings


def check_boot_line(
    chain: KexecChain,
    boot_line: BootLine | None,
    log_lines: list[str] | None,
    log_wrapped: bool,
    predates_metadata: bool = False,
) -> list[Finding]:
    """The boot log line against the decoded metadata.

    A kernel that predates kexec-metadata (7.1) never prints the line: its
    absence is then no finding.
    """
    if log_lines is None:
        return [
            info(
                "log.unavailable",
                "no kernel log to check the boot line against (unreadable in "
                "the dump, or not read: debugfs)",
                "log",
            )
        ]
    if boot_line is None:
        if chain.status is not KhoStatus.KEXEC or predates_metadata:
            return []
        if log_wrapped:
            why = "the log buffer wrapped and the boot records are gone"
        else:
            why = "the log is complete, so the kernel did not print it"
        return [info("log.boot-line-gone", f"no 'KHO: exec from:' line: {why}", "log")]
    if chain.status is KhoStatus.COLD_BOOT:
        return [
            warning(
                "check.boot-line-on-cold-boot",
                f"log has {boot_line.text!r} but there is no incoming handover",
                "log",
            )
        ]
    if (boot_line.release, boot_line.kexec_count) != (
        chain.previous_release,
        chain.kexec_count,
    ):
        return [
            error(
                "check.boot-line",
                f"boot line says {boot_line.release!r} count "
                f"{boot_line.kexec_count}, the handover data says "
                f"{chain.previous_release!r} count {chain.kexec_count}",
                "log",
            )
        ]
    return []


#: What the kernel logs when it refuses or cannot use handover data.
KERNEL_COMPLAINTS = (
    "KHO: kexec-metadata",
    "KHO: setup:",
    "KHO: disabling KHO revival",
    "broken KHO subnode",
    "KHO: failed to",
)


def check_kernel_complaints(lines: list[str]) -> list[Finding]:
    """KHO warnings the kernel itself printed, each as a finding."""
    return [
        warning("log.kernel-warning", f"the kernel logged: {line.strip()}", "log")
        for line in lines
        if any(marker in line for marker in KERNEL_COMPLAINTS)
    ]


def check_scratch(state: KhoState) -> list[Finding]:
    """After a KHO boot the kernel adopts the scratch array it was handed."""
    scratch, kho_in = state.scratch, state.kho_in
    if (
        state.status is not KhoStatus.KEXEC
        or scratch is None
        or kho_in is None
        or not kho_in.scratch_phys
        or scratch.array_phys is None
        or scratch.array_phys == kho_in.scratch_phys
    ):
        return []
    return [
        warning(
            "scratch.not-adopted",
            f"kho_scratch is at physical {scratch.array_phys:#x}, not at the "
            f"array the previous kernel handed over ({kho_in.scratch_phys:#x})",
            "scratch",
        )
    ]


def compare_with_magic(
    summary: MemoryMapSummary | None, scan: MagicScan, where: str = "incoming"
) -> tuple[int, int, list[Finding]]:
    """Tagged blocks vs the incoming map: (tagged not in map, restored, findings).

    Pure.  Every tagged block must be a block of the incoming map (same
    address and order); map blocks without the tag were restored.
    """
    findings: list[Finding] = []
    usable = summary is not None and summary.complete and summary.blocks > 0
    if not usable:
        if scan.tagged_count:
            findings.append(
                info(
                    "memmap.from-page-magic",
                    f"the incoming map cannot be walked; {scan.tagged_count} "
                    f"block(s), {scan.tagged_pages} page(s), still carry "
                    "KHO_PAGE_MAGIC: preserved by the previous kernel and not "
                    "restored yet",
                    where,
                )
            )
        return 0, 0, findings
    assert summary is not None
    not_in_map = [
        (phys, order)
        for phys, order in scan.tagged.items()
        if not covered(summary.ranges, phys, PAGE_SIZE << order)
    ]
    restored = max(0, summary.blocks - (scan.tagged_count - len(not_in_map)))
    if not_in_map:
        phys, order = not_in_map[0]
        findings.append(
            error(
                "memmap.magic-not-in-map",
                f"{len(not_in_map)} page(s) carry KHO_PAGE_MAGIC but are not in "
                f"the incoming map (first {phys:#x}, order {order}): the map "
                "and the struct pages disagree",
                where,
            )
        )
    return len(not_in_map), restored, findings


def covered(ranges: list[PhysRange], start: int, size: int) -> bool:
    """Whether ``[start, start + size)`` lies inside one of the sorted ranges."""
    lo, hi = 0, len(ranges)
    while lo < hi:
        mid = (lo + hi) // 2
        if ranges[mid].end <= start:
            lo = mid + 1
        else:
            hi = mid
    return (
        lo < len(ranges)
        and ranges[lo].start <= start
        and start + size <= ranges[lo].end
    )


def check_blobs_preserved(
    handover: Handover, summary: MemoryMapSummary | None
) -> list[Finding]:
    """Every outgoing blob must be preserved memory, or the next kernel loses it."""
    fdt = handover.fdt
    if (
        fdt is None
        or summary is None
        or not summary.complete
        or summary.ranges_truncated
    ):
        return []
    findings = []
    for subtree in fdt.subtrees:
        if subtree.phys is None or not subtree.size:
            continue
        if not covered(summary.ranges, subtree.phys, subtree.size):
            findings.append(
                warning(
                    "memmap.blob-not-preserved",
                    f"sub-node {subtree.name!r}: its data at {subtree.phys:#x} "
                    f"(+{subtree.size}) is not in the {handover.direction} "
                    "preserved-memory map; the next kernel cannot rely on it",
                    handover.direction,
                )
            )
    return findings


def check_debugfs_blob(
    fdt: KhoFdt | None, direction: str, name: str, size: int
) -> list[Finding]:
    """A debugfs blob file must be as long as the root FDT's ``blob-size``."""
    if fdt is None:
        return []
    ref = fdt.subtree(name)
    if ref is None:
        return [
            warning(
                "debugfs.subtree-not-in-fdt",
                f"sub_fdts/{name} has no node in the {direction} FDT",
                direction,
            )
        ]
    if ref.size is not None and ref.size != size:
        return [
            warning(
                "debugfs.blob-size-mismatch",
                f"sub_fdts/{name} has {size} bytes, the FDT's blob-size is {ref.size}",
                direction,
            )
        ]
    return []
