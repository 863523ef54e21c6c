"""Build KHO FDTs and blobs the way the kernel does, for decoder tests.

The root is written with libfdt's sequential writer (kho_init), then each
subtree is added with the read-write API (kho_add_subtree: fdt_add_subnode +
fdt_setprop with the CPU's raw u64 bytes), so nodes come newest first just as
in the fixture kernels.
"""

from __future__ import annotations

import struct
from typing import Literal

import libfdt

ByteOrder = Literal["little", "big"]


def raw_u64(value: int, byteorder: ByteOrder = "little") -> bytes:
    return value.to_bytes(8, byteorder)


def kho_root_fdt(
    subtrees: list[tuple[str, int, int]],
    compatible: str | None = "kho-v4",
    memory_map: int | None = 0x228000,
    byteorder: ByteOrder = "little",
    size_first: bool = False,
    data_prop: str = "preserved-data",
    size_prop: str | None = "blob-size",
) -> bytes:
    """A root KHO FDT with ``(name, phys, size)`` subtrees added in order."""
    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        if compatible is not None:
            sw.property_string("compatible", compatible)
        if memory_map is not None:
            sw.property("preserved-memory-map", raw_u64(memory_map, byteorder))
    fdt = sw.as_fdt()
    fdt.resize(4096)
    for name, phys, size in subtrees:
        node = fdt.add_subnode(0, name)
        props = [(data_prop, raw_u64(phys, byteorder))]
        if size_prop is not None:
            props.append((size_prop, raw_u64(size, byteorder)))
        if size_first:
            props.reverse()
        for prop, value in props:
            fdt.setprop(node, prop, value)
    fdt.pack()
    return bytes(fdt.as_bytearray())


def fdt_with_node_props(nodes: dict[str, dict[str, bytes]]) -> bytes:
    """An FDT with arbitrary root-level nodes and raw properties."""
    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property_string("compatible", "kho-v4")
        sw.property("preserved-memory-map", raw_u64(0x1000))
        for name, props in nodes.items():
            with sw.add_node(name):
                for prop, value in props.items():
                    sw.property(prop, value)
    return bytes(sw.as_fdt().as_bytearray())


def metadata_blob(
    release: bytes = b"7.2.13-kho-a",
    count: int = 2,
    version: int = 1,
    byteorder: ByteOrder = "little",
    release_field: bytes | None = None,
) -> bytes:
    """A packed ``struct kho_kexec_metadata`` (v1: 73 bytes)."""
    order = "<" if byteorder == "little" else ">"
    field = release_field if release_field is not None else release.ljust(65, b"\0")
    assert len(field) == 65
    return struct.pack(f"{order}I65sI", version, field, count)
