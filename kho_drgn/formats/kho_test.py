"""``kho_test``: lib/test_kho.c's folios, the KHO self-test's subtree.

An FDT, root ``compatible = "kho-test-v1"`` and ``magic`` (u32, "KHO!"),
child ``data`` with ``nr_folios`` (u32), ``csum`` (u32) and
``folios_info``: a ``struct kho_vmalloc`` (16 bytes, 6.18+) describing
vmalloc'd pages that hold one u64 ``phys | order`` per folio, or (6.17) that
u64 array itself.
"""

from __future__ import annotations

import struct

from kho_drgn.fdt import FdtNode
from kho_drgn.findings import Finding, error, info, warning
from kho_drgn.formats.base import (
    MAX_ENTRIES,
    MAX_PAGES,
    PAGE_SIZE,
    ByteOrder,
    DecodeContext,
    ReadPhys,
    SubtreeFormat,
    SubtreeView,
    decode_fdt_blob,
    fdt_u32,
    hex_or_missing,
    page_reader,
)
from kho_drgn.pages import PageReader

__all__ = ("FORMAT", "KHO_TEST_MAGIC", "decode_kho_test")

#: ``KHO_TEST_MAGIC`` in lib/test_kho.c: "KHO!".
KHO_TEST_MAGIC = 0x4B484F21
#: ``struct kho_vmalloc``: first (KHOSER phys) u64, total_pages u32,
#: flags u16, order u16 (include/linux/kho/abi/kexec_handover.h).
KHO_VMALLOC_SIZE = 16
KHO_VMALLOC_FLAGS = {1: "alloc", 2: "huge-vmap"}


def decode_kho_test(
    blob: bytes,
    byteorder: ByteOrder = "little",
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> SubtreeView:
    """A ``kho-test-v1`` FDT (lib/test_kho.c); folios listed via ``read_phys``."""
    ctx = DecodeContext(byteorder, read_phys, missing, where)
    return decode_fdt_blob(FORMAT, "kho_test", blob, ctx)


def _decode(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    assert root is not None  # matched by compatible: always an FDT
    where, byteorder = ctx.where, ctx.byteorder
    view = SubtreeView(
        name, "kho-test", root.prop_str("compatible"), len(blob), summarizer=_summary
    )
    magic = fdt_u32(root, "magic", byteorder)
    view.fields["magic"] = magic
    view.fields["magic_ok"] = magic == KHO_TEST_MAGIC
    if magic != KHO_TEST_MAGIC:
        view.findings.append(
            error(
                "subtree.kho-test.bad-magic",
                f"kho_test magic is {hex_or_missing(magic)}, not {KHO_TEST_MAGIC:#x}",
                where,
            )
        )
    data = next((c for c in root.children if c.name == "data"), None)
    if data is None:
        view.findings.append(
            error("subtree.kho-test.no-data", "kho_test has no 'data' node", where)
        )
        return view
    nr_folios = fdt_u32(data, "nr_folios", byteorder)
    csum = fdt_u32(data, "csum", byteorder)
    view.fields.update(nr_folios=nr_folios, csum=csum)
    info_prop = data.properties.get("folios_info")
    if info_prop is None:
        view.findings.append(
            error(
                "subtree.kho-test.no-folios", "kho_test data has no folios_info", where
            )
        )
        return view
    # What reading the folio list finds: the view's, or folded into one info.
    found: list[Finding] = []
    words: list[int] | None
    if len(info_prop) == KHO_VMALLOC_SIZE:
        first, total_pages, flags, order = struct.unpack(
            ("<" if byteorder == "little" else ">") + "QIHH", info_prop
        )
        view.fields["folios_info"] = {
            "first": first,
            "total_pages": total_pages,
            "flags": "|".join(v for k, v in KHO_VMALLOC_FLAGS.items() if flags & k)
            or str(flags),
            "order": order,
        }
        chunks = page_reader(view, ctx, f"{name} folio list", report=found.append)
        pages = page_reader(view, ctx, f"{name} folio list", report=found.append)
        words = (
            None
            if chunks is None or pages is None
            else _vmalloc_words(first, total_pages, order, chunks, pages, byteorder)
        )
    elif len(info_prop) % 8 == 0:  # 6.17: the u64 array itself
        words = [
            int.from_bytes(info_prop[i : i + 8], byteorder)
            for i in range(0, len(info_prop), 8)
        ]
    else:
        view.findings.append(
            error(
                "subtree.kho-test.bad-folios-info",
                f"folios_info is {len(info_prop)} bytes: neither a kho_vmalloc "
                "descriptor (16) nor a u64 array",
                where,
            )
        )
        return view
    if words is not None and nr_folios is not None:
        for word in words[: min(nr_folios, MAX_ENTRIES)]:
            view.entries.append(
                {"phys": word & ~(PAGE_SIZE - 1), "order": word & (PAGE_SIZE - 1)}
            )
        if len(words) < nr_folios:
            found.append(
                warning(
                    "subtree.kho-test.short",
                    f"kho_test lists {len(words)} folios, nr_folios is {nr_folios}",
                    where,
                )
            )
    if where == "incoming" and found:
        found = [_consumed_at_boot(found)]
    view.findings += found
    return view


def _consumed_at_boot(found: list[Finding]) -> Finding:
    """The folio-list findings of an incoming kho_test, as one info.

    A kernel with kho_test and KHO enabled restores the incoming folios at
    module init, then frees them and their vmalloc'd list (lib/test_kho.c:
    ``vfree``, ``folio_put``), so the list is normally gone from a dump.
    """
    seen = "; ".join(f.message for f in found)
    return info(
        "subtree.kho-test.consumed",
        "incoming kho_test folio list is not whole, as expected once the "
        f"kernel restored and freed it at boot ({seen})",
        "incoming",
    )


def _vmalloc_words(
    first: int,
    total_pages: int,
    order: int,
    chunks: PageReader,
    data_pages: PageReader,
    byteorder: ByteOrder,
) -> list[int] | None:
    """The u64 words of a preserved vmalloc area, through its chunk list.

    ``struct kho_vmalloc_chunk``: the next chunk's phys, then up to 511
    physical page addresses.  ``chunks`` walks the list (each chunk once);
    ``data_pages`` reads the pages it lists.
    """
    fmt = ("<" if byteorder == "little" else ">") + f"{PAGE_SIZE // 8}Q"
    pages: list[int] = []
    chunk = first
    while chunk and len(pages) < min(total_pages, MAX_PAGES):
        page = chunks.read(chunk, PAGE_SIZE, "vmalloc chunk")
        if page is None:
            return None
        entries = struct.unpack(fmt, page)
        for phys in entries[1:]:
            if not phys:
                break
            pages.append(phys)
        chunk = entries[0]
    words: list[int] = []
    step = PAGE_SIZE << min(order, 10)
    for phys in pages[:MAX_PAGES]:
        data = data_pages.read(phys, step, "vmalloc page", once=False)
        if data is None:
            return None
        words += [
            int.from_bytes(data[i : i + 8], byteorder) for i in range(0, len(data), 8)
        ]
    return words


def _summary(view: SubtreeView) -> str:
    f = view.fields
    ok = "ok" if f.get("magic_ok") else "BAD"
    text = f"{view.compatible}: magic {hex_or_missing(f.get('magic'))} {ok}"
    if f.get("nr_folios") is not None:
        text += f", {f['nr_folios']} folios, csum {hex_or_missing(f.get('csum'))}"
    return text


FORMAT = SubtreeFormat(
    kind="kho-test",
    decode=_decode,
    summary=_summary,
    node_names=("kho_test",),
    compatibles=("kho-test-v1",),
)
