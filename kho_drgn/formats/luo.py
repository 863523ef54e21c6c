"""``LUO``: the Live Update Orchestrator's sessions (kernel/liveupdate).

7.2's packed ``struct luo_ser`` {char compatible[8] "luo-v5", u64
liveupdate_num, sessions_pa, flbs_pa}; 6.19..7.1 an FDT with ``compatible =
"luo-v1"`` and ``liveupdate-number``.
"""

from __future__ import annotations

import struct

from kho_drgn.fdt import FdtNode
from kho_drgn.findings import error, warning
from kho_drgn.formats.base import (
    MAX_ENTRIES,
    PAGE_SIZE,
    ByteOrder,
    DecodeContext,
    ReadPhys,
    SubtreeFormat,
    SubtreeView,
    fdt_u64,
    page_reader,
)
from kho_drgn.metadata import decode_c_string

__all__ = ("FORMAT", "decode_luo")

#: ``struct luo_ser`` for "luo-v5": compatible[8] + 3 u64.
LUO_SER_SIZE = 32
#: ``struct kho_block_header_ser`` {u64 next, u64 count}, then entries.
LUO_BLOCK_HEADER_SIZE = 16
#: ``struct luo_session_ser``: name[64] + ``luo_file_set_ser`` {files, count}.
LUO_SESSION_SIZE = 80
LUO_SESSION_NAME = 64


def decode_luo(
    blob: bytes,
    byteorder: ByteOrder = "little",
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> SubtreeView:
    """7.2's packed ``struct luo_ser``; sessions listed via ``read_phys``."""
    return _decode_ser("LUO", blob, DecodeContext(byteorder, read_phys, missing, where))


def _decode(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    if root is None:
        return _decode_ser(name, blob, ctx)
    return _decode_fdt(name, blob, root, ctx)


def _decode_ser(name: str, blob: bytes, ctx: DecodeContext) -> SubtreeView:
    where = ctx.where
    view = SubtreeView(name, "luo", None, len(blob), summarizer=_summary)
    if len(blob) < LUO_SER_SIZE:
        view.findings.append(
            error(
                "subtree.luo.short",
                f"LUO blob is {len(blob)} bytes, struct luo_ser needs {LUO_SER_SIZE}",
                where,
            )
        )
        return view
    compatible, found = decode_c_string(blob[:8], "LUO compatible", where)
    view.findings += found
    view.compatible = compatible
    end = "<" if ctx.byteorder == "little" else ">"
    number, sessions_pa, flbs_pa = struct.unpack_from(end + "QQQ", blob, 8)
    view.fields = {
        "liveupdate_num": number,
        "sessions_pa": sessions_pa,
        "flbs_pa": flbs_pa,
    }
    if compatible != "luo-v5":
        view.findings.append(
            warning(
                "subtree.luo.unknown-version",
                f"LUO compatible {compatible!r}: only luo-v5 is known; fields "
                "decoded with its layout",
                where,
            )
        )
    reader = page_reader(view, ctx, f"{name} session blocks")
    if reader is None or not sessions_pa:
        return view
    block = sessions_pa
    sessions = 0
    while block:
        page = reader.read(block, PAGE_SIZE, "session block")
        if page is None:
            break
        nxt, count = struct.unpack_from(end + "QQ", page)
        room = (PAGE_SIZE - LUO_BLOCK_HEADER_SIZE) // LUO_SESSION_SIZE
        if count > room:
            view.findings.append(
                error(
                    "subtree.luo.bad-count",
                    f"LUO session block at {block:#x} claims {count} sessions; "
                    f"{room} fit",
                    where,
                )
            )
            count = room
        for i in range(count):
            offset = LUO_BLOCK_HEADER_SIZE + i * LUO_SESSION_SIZE
            session, _ = decode_c_string(
                page[offset : offset + LUO_SESSION_NAME], "session name", where
            )
            files, nfiles = struct.unpack_from(
                end + "QQ", page, offset + LUO_SESSION_NAME
            )
            sessions += 1
            if len(view.entries) < MAX_ENTRIES:
                view.entries.append(
                    {"session": session, "files": nfiles, "files_pa": files}
                )
        block = nxt
    view.fields["sessions"] = sessions
    return view


def _decode_fdt(
    name: str, blob: bytes, root: FdtNode, ctx: DecodeContext
) -> SubtreeView:
    """The luo-v1 FDT form (6.19..7.1): root ``liveupdate-number``."""
    view = SubtreeView(
        name, "luo", root.prop_str("compatible"), len(blob), summarizer=_summary
    )
    view.fields["liveupdate_num"] = fdt_u64(root, "liveupdate-number", ctx.byteorder)
    for node in root.children[:MAX_ENTRIES]:
        view.entries.append(
            {"node": node.name, "compatible": node.prop_str("compatible")}
        )
    return view


def _not_a_blob(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    """A ``LUO`` sub-node whose data is neither a luo_ser nor an FDT.

    The kernel frees the incoming luo_ser page early in boot, so this is the
    normal state of an incoming one; :mod:`kho_drgn.luo_target` says so (or
    reports damage) and reads the state from the kernel instead.  The bytes
    are someone else's data now and are not shown.
    """
    view = SubtreeView(name, "luo", None, len(blob), summarizer=_summary)
    view.fields = {"blob": "reused"}
    return view


def _summary(view: SubtreeView) -> str:
    f = view.fields
    if f.get("blob") == "reused":
        return "not a luo_ser any more: page freed and reused (see LUO)"
    text = f"{view.compatible}: liveupdate #{f.get('liveupdate_num')}"
    if "sessions" in f:
        text += f", {f['sessions']} session(s)"
    return text


FORMAT = SubtreeFormat(
    kind="luo",
    decode=_decode,
    summary=_summary,
    node_names=("LUO",),
    compatibles=("luo-v1",),
    magic=(b"luo-v",),
    unrecognised=_not_a_blob,
)
