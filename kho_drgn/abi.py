"""The KHO ABI as a debugger sees it: names, layouts and constants.

Everything here is data taken from the kernel sources (see
``../shared/kho-abi-7.2.md`` and the README's "Data it reads"), kept apart
from the code that reads a target so that decoders stay pure and testable.
"""

from __future__ import annotations

import re
from typing import NamedTuple

FDT_MAGIC = 0xD00DFEED
FDT_HEADER_SIZE = 40
#: The kernel allocates the root KHO FDT as one page; anything much larger in a
#: dump is damage, not data.  Reads are capped here so a corrupt totalsize
#: cannot make us read gigabytes.
ROOT_FDT_MAX_SIZE = 1 << 20
#: Upper bound for reading a subtree blob in full (LUO and test blobs are small).
BLOB_MAX_SIZE = 16 << 20

KEXEC_METADATA_NODE = "kexec-metadata"
KHO_PAGE_MAGIC = 0x4B484F50  # "KHOP" in page->private, on preserved pages

#: Boot-time log lines that the kernel prints with pr_fmt "KHO: ".
KHO_LOG_PREFIX = "KHO: "
EXEC_FROM_RE = re.compile(r"^KHO: exec from: (?P<release>.*) \(count (?P<count>\d+)\)$")


class KhoAbi(NamedTuple):
    """How one KHO ABI version lays out its root FDT.

    Versions and sources (kernel history, see the README's "Data it reads"):
    kho-v1 6.16..7.0, kho-v2 (7.1 merge window only), kho-v3 7.1, kho-v4 7.2.
    """

    compatible: str
    #: Property of a sub-node holding the physical address of its data.
    data_prop: str
    #: Property holding the data's size, or ``None`` when the data is always
    #: an FDT whose header carries the size (kho-v1).
    size_prop: str | None
    #: Whether the kernel rejects a sub-node without ``size_prop``.
    size_required: bool
    #: Root property holding the physical address of the preserved-memory map.
    memory_map_prop: str
    #: ``"radix"`` (radix tree, kho-v2+) or ``"chunks"`` (bitmap chunk lists).
    memory_map_format: str
    #: First kernel release with this ABI.
    since: str


KHO_V1 = KhoAbi(
    compatible="kho-v1",
    data_prop="fdt",
    size_prop=None,
    size_required=False,
    memory_map_prop="preserved-memory-map",
    memory_map_format="chunks",
    since="6.16",
)
#: kho-v2 only lived in the 7.1 merge window; some snapshots already wrote
#: ``blob-size``, so it is read when present.
KHO_V2 = KhoAbi(
    compatible="kho-v2",
    data_prop="preserved-data",
    size_prop="blob-size",
    size_required=False,
    memory_map_prop="preserved-memory-map",
    memory_map_format="radix",
    since="7.1-rc",
)
KHO_V3 = KhoAbi(
    compatible="kho-v3",
    data_prop="preserved-data",
    size_prop="blob-size",
    size_required=True,
    memory_map_prop="preserved-memory-map",
    memory_map_format="radix",
    since="7.1",
)
KHO_V4 = KhoAbi(
    compatible="kho-v4",
    data_prop="preserved-data",
    size_prop="blob-size",
    size_required=True,
    memory_map_prop="preserved-memory-map",
    memory_map_format="radix",
    since="7.2",
)

KNOWN_ABIS: dict[str, KhoAbi] = {
    abi.compatible: abi for abi in (KHO_V1, KHO_V2, KHO_V3, KHO_V4)
}


def newest_abi() -> KhoAbi:
    """The newest ABI this tool knows, used to read an unknown compatible."""
    return list(KNOWN_ABIS.values())[-1]


def abi_for_compatible(compatible: str | None) -> KhoAbi | None:
    """The ABI for a root ``compatible`` string: exact, or a known version
    followed by extra tokens (a proposed composite form, e.g. ``kho-v4,...``).
    """
    if compatible is None:
        return None
    exact = KNOWN_ABIS.get(compatible)
    if exact is not None:
        return exact
    match = re.match(r"(kho-v\d+)(?![\w])", compatible)
    return KNOWN_ABIS.get(match.group(1)) if match else None


class MetadataLayout(NamedTuple):
    """Field offsets of ``struct kho_kexec_metadata`` (packed)."""

    size: int
    version_offset: int
    release_offset: int
    release_size: int
    count_offset: int
    #: Where the layout came from: ``"dwarf"`` or ``"abi"`` (documented v1).
    source: str = "abi"


#: include/linux/kho/abi/kexec_metadata.h: version u32, previous_release
#: char[__NEW_UTS_LEN + 1], kexec_count u32, __packed.
KEXEC_METADATA_V1 = MetadataLayout(
    size=73, version_offset=0, release_offset=4, release_size=65, count_offset=69
)
KEXEC_METADATA_VERSION = 1
#: The kernel refuses a blob smaller than this before looking at the version.
KEXEC_METADATA_MIN_SIZE = 4


class KhoLayout(NamedTuple):
    """Offsets in ``struct kho_in``/``struct kho_out`` (x86_64, non-debug
    locks) for one era of kernels, used when there is no DWARF for them."""

    era: str
    in_fdt_phys: int
    in_scratch_phys: int
    #: ``previous_release[65]``/``kexec_count`` copies (7.1+), else None.
    in_previous_release: int | None
    in_kexec_count: int | None
    #: Offset of the outgoing FDT pointer in ``kho_out``.
    out_fdt: int
    #: True when that pointer is a ``struct page *`` (``kho_out.ser.fdt``,
    #: 6.16..6.18), False when it is the FDT's direct-map address.
    out_fdt_is_page: bool
    in_previous_release_size: int = 65
    #: Offset of ``kho_out.finalized`` where the outgoing FDT exists only
    #: once KHO was finalized (6.16..6.18), else None.
    out_finalized: int | None = None


#: Eras by first (major, minor); the last one not after the release applies.
KHO_LAYOUTS: tuple[tuple[tuple[int, int], KhoLayout], ...] = (
    # kho_in {dentry *dir; fdt_phys; scratch_phys; ...}; kho_out {notifier
    # head (48); dentry *dir; mutex (32); ser {struct page *fdt; ...}}.  The
    # 0/8/80 layout that dropping the notifiers and debugfs dir gave lived
    # only inside the 6.19 merge window.
    # ser {page *fdt; list_head; dentry *; kho_mem_track (16); chunk *}: 56
    # bytes, then ``bool finalized`` at 144 (measured on 6.18.5 with DWARF).
    ((6, 16), KhoLayout("6.16-6.18", 8, 16, None, None, 88, True, out_finalized=144)),
    ((6, 19), KhoLayout("6.19-7.0", 0, 8, None, None, 0, False)),
    ((7, 1), KhoLayout("7.1+", 0, 8, 16, 84, 0, False)),
)
KHO_LAYOUT_7_1 = KHO_LAYOUTS[-1][1]

#: ``struct kho_scratch`` {phys_addr_t addr; phys_addr_t size;}
KHO_SCRATCH_ENTRY_SIZE = 16


def parse_release_version(release: str) -> tuple[int, int] | None:
    """Return (major, minor) of a kernel release string such as ``7.2.13-kho-b``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def kho_layout_for_release(release: str | None) -> KhoLayout | None:
    """The ``kho_in``/``kho_out`` layout of a kernel release, without DWARF.

    None for releases before KHO existed (6.16) or that cannot be parsed.
    """
    version = parse_release_version(release or "")
    if version is None:
        return None
    layout = None
    for first, candidate in KHO_LAYOUTS:
        if version >= first:
            layout = candidate
    return layout


#: Which ``kho_in``/``kho_out`` eras each root compatible can come from.
ERAS_BY_COMPATIBLE: dict[str, tuple[str, ...]] = {
    "kho-v1": ("6.16-6.18", "6.19-7.0"),
    "kho-v2": ("7.1+",),
    "kho-v3": ("7.1+",),
    "kho-v4": ("7.1+",),
}


class EraDecision(NamedTuple):
    """The layout chosen for a kernel without DWARF, and the facts behind it."""

    layout: KhoLayout
    #: "dwarf", "fdt-compatible", "release" or "default".
    chosen_by: str
    #: The facts, in words, e.g. "root FDT kho-v1 at kho_in+8".
    facts: tuple[str, ...] = ()
    #: Set when the facts disagree or nothing decided (a finding's text).
    problem: str | None = None


def layout_by_era(era: str) -> KhoLayout:
    return next(layout for _, layout in KHO_LAYOUTS if layout.era == era)


def decide_kho_era(release: str | None, probes: dict[str, str | None]) -> EraDecision:
    """Pick the ``kho_in``/``kho_out`` layout from the dump's own facts. Pure.

    :param probes: era -> the root FDT compatible found through that era's
        offsets (``None``: no FDT there).  A compatible that the era can
        carry is the strongest fact short of DWARF; the release decides
        between eras the FDT cannot tell apart, or alone when no FDT is found.
    """
    by_release = kho_layout_for_release(release)
    facts = [f"release {release!r}" + ("" if by_release else " (not parseable)")]
    fitting = []
    for era, compatible in probes.items():
        if compatible is None:
            continue
        abi = abi_for_compatible(compatible)
        known = abi.compatible if abi is not None else None
        eras = ERAS_BY_COMPATIBLE.get(known or "", ())
        facts.append(f"root FDT {compatible!r} through the {era} offsets")
        if era in eras:
            fitting.append(era)
        elif known is None and era == KHO_LAYOUTS[-1][1].era:
            fitting.append(era)  # a newer compatible: the newest layout
    if fitting:
        if by_release is not None and by_release.era in fitting:
            return EraDecision(by_release, "fdt-compatible", tuple(facts))
        problem = None
        if by_release is not None:
            problem = (
                f"release {release!r} implies the {by_release.era} layout, but "
                f"the root FDT is found only through the {fitting[0]} offsets: "
                "using those"
            )
        return EraDecision(
            layout_by_era(fitting[0]), "fdt-compatible", tuple(facts), problem
        )
    if by_release is not None:
        return EraDecision(by_release, "release", tuple(facts))
    newest = KHO_LAYOUTS[-1][1]
    return EraDecision(
        newest,
        "default",
        tuple(facts),
        f"no DWARF for the KHO structs, no root FDT found and no known layout "
        f"for release {release!r}; using the {newest.era} layout",
    )
