"""Decoding KHO subtree blobs, whatever client made them.

Pure: bytes in, :class:`SubtreeView` out; bad data is a finding, never an
exception.  Each client format (memblock, kho_test, LUO, kexec-metadata) is
one module of :mod:`kho_drgn.formats`, declared in its registry;
:func:`decode_subtree` picks the format by the blob's root ``compatible``
(FDT blobs), its first bytes, or the sub-node's name, and lists anything
else as an unknown FDT or raw bytes.  Pointers inside a blob are followed
only through ``read_phys`` (bounded, cycle-checked), so the same code runs on
a dump, on debugfs files and on synthetic bytes.
"""

from __future__ import annotations

from kho_drgn.abi import FDT_MAGIC, MetadataLayout
from kho_drgn.fdt import FdtError, parse_fdt
from kho_drgn.findings import warning
from kho_drgn.formats import (
    format_for_compatible,
    format_for_kind,
    format_for_magic,
    format_for_node,
    formats_named,
)
from kho_drgn.formats.base import (
    MAX_ENTRIES,
    MAX_PAGES,
    PAGE_SIZE,
    ByteOrder,
    DecodeContext,
    ReadPhys,
    SubtreeView,
    nested_fdt_invalid,
)
from kho_drgn.formats.kexec_metadata import decode_metadata_blob, metadata_view
from kho_drgn.formats.kho_test import KHO_TEST_MAGIC, decode_kho_test
from kho_drgn.formats.luo import decode_luo
from kho_drgn.formats.memblock import decode_memblock
from kho_drgn.formats.unknown import FDT_FORMAT, decode_unknown

__all__ = (
    "KHO_TEST_MAGIC",
    "MAX_ENTRIES",
    "MAX_PAGES",
    "PAGE_SIZE",
    "ByteOrder",
    "ReadPhys",
    "SubtreeView",
    "decode_kho_test",
    "decode_luo",
    "decode_memblock",
    "decode_metadata_blob",
    "decode_subtree",
    "decode_unknown",
    "metadata_view",
)

_FDT_MAGIC_BYTES = FDT_MAGIC.to_bytes(4, "big")


def decode_subtree(
    name: str,
    blob: bytes,
    byteorder: ByteOrder = "little",
    *,
    metadata_layout: MetadataLayout | None = None,
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> SubtreeView:
    """Decode one subtree's blob by its content (and its node name)."""
    view = _decode(name, blob, byteorder, metadata_layout, read_phys, missing, where)
    if view.summarizer is None:
        view.summarizer = format_for_kind(view.kind).summary
    return view


def _decode(
    name: str,
    blob: bytes,
    byteorder: ByteOrder,
    metadata_layout: MetadataLayout | None,
    read_phys: ReadPhys | None,
    missing: tuple[type[BaseException], ...],
    where: str,
) -> SubtreeView:
    ctx = DecodeContext(byteorder, read_phys, missing, where, metadata_layout)
    is_fdt = blob[:4] == _FDT_MAGIC_BYTES
    by_name = format_for_node(name)
    if by_name is not None and not is_fdt:
        return by_name.decode(name, blob, None, ctx)
    if is_fdt:
        try:
            root = parse_fdt(blob)
        except FdtError as e:
            view = decode_unknown(blob, where=where, name=name)
            view.findings.append(nested_fdt_invalid(name, e, where))
            return view
        fmt = format_for_compatible(root.prop_str("compatible"))
        if fmt is None:
            return FDT_FORMAT.decode(name, blob, root, ctx)
        view = fmt.decode(name, blob, root, ctx)
    else:
        fmt = format_for_magic(blob)
        if fmt is None:
            for named in formats_named(name):
                if named.unrecognised is not None:
                    return named.unrecognised(name, blob, None, ctx)
            return decode_unknown(blob, where=where, name=name)
        view = fmt.decode(name, blob, None, ctx)
    expected = formats_named(name)
    if expected and view.kind not in {f.kind for f in expected}:
        view.findings.append(
            warning(
                "subtree.name-mismatch",
                f"sub-node {name!r} holds a {view.kind} blob "
                f"({view.compatible}); decoded by its content",
                where,
            )
        )
    return view
