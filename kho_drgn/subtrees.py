"""Decoding KHO subtree blobs: memblock, kho_test, LUO, kexec-metadata, unknown.

Pure: bytes in, :class:`SubtreeView` out.  Pointers inside a blob (kho_test's
folio list, LUO's session blocks) are followed only through an optional
``read_phys(address, size)`` callable, bounded and cycle-checked, so the same
code runs on a dump (drgn), on debugfs files (no memory: pointers shown, not
followed) and on synthetic bytes in tests.  Bad data is a finding, never an
exception.

Formats (kernel sources; see the README's "Data it reads"):

* ``memblock`` (mm/memblock.c, include/linux/kho/abi/memblock.h): an FDT,
  root ``compatible = "memblock-v1"``, one child per ``reserve_mem=`` region
  named after it, ``compatible = "reserve-mem-v1"``, ``start`` and ``size``
  u64 in the CPU's byte order.
* ``kho_test`` (lib/test_kho.c): an FDT, root ``compatible = "kho-test-v1"``
  and ``magic`` (u32, "KHO!"), child ``data`` with ``nr_folios`` (u32),
  ``csum`` (u32) and ``folios_info``: a ``struct kho_vmalloc`` (16 bytes,
  6.18+) describing vmalloc'd pages that hold one u64 ``phys | order`` per
  folio, or (6.17) that u64 array itself.
* ``LUO`` (kernel/liveupdate): 7.2's packed ``struct luo_ser`` {char
  compatible[8] "luo-v5", u64 liveupdate_num, sessions_pa, flbs_pa}; older
  kernels an FDT with ``compatible = "luo-v1"`` and ``liveupdate-number``.
* ``kexec-metadata``: :func:`kho_drgn.metadata.decode_kexec_metadata`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from kho_drgn.abi import FDT_MAGIC, KEXEC_METADATA_NODE, MetadataLayout
from kho_drgn.fdt import FdtError, FdtNode, for_each_fdt_node, parse_fdt
from kho_drgn.findings import Finding, error, info, warning
from kho_drgn.metadata import decode_c_string, decode_kexec_metadata

ByteOrder = Literal["little", "big"]
#: ``read_phys(address, size)``: ``size`` bytes of target physical memory.
ReadPhys = Callable[[int, int], bytes]

PAGE_SIZE = 4096
#: ``KHO_TEST_MAGIC`` in lib/test_kho.c: "KHO!".
KHO_TEST_MAGIC = 0x4B484F21
#: ``struct kho_vmalloc``: first (KHOSER phys) u64, total_pages u32,
#: flags u16, order u16 (include/linux/kho/abi/kexec_handover.h).
KHO_VMALLOC_SIZE = 16
KHO_VMALLOC_FLAGS = {1: "alloc", 2: "huge-vmap"}
#: ``struct kho_vmalloc_chunk``: next phys, then 511 u64 physical addresses.
VMALLOC_CHUNK_ENTRIES = PAGE_SIZE // 8 - 1
#: ``struct luo_ser`` for "luo-v5": compatible[8] + 3 u64.
LUO_SER_SIZE = 32
#: ``struct kho_block_header_ser`` {u64 next, u64 count}, then entries.
LUO_BLOCK_HEADER_SIZE = 16
#: ``struct luo_session_ser``: name[64] + ``luo_file_set_ser`` {files, count}.
LUO_SESSION_SIZE = 80
LUO_SESSION_NAME = 64

#: Entries listed at most per subtree (counts stay whole).
MAX_ENTRIES = 4096
#: Pages followed at most per subtree.
MAX_PAGES = 1024
#: Physical addresses fit in 52 bits.
MAX_PHYS = 1 << 52
#: Raw bytes shown for an unknown blob.
RAW_PREVIEW = 32


@dataclass
class SubtreeView:
    """A subtree blob decoded: what kind it is and what it says."""

    name: str
    kind: str  # kexec-metadata, memblock, kho-test, luo, fdt, raw
    compatible: str | None
    size: int
    fields: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

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
        """One short line for a table cell."""
        return _SUMMARIES.get(self.kind, _summary_raw)(self)


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
    if name == KEXEC_METADATA_NODE and blob[:4] != FDT_MAGIC.to_bytes(4, "big"):
        return decode_metadata_blob(blob, byteorder, metadata_layout, where, name)
    if blob[:4] == FDT_MAGIC.to_bytes(4, "big"):
        try:
            root = parse_fdt(blob)
        except FdtError as e:
            view = decode_unknown(blob, where=where, name=name)
            view.findings.append(
                error("subtree.fdt-invalid", f"{name}: nested FDT: {e}", where)
            )
            return view
        compatible = root.prop_str("compatible")
        decoder = _FDT_DECODERS.get(compatible or "")
        if decoder is None:
            return _unknown_fdt(name, blob, root, where)
        view = decoder(name, blob, root, byteorder, read_phys, missing, where)
    elif blob[:5] == b"luo-v":
        view = decode_luo(
            blob, byteorder, read_phys=read_phys, missing=missing, where=where
        )
        view.name = name
    elif name == "LUO":
        return _luo_not_a_blob(blob, where)
    else:
        return decode_unknown(blob, where=where, name=name)
    expected = _EXPECTED_KIND.get(name)
    if expected is not None and expected != view.kind:
        view.findings.append(
            warning(
                "subtree.name-mismatch",
                f"sub-node {name!r} holds a {view.kind} blob "
                f"({view.compatible}); decoded by its content",
                where,
            )
        )
    return view


def decode_metadata_blob(
    blob: bytes,
    byteorder: ByteOrder = "little",
    layout: MetadataLayout | None = None,
    where: str = "",
    name: str = KEXEC_METADATA_NODE,
) -> SubtreeView:
    """The kexec-metadata blob as a view (see :mod:`kho_drgn.metadata`)."""
    kwargs = {} if layout is None else {"layout": layout}
    md = decode_kexec_metadata(
        blob, byteorder, blob_size=len(blob), where=where, **kwargs
    )
    return SubtreeView(
        name,
        "kexec-metadata",
        None,
        len(blob),
        fields={
            "version": md.version,
            "previous_release": md.previous_release,
            "kexec_count": md.kexec_count,
            "valid": md.valid,
        },
        findings=list(md.findings),
    )


# --------------------------------------------------------------------------
# memblock-v1
# --------------------------------------------------------------------------


def decode_memblock(
    blob: bytes, byteorder: ByteOrder = "little", where: str = ""
) -> SubtreeView:
    """A ``memblock-v1`` FDT: one reserve_mem region per child."""
    try:
        root = parse_fdt(blob)
    except FdtError as e:
        view = SubtreeView("memblock", "memblock", None, len(blob))
        view.findings.append(error("subtree.fdt-invalid", f"memblock: {e}", where))
        return view
    return _memblock("memblock", blob, root, byteorder, None, (), where)


def _memblock(
    name: str,
    blob: bytes,
    root: FdtNode,
    byteorder: ByteOrder,
    read_phys: ReadPhys | None,
    missing: tuple[type[BaseException], ...],
    where: str,
) -> SubtreeView:
    view = SubtreeView(name, "memblock", root.prop_str("compatible"), len(blob))
    total = 0
    for child in root.children[:MAX_ENTRIES]:
        entry: dict[str, Any] = {
            "name": child.name,
            "compatible": child.prop_str("compatible"),
            "start": _u64(child, "start", byteorder),
            "size": _u64(child, "size", byteorder),
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


def _u64(node: FdtNode, prop: str, byteorder: ByteOrder) -> int | None:
    value = node.properties.get(prop)
    return (
        None if value is None or len(value) != 8 else int.from_bytes(value, byteorder)
    )


def _u32(node: FdtNode, prop: str, byteorder: ByteOrder) -> int | None:
    value = node.properties.get(prop)
    return (
        None if value is None or len(value) != 4 else int.from_bytes(value, byteorder)
    )


# --------------------------------------------------------------------------
# kho-test-v1
# --------------------------------------------------------------------------


def decode_kho_test(
    blob: bytes,
    byteorder: ByteOrder = "little",
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> SubtreeView:
    """A ``kho-test-v1`` FDT (lib/test_kho.c); folios listed via ``read_phys``."""
    try:
        root = parse_fdt(blob)
    except FdtError as e:
        view = SubtreeView("kho_test", "kho-test", None, len(blob))
        view.findings.append(error("subtree.fdt-invalid", f"kho_test: {e}", where))
        return view
    return _kho_test("kho_test", blob, root, byteorder, read_phys, missing, where)


def _kho_test(
    name: str,
    blob: bytes,
    root: FdtNode,
    byteorder: ByteOrder,
    read_phys: ReadPhys | None,
    missing: tuple[type[BaseException], ...],
    where: str,
) -> SubtreeView:
    view = SubtreeView(name, "kho-test", root.prop_str("compatible"), len(blob))
    magic = _u32(root, "magic", byteorder)
    view.fields["magic"] = magic
    view.fields["magic_ok"] = magic == KHO_TEST_MAGIC
    if magic != KHO_TEST_MAGIC:
        view.findings.append(
            error(
                "subtree.kho-test.bad-magic",
                f"kho_test magic is {_fmt(magic)}, not {KHO_TEST_MAGIC:#x}",
                where,
            )
        )
    data = next((c for c in root.children if c.name == "data"), None)
    if data is None:
        view.findings.append(
            error("subtree.kho-test.no-data", "kho_test has no 'data' node", where)
        )
        return view
    nr_folios = _u32(data, "nr_folios", byteorder)
    csum = _u32(data, "csum", byteorder)
    view.fields.update(nr_folios=nr_folios, csum=csum)
    info_prop = data.properties.get("folios_info")
    if info_prop is None:
        view.findings.append(
            error(
                "subtree.kho-test.no-folios", "kho_test data has no folios_info", where
            )
        )
        return view
    before = len(view.findings)
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
        words = (
            None
            if read_phys is None
            else _vmalloc_words(
                first, total_pages, order, byteorder, read_phys, missing, view, where
            )
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
            view.findings.append(
                warning(
                    "subtree.kho-test.short",
                    f"kho_test lists {len(words)} folios, nr_folios is {nr_folios}",
                    where,
                )
            )
    if where == "incoming" and len(view.findings) > before:
        _consumed_at_boot(view, before)
    return view


def _consumed_at_boot(view: SubtreeView, first: int) -> None:
    """Fold the folio-list findings of an incoming kho_test into one info.

    A kernel with kho_test and KHO enabled restores the incoming folios at
    module init, then frees them and their vmalloc'd list (lib/test_kho.c:
    ``vfree``, ``folio_put``), so the list is normally gone from a dump.
    """
    seen = "; ".join(f.message for f in view.findings[first:])
    del view.findings[first:]
    view.findings.append(
        info(
            "subtree.kho-test.consumed",
            "incoming kho_test folio list is not whole, as expected once the "
            f"kernel restored and freed it at boot ({seen})",
            "incoming",
        )
    )


def _vmalloc_words(
    first: int,
    total_pages: int,
    order: int,
    byteorder: ByteOrder,
    read_phys: ReadPhys,
    missing: tuple[type[BaseException], ...],
    view: SubtreeView,
    where: str,
) -> list[int] | None:
    """The u64 words of a preserved vmalloc area, through its chunk list."""
    pages: list[int] = []
    seen: set[int] = set()
    chunk = first
    while chunk and len(pages) < min(total_pages, MAX_PAGES):
        page = _read_page(chunk, read_phys, missing, seen, view, where, "vmalloc chunk")
        if page is None:
            return None
        entries = struct.unpack(
            ("<" if byteorder == "little" else ">") + f"{PAGE_SIZE // 8}Q", page
        )
        for phys in entries[1:]:
            if not phys:
                break
            pages.append(phys)
        chunk = entries[0]
    words: list[int] = []
    step = PAGE_SIZE << min(order, 10)
    for phys in pages[:MAX_PAGES]:
        data = _read_page(
            phys, read_phys, missing, set(), view, where, "vmalloc page", step
        )
        if data is None:
            return None
        words += [
            int.from_bytes(data[i : i + 8], byteorder) for i in range(0, len(data), 8)
        ]
    return words


def _read_page(
    address: int,
    read_phys: ReadPhys,
    missing: tuple[type[BaseException], ...],
    seen: set[int],
    view: SubtreeView,
    where: str,
    what: str,
    size: int = PAGE_SIZE,
) -> bytes | None:
    if address % PAGE_SIZE or address + size > MAX_PHYS:
        view.findings.append(
            error(
                "subtree.bad-pointer",
                f"{view.name}: {what} pointer {address:#x} is unaligned or "
                "out of range",
                where,
            )
        )
        return None
    if address in seen:
        view.findings.append(
            error("subtree.cycle", f"{view.name}: {what} at {address:#x} loops", where)
        )
        return None
    seen.add(address)
    try:
        data = read_phys(address, size)
    except missing as e:
        view.findings.append(
            warning(
                "memory.missing",
                f"{view.name}: {what} at physical {address:#x} is not in the "
                f"target ({str(e) or type(e).__name__})",
                where,
            )
        )
        return None
    if len(data) != size:
        view.findings.append(
            warning(
                "memory.missing",
                f"{view.name}: {what} at physical {address:#x}: short read",
                where,
            )
        )
        return None
    return bytes(data)


# --------------------------------------------------------------------------
# LUO
# --------------------------------------------------------------------------


def decode_luo(
    blob: bytes,
    byteorder: ByteOrder = "little",
    read_phys: ReadPhys | None = None,
    missing: tuple[type[BaseException], ...] = (OSError,),
    where: str = "",
) -> SubtreeView:
    """7.2's packed ``struct luo_ser``; sessions listed via ``read_phys``."""
    view = SubtreeView("LUO", "luo", None, len(blob))
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
    end = "<" if byteorder == "little" else ">"
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
    if read_phys is None or not sessions_pa:
        return view
    seen: set[int] = set()
    block = sessions_pa
    sessions = 0
    while block and len(seen) < MAX_PAGES:
        page = _read_page(block, read_phys, missing, seen, view, where, "session block")
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
            name, _ = decode_c_string(
                page[offset : offset + LUO_SESSION_NAME], "session name", where
            )
            files, nfiles = struct.unpack_from(
                end + "QQ", page, offset + LUO_SESSION_NAME
            )
            sessions += 1
            if len(view.entries) < MAX_ENTRIES:
                view.entries.append(
                    {"session": name, "files": nfiles, "files_pa": files}
                )
        block = nxt
    view.fields["sessions"] = sessions
    return view


def _luo_not_a_blob(blob: bytes, where: str) -> SubtreeView:
    """A ``LUO`` sub-node whose data is neither a luo_ser nor an FDT.

    The kernel frees the incoming luo_ser page early in boot, so this is the
    normal state of an incoming one; :mod:`kho_drgn.luo_target` says so (or
    reports damage) and reads the state from the kernel instead.  The bytes
    are someone else's data now and are not shown.
    """
    view = SubtreeView("LUO", "luo", None, len(blob))
    view.fields = {"blob": "reused"}
    return view


def _luo_fdt(
    name: str,
    blob: bytes,
    root: FdtNode,
    byteorder: ByteOrder,
    read_phys: ReadPhys | None,
    missing: tuple[type[BaseException], ...],
    where: str,
) -> SubtreeView:
    """The luo-v1 FDT form (6.19..7.1): root ``liveupdate-number``."""
    view = SubtreeView(name, "luo", root.prop_str("compatible"), len(blob))
    view.fields["liveupdate_num"] = _u64(root, "liveupdate-number", byteorder)
    for node in root.children[:MAX_ENTRIES]:
        view.entries.append(
            {"node": node.name, "compatible": node.prop_str("compatible")}
        )
    return view


# --------------------------------------------------------------------------
# Unknown
# --------------------------------------------------------------------------


def decode_unknown(blob: bytes, where: str = "", name: str = "") -> SubtreeView:
    """Unknown blob: a nested FDT's nodes, or the first bytes."""
    if blob[:4] == FDT_MAGIC.to_bytes(4, "big"):
        try:
            return _unknown_fdt(name, blob, parse_fdt(blob), where)
        except FdtError:
            pass
    view = SubtreeView(name, "raw", None, len(blob))
    view.fields = {"first_bytes": blob[:RAW_PREVIEW].hex(" ")}
    return view


def _unknown_fdt(name: str, blob: bytes, root: FdtNode, where: str) -> SubtreeView:
    view = SubtreeView(name, "fdt", root.prop_str("compatible"), len(blob))
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
                where,
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


def _fmt(value: int | None) -> str:
    return "missing" if value is None else f"{value:#x}"


_FDT_DECODERS = {
    "memblock-v1": _memblock,
    "kho-test-v1": _kho_test,
    "luo-v1": _luo_fdt,
}
_EXPECTED_KIND = {"memblock": "memblock", "kho_test": "kho-test", "LUO": "luo"}


def _summary_metadata(view: SubtreeView) -> str:
    f = view.fields
    if not f.get("valid"):
        return "invalid: see findings"
    return f"v{f['version']}: {f['previous_release']}, count {f['kexec_count']}"


def _summary_memblock(view: SubtreeView) -> str:
    regions = ", ".join(
        f"{e['name']} {_fmt(e['start'])} +{_fmt(e['size'])}" for e in view.entries[:3]
    )
    more = ", ..." if len(view.entries) > 3 else ""
    n = view.fields.get("regions", 0)
    listed = f": {regions}{more}" if n else ""
    return f"{view.compatible}: {n} reserve_mem region(s){listed}"


def _summary_kho_test(view: SubtreeView) -> str:
    f = view.fields
    ok = "ok" if f.get("magic_ok") else "BAD"
    text = f"{view.compatible}: magic {_fmt(f.get('magic'))} {ok}"
    if f.get("nr_folios") is not None:
        text += f", {f['nr_folios']} folios, csum {_fmt(f.get('csum'))}"
    return text


def _summary_luo(view: SubtreeView) -> str:
    f = view.fields
    if f.get("blob") == "reused":
        return "not a luo_ser any more: page freed and reused (see LUO)"
    text = f"{view.compatible}: liveupdate #{f.get('liveupdate_num')}"
    if "sessions" in f:
        text += f", {f['sessions']} session(s)"
    return text


def _summary_fdt(view: SubtreeView) -> str:
    return f"FDT ({view.compatible or 'no compatible'}), {len(view.entries)} node(s)"


def _summary_raw(view: SubtreeView) -> str:
    return f"raw, {view.size} bytes: {view.fields.get('first_bytes', '')[:47]}"


_SUMMARIES: dict[str, Callable[[SubtreeView], str]] = {
    "kexec-metadata": _summary_metadata,
    "memblock": _summary_memblock,
    "kho-test": _summary_kho_test,
    "luo": _summary_luo,
    "fdt": _summary_fdt,
    "raw": _summary_raw,
}
