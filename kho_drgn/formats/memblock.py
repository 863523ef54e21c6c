"""``memblock``: the ``reserve_mem=`` regions a kernel hands over.

mm/memblock.c, include/linux/kho/abi/memblock.h: an FDT, root ``compatible =
"memblock-v1"``, one child per region named after it, ``compatible =
"reserve-mem-v1"``, ``start`` and ``size`` u64 in the CPU's byte order.
"""

from __future__ import annotations

from typing import Any

from kho_drgn.fdt import FdtNode
from kho_drgn.findings import error, warning
from kho_drgn.formats.base import (
    MAX_ENTRIES,
    MAX_PHYS,
    ByteOrder,
    DecodeContext,
    SubtreeFormat,
    SubtreeView,
    decode_fdt_blob,
    fdt_u64,
    hex_or_missing,
)

__all__ = ("FORMAT", "decode_memblock")


def decode_memblock(
    blob: bytes, byteorder: ByteOrder = "little", where: str = ""
) -> SubtreeView:
    """A ``memblock-v1`` FDT: one reserve_mem region per child."""
    ctx = DecodeContext(byteorder, where=where)
    return decode_fdt_blob(FORMAT, "memblock", blob, ctx)


def _decode(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    assert root is not None  # matched by compatible: always an FDT
    where = ctx.where
    view = SubtreeView(
        name, "memblock", root.prop_str("compatible"), len(blob), summarizer=_summary
    )
    total = 0
    for child in root.children[:MAX_ENTRIES]:
        entry: dict[str, Any] = {
            "name": child.name,
            "compatible": child.prop_str("compatible"),
            "start": fdt_u64(child, "start", ctx.byteorder),
            "size": fdt_u64(child, "size", ctx.byteorder),
        }
        view.entries.append(entry)
        if entry["compatible"] != "reserve-mem-v1":
            view.findings.append(
                warning(
                    "subtree.memblock.bad-compatible",
                    f"memblock region {child.name!r} has compatible "
                    f"{entry['compatible']!r}, not 'reserve-mem-v1'; the next "
                    "kernel will not revive it",
                    where,
                )
            )
        start, size = entry["start"], entry["size"]
        if start is None or size is None:
            view.findings.append(
                error(
                    "subtree.memblock.bad-region",
                    f"memblock region {child.name!r}: start or size is missing "
                    "or not 8 bytes",
                    where,
                )
            )
            continue
        if not size or start + size > MAX_PHYS:
            view.findings.append(
                error(
                    "subtree.memblock.bad-region",
                    f"memblock region {child.name!r}: {start:#x} +{size:#x} is "
                    "empty or past the end of physical memory",
                    where,
                )
            )
        total += size
    if len(root.children) > MAX_ENTRIES:
        view.findings.append(
            warning(
                "subtree.too-many-entries",
                f"memblock has {len(root.children)} regions; listed {MAX_ENTRIES}",
                where,
            )
        )
    view.fields = {"regions": len(root.children), "bytes": total}
    return view


def _summary(view: SubtreeView) -> str:
    regions = ", ".join(
        f"{e['name']} {hex_or_missing(e['start'])} +{hex_or_missing(e['size'])}"
        for e in view.entries[:3]
    )
    more = ", ..." if len(view.entries) > 3 else ""
    n = view.fields.get("regions", 0)
    listed = f": {regions}{more}" if n else ""
    return f"{view.compatible}: {n} reserve_mem region(s){listed}"


FORMAT = SubtreeFormat(
    kind="memblock",
    decode=_decode,
    summary=_summary,
    node_names=("memblock",),
    compatibles=("memblock-v1",),
)
