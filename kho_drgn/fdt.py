"""Decoding KHO flattened device trees with libfdt's Python binding.

Pure functions over bytes.  The buffer is checked in full with
``fdt_check_full`` before anything walks it, so a damaged FDT from a failing
machine gives a finding, not a crash or an out-of-bounds read in libfdt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import libfdt

from kho_drgn.abi import (
    FDT_HEADER_SIZE,
    FDT_MAGIC,
    KhoAbi,
    abi_for_compatible,
    newest_abi,
)
from kho_drgn.findings import Finding, error, warning

ByteOrder = Literal["little", "big"]

_FDT_BEGIN_NODE = 1

#: Bounds for walking untrusted trees.
MAX_DEPTH = 32
MAX_NODES = 100_000


class FdtError(Exception):
    """The bytes are not a usable FDT; the message says why."""


@dataclass(eq=False)
class FdtNode:
    """One node of a decoded FDT: its path, raw properties and children."""

    path: str
    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[FdtNode] = field(default_factory=list)

    def prop_str(self, name: str) -> str | None:
        """A property as a NUL-terminated string, or None if absent/not a string."""
        value = self.properties.get(name)
        if value is None or not value.endswith(b"\0"):
            return None
        try:
            return value[:-1].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def prop_u64(self, name: str, byteorder: ByteOrder) -> int | None:
        """An 8-byte property in the CPU's byte order (how KHO writes u64s)."""
        value = self.properties.get(name)
        if value is None or len(value) != 8:
            return None
        return int.from_bytes(value, byteorder)


def fdt_header_totalsize(header: bytes) -> int:
    """Validate an FDT header's magic and return its ``totalsize``.

    :raises FdtError: if the header is short or the magic is wrong.
    """
    if len(header) < 8:
        raise FdtError(f"FDT header is {len(header)} bytes, too short")
    magic = int.from_bytes(header[0:4], "big")
    if magic != FDT_MAGIC:
        raise FdtError(f"bad FDT magic {magic:#010x} (expected {FDT_MAGIC:#010x})")
    return int.from_bytes(header[4:8], "big")


def parse_fdt(blob: bytes) -> FdtNode:
    """Parse and fully validate an FDT, returning its root node.

    :raises FdtError: with libfdt's reason when the tree is damaged.
    """
    totalsize = fdt_header_totalsize(blob)
    if totalsize < FDT_HEADER_SIZE:
        raise FdtError(f"FDT totalsize {totalsize} is smaller than its header")
    if totalsize > len(blob):
        raise FdtError(
            f"FDT is truncated: header totalsize {totalsize}, only "
            f"{len(blob)} bytes available"
        )
    buf = bytearray(blob[:totalsize])
    err = libfdt.fdt_check_full(buf, totalsize)
    if err:
        raise FdtError(f"FDT is corrupt: {libfdt.fdt_strerror(err)}")
    fdt = libfdt.Fdt(buf)
    struct_at = fdt.off_dt_struct()
    if int.from_bytes(buf[struct_at : struct_at + 4], "big") != _FDT_BEGIN_NODE:
        # fdt_check_full accepts a structure block with no node at all.
        raise FdtError("FDT has no root node (structure block does not start with one)")
    root = FdtNode(path="/", name="")
    try:
        _walk(fdt, 0, root, 0, [0])
    except libfdt.FdtException as e:
        raise FdtError(f"FDT is corrupt: {e}") from e
    return root


def _c_string_at(buf: bytearray, offset: int) -> str:
    """A NUL-terminated name in the (already checked) buffer, for names that
    libfdt's binding cannot decode: non-UTF-8 bytes are escaped, not fatal."""
    end = buf.find(b"\0", offset)
    raw = bytes(buf[offset : end if end >= 0 else len(buf)])
    return raw.decode("utf-8", "backslashreplace")


def _property(fdt: libfdt.Fdt, offset: int) -> tuple[str, bytes]:
    try:
        prop = fdt.get_property_by_offset(offset)
        return str(prop.name), bytes(prop)
    except (SystemError, UnicodeDecodeError):
        # The name is not UTF-8: read struct fdt_property {tag, len, nameoff}.
        buf = fdt.as_bytearray()
        at = fdt.off_dt_struct() + offset
        length = int.from_bytes(buf[at + 4 : at + 8], "big")
        nameoff = int.from_bytes(buf[at + 8 : at + 12], "big")
        name = _c_string_at(buf, fdt.off_dt_strings() + nameoff)
        return name, bytes(buf[at + 12 : at + 12 + length])


def _node_name(fdt: libfdt.Fdt, offset: int) -> str:
    try:
        name = str(fdt.get_name(offset))
    except (SystemError, UnicodeDecodeError):
        # After the FDT_BEGIN_NODE tag comes the NUL-terminated name.
        return _c_string_at(fdt.as_bytearray(), fdt.off_dt_struct() + offset + 4)
    # The binding hands non-UTF-8 bytes back as lone surrogates, which cannot
    # be printed or written as UTF-8: escape them like property names.
    raw = name.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _walk(
    fdt: libfdt.Fdt, offset: int, node: FdtNode, depth: int, count: list[int]
) -> None:
    if depth > MAX_DEPTH:
        raise FdtError(f"FDT is nested deeper than {MAX_DEPTH} levels")
    quiet = (libfdt.NOTFOUND,)
    prop_offset = fdt.first_property_offset(offset, quiet)
    while prop_offset >= 0:
        name, value = _property(fdt, prop_offset)
        node.properties[name] = value
        prop_offset = fdt.next_property_offset(prop_offset, quiet)
    child = fdt.first_subnode(offset, quiet)
    while child >= 0:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise FdtError(f"FDT has more than {MAX_NODES} nodes")
        name = _node_name(fdt, child)
        sub = FdtNode(path=node.path.rstrip("/") + "/" + name, name=name)
        node.children.append(sub)
        _walk(fdt, child, sub, depth + 1, count)
        child = fdt.next_subnode(child, quiet)


def for_each_fdt_node(root: FdtNode) -> Iterator[FdtNode]:
    """Iterate over a decoded tree in document order (root first)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def fdt_invalid(what: str, problem: object, where: str) -> Finding:
    """A root FDT that libfdt rejects, or whose header is absurd."""
    return error("fdt.invalid", f"{what}: {problem}", where)


def subtree_broken(name: str, problem: str, where: str) -> Finding:
    """A sub-node the kernel would reject, or whose data cannot be had."""
    return error("fdt.subtree-broken", f"sub-node {name!r}: {problem}", where)


@dataclass  # compared by value: a reference is its name, place and size
class SubtreeRef:
    """A sub-node of the root KHO FDT: one ``kho_add_subtree()`` call."""

    name: str
    phys: int | None
    size: int | None
    findings: list[Finding] = field(default_factory=list)


@dataclass(eq=False)
class KhoFdt:
    """A decoded root KHO FDT."""

    totalsize: int
    compatible: str | None
    abi: KhoAbi | None
    memory_map_phys: int | None
    subtrees: list[SubtreeRef]
    root: FdtNode
    findings: list[Finding] = field(default_factory=list)

    def subtree(self, name: str) -> SubtreeRef | None:
        return next((s for s in self.subtrees if s.name == name), None)


def decode_kho_fdt(
    blob: bytes, byteorder: ByteOrder = "little", where: str = ""
) -> KhoFdt:
    """Decode a root KHO FDT: compatible, memory map and sub-nodes.

    Properties are looked up by name (the kernel does not keep their order).
    An unknown ``compatible`` is reported and decoded with the newest known
    ABI's names as far as they fit.

    :raises FdtError: when the bytes are not a valid FDT at all.
    """
    root = parse_fdt(blob)
    findings: list[Finding] = []
    compatible = root.prop_str("compatible")
    abi = abi_for_compatible(compatible)
    if compatible is None:
        findings.append(
            error("fdt.no-compatible", "root FDT has no compatible string", where)
        )
    elif abi is None:
        findings.append(
            warning(
                "fdt.unknown-compatible",
                f"root FDT compatible {compatible!r} is not a KHO ABI this tool "
                "knows; decoding with the newest known layout",
                where,
            )
        )
    layout = abi or newest_abi()

    memory_map_phys = root.prop_u64(layout.memory_map_prop, byteorder)
    if memory_map_phys is None:
        findings.append(
            warning(
                "fdt.no-memory-map",
                f"root FDT has no 8-byte {layout.memory_map_prop!r} property",
                where,
            )
        )

    subtrees = [_subtree_ref(node, layout, byteorder, where) for node in root.children]
    return KhoFdt(
        totalsize=int.from_bytes(blob[4:8], "big"),
        compatible=compatible,
        abi=abi,
        memory_map_phys=memory_map_phys,
        subtrees=subtrees,
        root=root,
        findings=findings,
    )


def _subtree_ref(
    node: FdtNode, abi: KhoAbi, byteorder: ByteOrder, where: str
) -> SubtreeRef:
    ref = SubtreeRef(
        name=node.name, phys=node.prop_u64(abi.data_prop, byteorder), size=None
    )
    if ref.phys is None:
        ref.findings.append(
            subtree_broken(
                node.name,
                f"{abi.data_prop!r} missing or not 8 bytes "
                "(the kernel rejects this subtree)",
                where,
            )
        )
    if abi.size_prop is not None:
        ref.size = node.prop_u64(abi.size_prop, byteorder)
        if ref.size is None and (abi.size_required or abi.size_prop in node.properties):
            ref.findings.append(
                subtree_broken(
                    node.name,
                    f"{abi.size_prop!r} missing or not 8 "
                    "bytes (the kernel rejects this subtree)",
                    where,
                )
            )
    return ref
