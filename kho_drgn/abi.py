"""The KHO ABI as a debugger sees it: names, layouts and constants.

Everything here is data taken from the kernel sources (see
``../shared/kho-abi-7.2.md`` and the README's "Data it reads"), kept apart
from the code that reads a target so that decoders stay pure and testable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
EXEC_FROM_RE = re.compile(r"KHO: exec from: (?P<release>.*) \(count (?P<count>\d+)\)$")


@dataclass(frozen=True)
class KhoAbi:
    """How one KHO ABI version lays out its root FDT."""

    compatible: str
    #: Property of a sub-node holding the physical address of its data.
    data_prop: str
    #: Property holding the data's size; ``None`` when the data is always an
    #: FDT whose header carries the size.
    size_prop: str | None
    #: Root property holding the physical address of the preserved-memory map.
    memory_map_prop: str
    #: ``"radix"`` (7.x radix tree) or ``"chunks"`` (older bitmap chunk lists).
    memory_map_format: str


KHO_V4 = KhoAbi(
    compatible="kho-v4",
    data_prop="preserved-data",
    size_prop="blob-size",
    memory_map_prop="preserved-memory-map",
    memory_map_format="radix",
)

KNOWN_ABIS: dict[str, KhoAbi] = {abi.compatible: abi for abi in (KHO_V4,)}


def newest_abi() -> KhoAbi:
    """The newest ABI this tool knows, used to read an unknown compatible."""
    return list(KNOWN_ABIS.values())[-1]


def abi_for_compatible(compatible: str | None) -> KhoAbi | None:
    """Return the ABI description for a root ``compatible`` string, if known."""
    if compatible is None:
        return None
    return KNOWN_ABIS.get(compatible)


@dataclass(frozen=True)
class MetadataLayout:
    """Field offsets of ``struct kho_kexec_metadata`` (packed)."""

    size: int
    version_offset: int
    release_offset: int
    release_size: int
    count_offset: int
    #: Where the layout came from: ``"dwarf"`` or ``"abi"`` (documented v1).
    source: str = "abi"


#: include/linux/kho/abi/kexec_handover.h: version u32, previous_release
#: char[__NEW_UTS_LEN + 1], kexec_count u32, __packed.
KEXEC_METADATA_V1 = MetadataLayout(
    size=73, version_offset=0, release_offset=4, release_size=65, count_offset=69
)
KEXEC_METADATA_VERSION = 1
#: The kernel refuses a blob smaller than this before looking at the version.
KEXEC_METADATA_MIN_SIZE = 4


@dataclass(frozen=True)
class KhoInLayout:
    """Offsets in ``struct kho_in`` used when there is no DWARF for it."""

    fdt_phys: int
    scratch_phys: int
    previous_release: int | None
    previous_release_size: int
    kexec_count: int | None


#: Linux 7.1+ (x86_64, 64-bit phys_addr_t): fdt_phys, scratch_phys,
#: previous_release[65], kexec_count.
KHO_IN_7_1 = KhoInLayout(
    fdt_phys=0,
    scratch_phys=8,
    previous_release=16,
    previous_release_size=65,
    kexec_count=84,
)

#: ``kho_out.fdt`` is the first member (a direct-map pointer) in 7.x.
KHO_OUT_FDT_OFFSET = 0
#: ``struct kho_scratch`` {phys_addr_t addr; phys_addr_t size;}
KHO_SCRATCH_ENTRY_SIZE = 16


def parse_release_version(release: str) -> tuple[int, int] | None:
    """Return (major, minor) of a kernel release string such as ``7.2.13-kho-b``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def kho_in_layout_for_release(release: str | None) -> KhoInLayout | None:
    """Pick the ``struct kho_in`` layout for a kernel release, without DWARF."""
    version = parse_release_version(release or "")
    if version is None or version < (7, 1):
        return None
    return KHO_IN_7_1
