"""One direction of handover, decoded the same way whatever held its bytes.

A dump or a live kernel (physical memory through drgn, :mod:`kho_drgn.state`)
and a debugfs tree (files, :mod:`kho_drgn.debugfs`) only fetch bytes: the
root FDT and each subtree's blob.  :func:`decode_handover` turns them into
one :class:`Handover` -- the root FDT, the ``kexec-metadata`` blob, every
other subtree decoded, and what is wrong with them -- so the chain, the
checks, the JSON and the text are one code path for both.

Pure: no drgn.  Where the bytes come from is the caller's ``fetch_blob``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from kho_drgn.abi import (
    BLOB_MAX_SIZE,
    FDT_HEADER_SIZE,
    KEXEC_METADATA_NODE,
    KEXEC_METADATA_V1,
    MetadataLayout,
)
from kho_drgn.fdt import (
    FdtError,
    KhoFdt,
    SubtreeRef,
    decode_kho_fdt,
    fdt_header_totalsize,
    fdt_invalid,
    subtree_broken,
)
from kho_drgn.findings import Finding, error, memory_missing, warning
from kho_drgn.formats.base import ByteOrder, ReadPhys
from kho_drgn.metadata import KexecMetadata, decode_kexec_metadata
from kho_drgn.subtrees import SubtreeView, decode_subtree

__all__ = (
    "METADATA_READ_LIMIT",
    "BlobMissing",
    "FetchBlob",
    "Handover",
    "decode_handover",
)

#: A kexec-metadata blob larger than a page is damage: read no more than this.
METADATA_READ_LIMIT = 4096


class BlobMissing(Exception):
    """A blob the source should hold is not there (memory not in the dump).

    ``str(e)`` completes "its data ...", e.g. "at physical 0x248000 (73
    bytes) is not in the dump".
    """


#: ``fetch_blob(ref, size)``: the first ``size`` bytes of ``ref``'s blob (or
#: fewer, if the source holds fewer); None when the source does not show that
#: blob at all (nothing to report, or reported by the source itself).
#: :raises BlobMissing: the source should hold the bytes and does not.
FetchBlob = Callable[[SubtreeRef, int], "bytes | None"]


@dataclass(eq=False)
class Handover:
    """One direction of handover: a root FDT, its subtrees and metadata."""

    direction: str  # "incoming" or "outgoing"
    fdt_phys: int | None
    fdt_virt: int | None = None
    fdt: KhoFdt | None = None
    metadata: KexecMetadata | None = None
    #: Every other subtree's blob, decoded (kexec-metadata is ``metadata``).
    views: list[SubtreeView] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: Subtrees the source holds that the root FDT does not name, or all of
    #: them when there is no root FDT (debugfs ``sub_fdts`` files; a KHO
    #: booted 7.2 kernel has no ``out/fdt``).
    extra_subtrees: list[SubtreeRef] = field(default_factory=list)
    #: debugfs: the size of the ``fdt`` file, and the size its header
    #: declares (larger when 7.2 left the file truncated); None elsewhere.
    fdt_file_size: int | None = None
    fdt_totalsize: int | None = None

    @property
    def subtrees(self) -> list[SubtreeRef]:
        """The root FDT's sub-nodes, then :attr:`extra_subtrees`."""
        return [*(self.fdt.subtrees if self.fdt else ()), *self.extra_subtrees]

    def subtree(self, name: str) -> SubtreeRef | None:
        """The subtree called ``name``, if the handover has one."""
        return next((s for s in self.subtrees if s.name == name), None)

    def all_findings(self) -> Iterator[Finding]:
        yield from self.findings
        if self.fdt is not None:
            yield from self.fdt.findings
        for subtree in self.subtrees:
            yield from subtree.findings
        if self.metadata is not None:
            yield from self.metadata.findings
        for view in self.views:
            yield from view.findings

    def view(self, name: str) -> SubtreeView | None:
        """The decoded subtree called ``name``, if it was read."""
        return next((v for v in self.views if v.name == name), None)


def decode_handover(
    direction: str,
    root: bytes | None,
    fetch_blob: FetchBlob,
    byteorder: ByteOrder = "little",
    *,
    metadata_layout: MetadataLayout = KEXEC_METADATA_V1,
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
    root_what: str | None = None,
    fdt_phys: int | None = None,
    fdt_virt: int | None = None,
    extra: Sequence[SubtreeRef] = (),
    findings: Iterable[Finding] = (),
) -> Handover:
    """Decode one direction of handover from the bytes its source fetched.

    :param root: the root FDT's bytes; None when the source has none (its
        finding, if any, is in ``findings``).
    :param fetch_blob: the source's blobs (see :data:`FetchBlob`).
    :param metadata_layout: ``struct kho_kexec_metadata`` (DWARF or the ABI).
    :param read_phys: target memory, for the pointers inside blobs (None
        where there is none: debugfs); ``missing``: what it raises for
        memory not in the target.
    :param root_what: the root FDT in words, for its findings.
    :param extra: subtrees the source holds besides the root FDT's sub-nodes
        (those the FDT names are dropped): debugfs files.
    :param findings: what the source already found (root not readable...).
    """
    handover = Handover(direction, fdt_phys, fdt_virt, findings=list(findings))
    if root is not None:
        try:
            handover.fdt = decode_kho_fdt(root, byteorder, direction)
        except FdtError as e:
            what = root_what or f"{direction} root FDT"
            handover.findings.append(fdt_invalid(what, e, direction))
    named = {ref.name for ref in handover.subtrees}
    handover.extra_subtrees = [ref for ref in extra if ref.name not in named]

    for ref in handover.fdt.subtrees if handover.fdt else ():
        if ref.size is None and ref.phys is not None and not ref.findings:
            ref.size = _sub_fdt_size(ref, fetch_blob, direction, handover.findings)
        if ref.size is not None and ref.size > BLOB_MAX_SIZE:
            handover.findings.append(
                warning(
                    "fdt.blob-size-implausible",
                    f"sub-node {ref.name!r} declares blob-size {ref.size}",
                    direction,
                )
            )
    metadata_ref = handover.subtree(KEXEC_METADATA_NODE)
    if metadata_ref is not None:
        handover.metadata = _metadata(
            metadata_ref,
            fetch_blob,
            byteorder,
            metadata_layout,
            direction,
            handover.findings,
        )
    # A root FDT without it: kho_drgn.state.note_metadata_absent decides, once
    # both handovers are decoded, between metadata.absent and metadata.predates.
    for ref in handover.subtrees:
        if ref.name == KEXEC_METADATA_NODE or ref.size is None:
            continue
        size = min(ref.size, BLOB_MAX_SIZE)
        try:
            blob = fetch_blob(ref, size)
        except BlobMissing as e:
            handover.findings.append(
                memory_missing(f"sub-node {ref.name!r}: its data {e}", direction)
            )
            continue
        if blob is not None:
            handover.views.append(
                decode_subtree(
                    ref.name,
                    blob,
                    byteorder,
                    read_phys=read_phys,
                    missing=missing,
                    where=direction,
                )
            )
    return handover


def _metadata(
    ref: SubtreeRef,
    fetch_blob: FetchBlob,
    byteorder: ByteOrder,
    layout: MetadataLayout,
    where: str,
    findings: list[Finding],
) -> KexecMetadata | None:
    """The ``kexec-metadata`` blob, decoded; None (with a finding when the
    source lacks bytes it should hold) when it cannot be had."""
    if ref.size is None:
        return None
    size = ref.size
    missing = None
    try:
        blob = fetch_blob(ref, min(size, METADATA_READ_LIMIT))
    except BlobMissing as e:
        blob, missing = None, e
    if blob is None and missing is None:
        return None  # not shown by the source
    if size > METADATA_READ_LIMIT:
        findings.append(
            error(
                "metadata.size-implausible",
                f"kexec-metadata blob-size {size} is larger than a page; "
                f"reading only the first {METADATA_READ_LIMIT} bytes",
                where,
            )
        )
    if blob is None:
        findings.append(memory_missing(f"kexec-metadata blob {missing}", where))
        return None
    return decode_kexec_metadata(blob, byteorder, layout, blob_size=size, where=where)


def _sub_fdt_size(
    ref: SubtreeRef, fetch_blob: FetchBlob, where: str, findings: list[Finding]
) -> int | None:
    """Size of a subtree that is always an FDT (kho-v1), from its header."""
    try:
        header = fetch_blob(ref, FDT_HEADER_SIZE)
        if header is None:
            return None
        return fdt_header_totalsize(header)
    except BlobMissing as e:
        problem = f"data {e}"
    except FdtError as e:
        problem = f"data at physical {ref.phys:#x} is not an FDT ({e})"
    findings.append(subtree_broken(ref.name, problem, where))
    return None
