"""The registry of KHO subtree formats: one module each, one line here each.

A new client format is a new module declaring a
:class:`~kho_drgn.formats.base.SubtreeFormat` (kind, node names, root
compatibles or first bytes, decoder, summary) and its line in
:data:`FORMATS`.  :func:`kho_drgn.subtrees.decode_subtree` dispatches on
this table; blobs no format claims are listed by :mod:`.unknown`.
"""

from __future__ import annotations

from kho_drgn.formats import kexec_metadata, kho_test, luo, memblock, unknown
from kho_drgn.formats.base import SubtreeFormat

__all__ = (
    "FORMATS",
    "format_for_compatible",
    "format_for_kind",
    "format_for_magic",
    "format_for_node",
    "formats_named",
)

#: Every known client format, in match order.
FORMATS: tuple[SubtreeFormat, ...] = (
    kexec_metadata.FORMAT,
    memblock.FORMAT,
    kho_test.FORMAT,
    luo.FORMAT,
)

_FALLBACKS = (unknown.FDT_FORMAT, unknown.RAW_FORMAT)


def format_for_kind(kind: str) -> SubtreeFormat:
    """The format that produced views of ``kind`` (unknown ones: ``raw``)."""
    return next((f for f in FORMATS + _FALLBACKS if f.kind == kind), unknown.RAW_FORMAT)


def format_for_compatible(compatible: str | None) -> SubtreeFormat | None:
    """The format of an FDT blob whose root has this ``compatible``."""
    return next((f for f in FORMATS if compatible in f.compatibles), None)


def format_for_magic(blob: bytes) -> SubtreeFormat | None:
    """The format of a non-FDT blob recognised by its first bytes."""
    return next((f for f in FORMATS if any(blob.startswith(m) for m in f.magic)), None)


def format_for_node(name: str) -> SubtreeFormat | None:
    """A format recognised by the sub-node's name alone (no magic)."""
    return next((f for f in FORMATS if f.by_node_name and name in f.node_names), None)


def formats_named(name: str) -> list[SubtreeFormat]:
    """The formats whose subtrees the kernel names ``name``."""
    return [f for f in FORMATS if name in f.node_names]
