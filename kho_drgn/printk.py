"""Reading the kernel log from a target.

With DWARF, drgn's own printk helpers do it.  Without a matching vmlinux, the
lockless ring buffer (Linux 5.10+) is walked with the struct offsets that
VMCOREINFO publishes for makedumpfile and crash, so the KHO boot lines are
still found at 3 a.m. on a dump with no debuginfo.
"""

from __future__ import annotations

from typing import NamedTuple

from drgn import FaultError, PlatformFlags, Program

from kho_drgn.log import KernelLog, LogRecord
from kho_drgn.target import (
    TARGET_ERRORS,
    SymbolSource,
    kho_target,
    symbol_source,
    target_byteorder,
)
from kho_drgn.vmcoreinfo import VmcoreInfo

# enum desc_state in kernel/printk/printk_ringbuffer.h
_DESC_COMMITTED = 1
_DESC_FINALIZED = 2
#: Rings larger than this are corrupt (the kernel caps log_buf_len at 2^25).
_MAX_COUNT_BITS = 24
_MAX_SIZE_BITS = 31
#: VMCOREINFO offsets and struct sizes larger than this are corrupt (the
#: structs are a few dozen bytes); reading ``SIZE(prb_desc)`` bytes per
#: record must not become a gigabyte allocation.
_MAX_STRUCT_SIZE = 4096
_ADDRESS_LIMIT = 1 << 64


class LogUnavailable(Exception):
    """The log could not be read; the message says why."""


def kernel_log(prog: Program) -> KernelLog:
    """Read the printk ring buffer.

    :raises LogUnavailable: when neither DWARF nor VMCOREINFO allows it.
    """
    if symbol_source(prog) is SymbolSource.DWARF:
        try:
            from drgn.helpers.linux.printk import get_printk_records

            return KernelLog(
                records=[
                    LogRecord(r.seq, r.timestamp, r.text.decode("utf-8", "replace"))
                    for r in get_printk_records(prog)
                ],
                source="printk (DWARF)",
            )
        except TARGET_ERRORS:
            pass  # fall through to the VMCOREINFO reader
    info = kho_target(prog).vmcoreinfo
    if info is None:
        raise LogUnavailable("no debug info for printk and no VMCOREINFO")
    try:
        return _read_log_vmcoreinfo(prog, info)
    except (FaultError, OverflowError, ValueError) as e:
        # FaultError: not in the dump; OverflowError/ValueError: a damaged
        # pointer makes an address outside 0..2^64 (drgn refuses it).
        raise LogUnavailable(f"printk ring buffer not readable: {e}") from e


class _RingLayout(NamedTuple):
    """Offsets of the lockless printk ring, as VMCOREINFO publishes them."""

    prb: int
    desc_ring: int
    data_ring: int
    count_bits: int
    size_bits: int
    descs: int
    infos: int
    head_id: int
    tail_id: int
    data: int
    desc_size: int
    state_var: int
    lpos_begin: int
    lpos_next: int
    info_size: int
    seq: int
    ts_nsec: int
    text_len: int

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> _RingLayout:
        def need(key: str) -> int:
            value = info.number(key)
            if value is None:
                raise LogUnavailable(f"VMCOREINFO lacks {key}: cannot read printk")
            limit = _ADDRESS_LIMIT if key.startswith("SYMBOL(") else _MAX_STRUCT_SIZE
            if not 0 <= value < limit or (key.startswith("SIZE(") and not value):
                raise LogUnavailable(f"VMCOREINFO {key}={value} is implausible")
            return value

        lpos = need("OFFSET(prb_desc.text_blk_lpos)")
        return cls(
            prb=need("SYMBOL(prb)"),
            desc_ring=need("OFFSET(printk_ringbuffer.desc_ring)"),
            data_ring=need("OFFSET(printk_ringbuffer.text_data_ring)"),
            count_bits=need("OFFSET(prb_desc_ring.count_bits)"),
            size_bits=need("OFFSET(prb_data_ring.size_bits)"),
            descs=need("OFFSET(prb_desc_ring.descs)"),
            infos=need("OFFSET(prb_desc_ring.infos)"),
            head_id=need("OFFSET(prb_desc_ring.head_id)"),
            tail_id=need("OFFSET(prb_desc_ring.tail_id)"),
            data=need("OFFSET(prb_data_ring.data)"),
            desc_size=need("SIZE(prb_desc)"),
            state_var=need("OFFSET(prb_desc.state_var)"),
            lpos_begin=lpos + need("OFFSET(prb_data_blk_lpos.begin)"),
            lpos_next=lpos + need("OFFSET(prb_data_blk_lpos.next)"),
            info_size=need("SIZE(printk_info)"),
            seq=need("OFFSET(printk_info.seq)"),
            ts_nsec=need("OFFSET(printk_info.ts_nsec)"),
            text_len=need("OFFSET(printk_info.text_len)"),
        )


def _read_log_vmcoreinfo(prog: Program, info: VmcoreInfo) -> KernelLog:
    lay = _RingLayout.from_vmcoreinfo(info)
    order = target_byteorder(prog)
    word = (
        8
        if prog.platform is None or (prog.platform.flags & PlatformFlags.IS_64_BIT)
        else 4
    )

    def uint(raw: bytes, offset: int, size: int) -> int:
        return int.from_bytes(raw[offset : offset + size], order)

    prb = prog.read_word(lay.prb)
    desc_ring = prb + lay.desc_ring
    data_ring = prb + lay.data_ring
    count_bits = uint(prog.read(desc_ring + lay.count_bits, 4), 0, 4)
    size_bits = uint(prog.read(data_ring + lay.size_bits, 4), 0, 4)
    if count_bits > _MAX_COUNT_BITS or size_bits > _MAX_SIZE_BITS:
        raise LogUnavailable(
            f"printk ring sizes are implausible (count_bits {count_bits}, "
            f"size_bits {size_bits})"
        )
    descs = prog.read_word(desc_ring + lay.descs)
    infos = prog.read_word(desc_ring + lay.infos)
    data = prog.read_word(data_ring + lay.data)

    flags_shift = word * 8 - 2
    id_mask = (1 << flags_shift) - 1
    desc_mask = (1 << count_bits) - 1
    data_mask = (1 << size_bits) - 1
    current = prog.read_word(desc_ring + lay.tail_id) & id_mask
    head = prog.read_word(desc_ring + lay.head_id) & id_mask

    records: list[LogRecord] = []
    # At most one pass over the descriptor ring, whatever head/tail say.
    for _ in range(desc_mask + 1):
        idx = current & desc_mask
        desc = prog.read(descs + idx * lay.desc_size, lay.desc_size)
        state_var = uint(desc, lay.state_var, word)
        state = (state_var >> flags_shift) & 3
        if (state_var & id_mask) == current and state in (
            _DESC_COMMITTED,
            _DESC_FINALIZED,
        ):
            start = (uint(desc, lay.lpos_begin, word) & data_mask) + word
            end = uint(desc, lay.lpos_next, word) & data_mask
            if start > end:
                start = word  # the block wrapped to the start of the data ring
            if start != end:  # else a data-less record
                raw_info = prog.read(infos + idx * lay.info_size, lay.info_size)
                text_len = min(uint(raw_info, lay.text_len, 2), end - start)
                text = prog.read(data + start, text_len) if text_len > 0 else b""
                records.append(
                    LogRecord(
                        seq=uint(raw_info, lay.seq, 8),
                        timestamp_ns=uint(raw_info, lay.ts_nsec, 8),
                        text=text.decode("utf-8", "replace"),
                    )
                )
        if current == head:
            break
        current = (current + 1) & id_mask
    return KernelLog(records=records, source="printk (VMCOREINFO)")
