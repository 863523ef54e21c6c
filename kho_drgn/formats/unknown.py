"""Subtrees no format module claims: a nested FDT's nodes, or the first bytes.

The fallback of the registry, never matched by it: two kinds, ``fdt`` (an
FDT whose compatible kho-drgn does not know) and ``raw``.
"""

from __future__ import annotations

from kho_drgn.abi import FDT_MAGIC
from kho_drgn.fdt import FdtError, FdtNode, for_each_fdt_node, parse_fdt
from kho_drgn.findings import info
from kho_drgn.formats.base import MAX_ENTRIES, DecodeContext, SubtreeFormat, SubtreeView

__all__ = ("FDT_FORMAT", "RAW_FORMAT", "decode_unknown")

#: Raw bytes shown for an unknown blob.
RAW_PREVIEW = 32


def decode_unknown(blob: bytes, where: str = "", name: str = "") -> SubtreeView:
    """Unknown blob: a nested FDT's nodes, or the first bytes."""
    if blob[:4] == FDT_MAGIC.to_bytes(4, "big"):
        try:
            return _decode_fdt(name, blob, parse_fdt(blob), DecodeContext(where=where))
        except FdtError:
            pass
    return _decode_raw(name, blob, None, DecodeContext(where=where))


def _decode_raw(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    view = SubtreeView(name, "raw", None, len(blob), summarizer=_summary_raw)
    view.fields = {"first_bytes": blob[:RAW_PREVIEW].hex(" ")}
    return view


def _decode_fdt(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    assert root is not None
    view = SubtreeView(
        name, "fdt", root.prop_str("compatible"), len(blob), summarizer=_summary_fdt
    )
    for node in for_each_fdt_node(root):
        if len(view.entries) >= MAX_ENTRIES:
            break
        view.entries.append(
            {
                "path": node.path,
                "properties": {
                    key: (node.prop_str(key) if _printable(value) else value[:64].hex())
                    for key, value in node.properties.items()
                },
            }
        )
    if view.compatible:
        view.findings.append(
            info(
                "subtree.unknown",
                f"sub-node {name!r}: compatible {view.compatible!r} is not one "
                "kho-drgn decodes; its nodes are listed",
                ctx.where,
            )
        )
    return view


def _printable(value: bytes) -> bool:
    text = value[:-1]
    return (
        len(value) > 1
        and value.endswith(b"\0")
        and b"\0" not in text
        and all(32 <= b < 127 for b in text)
    )


def _summary_fdt(view: SubtreeView) -> str:
    return f"FDT ({view.compatible or 'no compatible'}), {len(view.entries)} node(s)"


def _summary_raw(view: SubtreeView) -> str:
    return f"raw, {view.size} bytes: {view.fields.get('first_bytes', '')[:47]}"


FDT_FORMAT = SubtreeFormat(kind="fdt", decode=_decode_fdt, summary=_summary_fdt)
RAW_FORMAT = SubtreeFormat(kind="raw", decode=_decode_raw, summary=_summary_raw)
