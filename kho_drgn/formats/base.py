"""What every subtree format shares: the decoded view, the decoder context,
the format declaration, and the page reader each walk of a blob's pointers
uses (:mod:`kho_drgn.pages`).

Pure: no drgn.  Pointers inside a blob are followed only through the
context's ``read_phys(address, size)``, bounded and cycle-checked, so the same
decoders run on a dump (drgn), on debugfs files (no memory: pointers shown,
not followed) and on synthetic bytes in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from kho_drgn.abi import MetadataLayout
from kho_drgn.fdt import FdtError, FdtNode, parse_fdt
from kho_drgn.findings import Finding, error
from kho_drgn.pages import MAX_PHYS, PAGE_SIZE, PageReader, ReadPhys, Report

__all__ = (
    "MAX_ENTRIES",
    "MAX_PAGES",
    "MAX_PHYS",
    "PAGE_SIZE",
    "ByteOrder",
    "DecodeContext",
    "Decoder",
    "ReadPhys",
    "SubtreeFormat",
    "SubtreeView",
    "decode_fdt_blob",
    "fdt_u32",
    "fdt_u64",
    "hex_or_missing",
    "nested_fdt_invalid",
    "page_reader",
)

ByteOrder = Literal["little", "big"]

#: Entries listed at most per subtree (counts stay whole).
MAX_ENTRIES = 4096
#: Pages followed at most per subtree.
MAX_PAGES = 1024


@dataclass(eq=False)
class SubtreeView:
    """A subtree blob decoded: what kind it is and what it says."""

    name: str
    kind: str  # kexec-metadata, memblock, kho-test, luo, fdt, raw
    compatible: str | None
    size: int
    fields: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: The summary of the format that decoded it (set with the view).
    summarizer: Callable[[SubtreeView], str] | None = field(
        default=None, repr=False, compare=False
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "compatible": self.compatible,
            "size": self.size,
            "fields": self.fields,
            "entries": self.entries,
            "findings": [f.to_dict() for f in self.findings],
        }

    def summary(self) -> str:
        """One short line for a table cell, in its format's words."""
        if self.summarizer is None:
            return f"{self.kind}, {self.size} bytes"
        return self.summarizer(self)


class DecodeContext(NamedTuple):
    """What a decoder may use besides the blob."""

    byteorder: ByteOrder = "little"
    #: Reads target physical memory; None where there is none (debugfs).
    read_phys: ReadPhys | None = None
    #: The exceptions ``read_phys`` raises for memory not in the target.
    missing: tuple[type[BaseException], ...] = (OSError,)
    #: "incoming" or "outgoing": where findings are reported.
    where: str = ""
    #: ``struct kho_kexec_metadata`` from DWARF, when there is DWARF.
    metadata_layout: MetadataLayout | None = None


#: ``decode(name, blob, root, ctx)``: ``root`` is the parsed FDT of an FDT
#: blob, None for a blob in another encoding.
Decoder = Callable[[str, bytes, "FdtNode | None", DecodeContext], SubtreeView]


class SubtreeFormat(NamedTuple):
    """One client format of KHO subtrees, as its module declares it.

    A blob is matched by its root ``compatible`` (FDT blobs), by its first
    bytes (``magic``), or, for ``by_node_name`` formats, by the sub-node's
    name; ``node_names`` are the names the kernel gives such subtrees (a
    blob of another kind under one of them is reported).
    """

    kind: str
    decode: Decoder
    summary: Callable[[SubtreeView], str]
    node_names: tuple[str, ...] = ()
    compatibles: tuple[str, ...] = ()
    magic: tuple[bytes, ...] = ()
    #: Recognised by node name alone (a packed struct without a magic).
    by_node_name: bool = False
    #: For a blob under one of ``node_names`` that is neither this format's
    #: FDT nor its magic (e.g. LUO's luo_ser page, freed and reused at boot).
    unrecognised: Decoder | None = None


def page_reader(
    view: SubtreeView,
    ctx: DecodeContext,
    structure: str,
    max_pages: int = MAX_PAGES,
    report: Report | None = None,
) -> PageReader | None:
    """The shared bounded page reader (:class:`kho_drgn.pages.PageReader`)
    for one walk of ``structure`` in a blob's pointers, its findings on the
    view (or to ``report``); None where there is no memory to read
    (debugfs)."""
    if ctx.read_phys is None:
        return None
    return PageReader(
        ctx.read_phys,
        view.findings.append if report is None else report,
        structure,
        ctx.where,
        max_pages=max_pages,
        missing=ctx.missing,
    )


def nested_fdt_invalid(name: str, problem: object, where: str) -> Finding:
    """A subtree blob that starts like an FDT but libfdt rejects."""
    return error("subtree.fdt-invalid", f"{name}: nested FDT: {problem}", where)


def decode_fdt_blob(
    fmt: SubtreeFormat, name: str, blob: bytes, ctx: DecodeContext
) -> SubtreeView:
    """``blob`` decoded as ``fmt`` (an FDT format), or a view of its kind
    saying libfdt refused it: what a format's public decoder returns."""
    try:
        root = parse_fdt(blob)
    except FdtError as e:
        view = SubtreeView(name, fmt.kind, None, len(blob), summarizer=fmt.summary)
        view.findings.append(nested_fdt_invalid(name, e, ctx.where))
        return view
    return fmt.decode(name, blob, root, ctx)


def fdt_u64(node: FdtNode, prop: str, byteorder: ByteOrder) -> int | None:
    """A u64 property in the CPU's byte order (KHO's, not FDT cells)."""
    value = node.properties.get(prop)
    return (
        None if value is None or len(value) != 8 else int.from_bytes(value, byteorder)
    )


def fdt_u32(node: FdtNode, prop: str, byteorder: ByteOrder) -> int | None:
    value = node.properties.get(prop)
    return (
        None if value is None or len(value) != 4 else int.from_bytes(value, byteorder)
    )


def hex_or_missing(value: int | None) -> str:
    return "missing" if value is None else f"{value:#x}"
