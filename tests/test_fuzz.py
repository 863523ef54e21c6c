"""Property-based and fuzz tests (hypothesis) for every decoder.

Invariant everywhere: a decoder given damaged input returns findings or raises
its *documented* exception (``FdtError`` for FDTs, ``LogUnavailable`` for the
log), never anything else, never hangs, never allocates without bound.

Each property runs twice:

* ``test_<name>``: the fast slice of the default run (``python3 -m pytest``),
  a few derandomized examples each (``KHO_DRGN_FAST_EXAMPLES``, default 25);
* ``test_<name>_fuzz``: marked ``fuzz`` (deselected by default), the fuzz job
  ``python3 -m pytest -m fuzz``; ``KHO_DRGN_FUZZ_EXAMPLES`` (default 100000)
  examples are spread over all properties, so the job runs at least that many.

Guards: a hypothesis deadline (slow example = failure), a hard per-example
watchdog (``faulthandler``: a hang dumps the stack and kills the run) and an
address-space cap (``RLIMIT_AS``: unbounded allocation is a ``MemoryError``,
which fails the test).

Seeds are the real KHO FDTs and blobs from the fixtures' debugfs snapshots
(when ``../shared`` is there) plus FDTs built the kernel's way (khobuild).
Every crasher found is pinned as a regression test at the end of the file.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import resource
import string
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import drgn
import libfdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from khobuild import fdt_with_node_props, kho_root_fdt, metadata_blob
from test_memmap import Phys, chunk_map, radix_map

from kho_drgn.abi import (
    FDT_HEADER_SIZE,
    KEXEC_METADATA_V1,
    KNOWN_ABIS,
    MetadataLayout,
)
from kho_drgn.chain import build_chain, find_boot_line, format_chain
from kho_drgn.debugfs import debugfs_report, decode_debugfs
from kho_drgn.fdt import (
    FdtError,
    decode_kho_fdt,
    fdt_header_totalsize,
    for_each_fdt_node,
)
from kho_drgn.findings import Finding
from kho_drgn.log import (
    MAX_LOGGED_FRAMES,
    KernelLog,
    LogRecord,
    find_logged_task,
    find_panic_message,
    panic_reason,
)
from kho_drgn.memmap import (
    CHUNK_BITMAP_BITS_PAGE,
    CHUNK_BITMAP_BITS_SMALL,
    MAX_FINDINGS_PER_CODE,
    RADIX_TREE_DEPTH,
    MapLimits,
    MapWalk,
    PhysReadError,
    PreservedBlock,
    for_each_chunk_block,
    for_each_preserved_block,
    for_each_radix_block,
    summarize_memory_map,
)
from kho_drgn.metadata import decode_c_string, decode_kexec_metadata
from kho_drgn.printk import LogUnavailable, kernel_log
from kho_drgn.render import render_report
from kho_drgn.render import render_subtree_view as render_view
from kho_drgn.report import report_to_dict
from kho_drgn.state import Handover, KhoState, KhoStatus, read_handover
from kho_drgn.subtrees import decode_subtree
from kho_drgn.target import KhoIn, SymbolSource, decode_scratch_array
from kho_drgn.triage.fleet import fleet_report, render_fleet, write_fleet_json
from kho_drgn.vmcoreinfo import parse_vmcoreinfo

ByteOrder = Literal["little", "big"]

# --------------------------------------------------------------------------
# Budgets and guards
# --------------------------------------------------------------------------

FUZZ_TOTAL = int(os.environ.get("KHO_DRGN_FUZZ_EXAMPLES", "100000"))
FAST_EXAMPLES = int(os.environ.get("KHO_DRGN_FAST_EXAMPLES", "25"))
#: Slower than this per example fails the test (hypothesis deadline).
DEADLINE = timedelta(
    milliseconds=int(os.environ.get("KHO_DRGN_FUZZ_DEADLINE_MS", "2000"))
)
#: A single example running longer than this is a hang: dump stacks and exit.
HANG_SECONDS = 60
#: Inputs never exceed this, so no decoder has a reason to use more than
#: ADDRESS_SPACE_HEADROOM of extra address space.
MAX_INPUT = 64 * 1024
ADDRESS_SPACE_HEADROOM = 1 << 30

#: Every finding code the decoders may emit (README: codes are stable).
KNOWN_CODE_PREFIXES = (
    "metadata.",
    "fdt.",
    "memory.",
    "check.",
    "log.",
    "kho.",
    "symbols.",
    "scratch.",
    "memmap.",
    "page.",
    "subtree.",
    "debugfs.",
)


@pytest.fixture(autouse=True, scope="module")
def bounded_address_space() -> Iterator[None]:
    """Cap the address space while these tests run (Linux only)."""
    try:
        with open("/proc/self/status") as f:
            vm = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmSize:"))
    except (OSError, StopIteration):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + ADDRESS_SPACE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _guarded(check: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(value: Any) -> None:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            check(value)
        finally:
            faulthandler.cancel_dump_traceback_later()

    return run


@dataclass(frozen=True)
class Property:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    #: relative share of the fuzz budget
    weight: int = 1


PROPERTIES: list[Property] = []


def prop(
    name: str, strategy: st.SearchStrategy[Any], weight: int = 1
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    def register(check: Callable[[Any], None]) -> Callable[[Any], None]:
        PROPERTIES.append(Property(name, strategy, check, weight))
        return check

    return register


def check_findings(findings: list[Finding]) -> None:
    for finding in findings:
        assert isinstance(finding, Finding)
        assert finding.code.startswith(KNOWN_CODE_PREFIXES), finding.code
        assert isinstance(finding.message, str) and finding.message
        finding.message.encode("utf-8")  # printable: no lone surrogates


# --------------------------------------------------------------------------
# Seeds: real KHO FDTs and blobs from the fixtures, and built ones
# --------------------------------------------------------------------------


def _fixture_seeds() -> dict[str, bytes]:
    """debugfs snapshots of the fixture kernels, if the fixtures are here."""
    from fixturedata import load_truth, shared_dir

    shared = shared_dir()
    if shared is None:
        return {}
    seeds: dict[str, bytes] = {}
    for name in ("chain-aab", "cold-b"):
        if not (shared / "fixtures" / "kho-7.2" / f"{name}.truth.json").exists():
            continue
        for key, value in load_truth(name).debugfs.items():
            seeds[f"{name}:{key}"] = value
    return seeds


FIXTURE_SEEDS = _fixture_seeds()
SUBTREES = [("memblock", 0x1299000, 210), ("kexec-metadata", 0x248000, 73)]
BUILT_FDTS = [
    kho_root_fdt(SUBTREES),
    kho_root_fdt(SUBTREES, byteorder="big", size_first=True),
    kho_root_fdt(
        [("x", 0x5000, 1)], compatible="kho-v1", data_prop="fdt", size_prop=None
    ),
    kho_root_fdt([], compatible=None, memory_map=None),
    fdt_with_node_props({"a": {"preserved-data": b"\1\2\3"}, "b": {}}),
]
SEED_FDTS = [
    v for v in FIXTURE_SEEDS.values() if v[:4] == b"\xd0\x0d\xfe\xed"
] + BUILT_FDTS
SEED_BLOBS = [v for k, v in FIXTURE_SEEDS.items() if k.endswith("kexec-metadata")] + [
    metadata_blob(),
    metadata_blob(b"r" * 64, 0xFFFFFFFF),
    metadata_blob(byteorder="big"),
]

# FDT header fields (byte offsets) and values that reach libfdt's edge cases.
HEADER_FIELDS = [4, 8, 12, 16, 20, 24, 28, 32, 36]
FDT_TOKENS = [1, 2, 3, 4, 9]  # BEGIN_NODE END_NODE PROP NOP END


def _interesting_u32(n: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from(
            [
                *(0, 1, 2, 3, 4, 8, 9, 16, 17, 40, 56, 0x7FFFFFFF, 0x80000000),
                *(0xFFFFFFFF, 0xFFFFFFFC, max(n - 1, 0), n, n + 1, n + 4),
                *FDT_TOKENS,
            ]
        ),
        st.integers(0, 0xFFFFFFFF),
    )


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], max_ops: int = 8) -> bytes:
    """A seed with up to ``max_ops`` byte-, word-, header- or length-level
    mutations (structure-aware enough to get past the magic and header)."""
    blob = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(
            st.sampled_from(
                ["flip", "byte", "word", "header", "cut", "insert", "delete", "dup"]
            )
        )
        n = len(blob)
        pos = draw(st.integers(0, 1 << 16)) % max(n, 1)
        if op == "flip" and n:
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            blob[pos] = draw(st.integers(0, 255))
        elif op == "word" and n >= 4:
            at = (pos & ~3) % (n - 3)
            blob[at : at + 4] = draw(_interesting_u32(n)).to_bytes(4, "big")
        elif op == "header" and n >= FDT_HEADER_SIZE:
            at = draw(st.sampled_from(HEADER_FIELDS))
            blob[at : at + 4] = draw(_interesting_u32(n)).to_bytes(4, "big")
        elif op == "cut":
            del blob[pos:]
        elif op == "insert":
            blob[pos:pos] = draw(st.binary(max_size=16))
        elif op == "delete":
            del blob[pos : pos + draw(st.integers(1, 16))]
        elif op == "dup" and n:
            blob[pos:pos] = blob[pos : pos + draw(st.integers(1, 64))]
    return bytes(blob[:MAX_INPUT])


BYTEORDERS: tuple[ByteOrder, ...] = ("little", "big")
byteorders = st.sampled_from(BYTEORDERS)


# --------------------------------------------------------------------------
# FDT
# --------------------------------------------------------------------------


def _libfdt_accepts(blob: bytes) -> bool:
    """The reference implementation's verdict on the whole tree."""
    if len(blob) < FDT_HEADER_SIZE or blob[:4] != b"\xd0\x0d\xfe\xed":
        return False
    size = int.from_bytes(blob[4:8], "big")
    if size < FDT_HEADER_SIZE or size > len(blob):
        return False
    if libfdt.fdt_check_full(bytearray(blob[:size]), size) != 0:
        return False
    # fdt_check_full also accepts a tree with no node at all; that has no
    # root to read, for libfdt's own accessors as for us.
    struct_at = int.from_bytes(blob[8:12], "big")
    return blob[struct_at : struct_at + 4] == b"\0\0\0\1"


def check_fdt(args: tuple[bytes, ByteOrder]) -> None:
    blob, byteorder = args
    accepted = _libfdt_accepts(blob)
    try:
        fdt = decode_kho_fdt(blob, byteorder, "fuzz")
    except FdtError as e:
        assert str(e)
        # A tree libfdt accepts is only refused for our own walk limits.
        assert not accepted or "deeper" in str(e) or "more than" in str(e), e
        return
    assert accepted, "decoded a tree libfdt's fdt_check_full rejects"
    assert fdt.totalsize == fdt_header_totalsize(blob) <= len(blob)
    nodes = list(for_each_fdt_node(fdt.root))
    assert nodes[0] is fdt.root and len(nodes) <= len(blob)
    for node in nodes:  # everything decoded can be printed as UTF-8
        node.path.encode("utf-8")
        for name in node.properties:
            name.encode("utf-8")
    assert [s.name for s in fdt.subtrees] == [c.name for c in fdt.root.children]
    for ref in fdt.subtrees:
        assert ref.phys is None or 0 <= ref.phys < 1 << 64
        assert ref.size is None or 0 <= ref.size < 1 << 64
        check_findings(ref.findings)
    check_findings(fdt.findings)


@prop("fdt_mutated_seeds", st.tuples(mutated(SEED_FDTS), byteorders), weight=4)
def _fdt_mutated(args: tuple[bytes, ByteOrder]) -> None:
    check_fdt(args)


@st.composite
def random_fdt_like(draw: st.DrawFn) -> bytes:
    """Valid magic and a header of plausible sizes over random bytes."""
    body = draw(st.binary(min_size=0, max_size=512))
    size = FDT_HEADER_SIZE + len(body)
    header = [0xD00DFEED] + [draw(_interesting_u32(size)) for _ in HEADER_FIELDS]
    if draw(st.booleans()):
        header[1] = size
    return struct.pack(">10I", *header) + body


@prop("fdt_random", st.tuples(random_fdt_like(), byteorders), weight=2)
def _fdt_random(args: tuple[bytes, ByteOrder]) -> None:
    check_fdt(args)


node_names = st.text(
    string.ascii_lowercase + string.digits + ",._+-", min_size=1, max_size=20
)
u64s = st.integers(0, (1 << 64) - 1)


@st.composite
def kho_trees(
    draw: st.DrawFn,
) -> tuple[bytes, ByteOrder, str | None, list[tuple[str, int, int]], bool]:
    byteorder = draw(byteorders)
    compatible = draw(st.one_of(st.none(), st.sampled_from([*KNOWN_ABIS, "kho-v9"])))
    names = draw(st.lists(node_names, max_size=12, unique=True))
    subtrees = [(name, draw(u64s), draw(u64s)) for name in names]
    v1 = compatible == "kho-v1"
    blob = kho_root_fdt(
        subtrees,
        compatible=compatible,
        memory_map=draw(st.one_of(st.none(), u64s)),
        byteorder=byteorder,
        size_first=draw(st.booleans()),
        data_prop="fdt" if v1 else "preserved-data",
        size_prop=None if v1 else "blob-size",
    )
    return blob, byteorder, compatible, subtrees, v1


@prop("fdt_roundtrip", kho_trees())
def _fdt_roundtrip(
    args: tuple[bytes, ByteOrder, str | None, list[tuple[str, int, int]], bool],
) -> None:
    """Trees built the kernel's way decode to exactly what was put in."""
    blob, byteorder, compatible, subtrees, v1 = args
    fdt = decode_kho_fdt(blob, byteorder)
    assert fdt.compatible == compatible
    assert (fdt.abi is None) == (compatible not in KNOWN_ABIS)
    # kho_add_subtree inserts each node first: newest first.
    got = [(s.name, s.phys, s.size) for s in fdt.subtrees]
    want = [(n, p, None if v1 else s) for n, p, s in reversed(subtrees)]
    assert got == want
    assert all(not s.findings for s in fdt.subtrees)
    check_fdt((blob, byteorder))


prop_values = st.binary(max_size=24)


@prop(
    "fdt_arbitrary_props",
    st.dictionaries(
        node_names,
        st.dictionaries(
            st.sampled_from(["preserved-data", "blob-size", "fdt", "other"]),
            prop_values,
            max_size=4,
        ),
        max_size=6,
    ),
)
def _fdt_arbitrary_props(nodes: dict[str, dict[str, bytes]]) -> None:
    """Any property bytes: 8-byte ones are read, others are findings."""
    fdt = decode_kho_fdt(fdt_with_node_props(nodes), "little")
    for ref in fdt.subtrees:
        props = nodes[ref.name]
        data = props.get("preserved-data")
        assert ref.phys == (
            int.from_bytes(data, "little") if data and len(data) == 8 else None
        )
        size = props.get("blob-size")
        assert ref.size == (
            int.from_bytes(size, "little") if size and len(size) == 8 else None
        )
        assert bool(ref.findings) == (ref.phys is None or ref.size is None)
        check_findings(ref.findings)


# --------------------------------------------------------------------------
# kexec-metadata
# --------------------------------------------------------------------------


@st.composite
def metadata_layouts(draw: st.DrawFn) -> MetadataLayout:
    """The v1 ABI layout, or a self-consistent one as DWARF could describe
    (version first, then release and count anywhere after it)."""
    if draw(st.booleans()):
        return KEXEC_METADATA_V1
    release_size = draw(st.integers(1, 128))
    release_offset = draw(st.integers(4, 16))
    count_offset = release_offset + release_size + draw(st.integers(0, 8))
    size = count_offset + 4 + draw(st.integers(0, 8))
    return MetadataLayout(size, 0, release_offset, release_size, count_offset, "dwarf")


def _oracle(
    blob: bytes, order: ByteOrder, layout: MetadataLayout, size: int
) -> tuple[bool, str | None, int | None]:
    """The kernel's acceptance rules, restated independently."""
    if min(size, len(blob)) < 4:
        return False, None, None
    version = int.from_bytes(blob[:4], order)
    if version != 1 or min(size, len(blob)) < layout.size:
        return False, None, None
    count = int.from_bytes(blob[layout.count_offset : layout.count_offset + 4], order)
    field = blob[layout.release_offset : layout.release_offset + layout.release_size]
    if b"\0" not in field:
        return False, None, count
    try:
        release = field.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False, None, count
    return True, release, count


@st.composite
def metadata_inputs(
    draw: st.DrawFn,
) -> tuple[bytes, ByteOrder, MetadataLayout, int | None]:
    blob = draw(st.one_of(mutated(SEED_BLOBS), st.binary(max_size=256)))
    size = draw(st.one_of(st.none(), st.integers(0, 200), u64s))
    return blob, draw(byteorders), draw(metadata_layouts()), size


@prop("metadata_mutated", metadata_inputs(), weight=3)
def _metadata(args: tuple[bytes, ByteOrder, MetadataLayout, int | None]) -> None:
    blob, order, layout, size = args
    md = decode_kexec_metadata(blob, order, layout, size, "fuzz")
    declared = len(blob) if size is None else size
    assert md.blob_size == declared
    assert md.raw == blob[: layout.size]
    valid, release, count = _oracle(blob, order, layout, declared)
    assert md.valid == valid
    if valid:
        assert (md.previous_release, md.kexec_count) == (release, count)
        assert "\0" not in (md.previous_release or "")
    else:
        assert md.findings, "an invalid blob must say why"
    check_findings(md.findings)


@prop(
    "metadata_roundtrip",
    st.tuples(
        st.binary(max_size=64).filter(lambda b: b"\0" not in b),
        st.integers(0, 0xFFFFFFFF),
        byteorders,
    ),
)
def _metadata_roundtrip(args: tuple[bytes, int, ByteOrder]) -> None:
    release, count, order = args
    md = decode_kexec_metadata(metadata_blob(release, count, byteorder=order), order)
    try:
        text = release.decode("utf-8")
    except UnicodeDecodeError:
        assert [f.code for f in md.findings] == ["metadata.release-not-utf8"]
        return
    assert md.valid and (md.previous_release, md.kexec_count) == (text, count)


@prop("c_string", st.binary(max_size=128))
def _c_string(data: bytes) -> None:
    value, findings = decode_c_string(data, "x", "fuzz")
    assert (value is None) == bool(findings)
    check_findings(findings)


# --------------------------------------------------------------------------
# A real drgn Program over a synthetic memory image (no dump needed)
# --------------------------------------------------------------------------

PLATFORM = drgn.Platform(
    drgn.Architecture.X86_64,
    drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
)
VMCOREINFO_ADDR = 0xFFFFFFFF80000000


def fake_program(
    virtual: dict[int, bytes], physical: dict[int, bytes], vmcoreinfo: str | None = None
) -> drgn.Program:
    """A drgn Program whose memory is the given segments and whose
    ``VMCOREINFO`` object (when given) is that text, as drgn has it for a
    kernel."""
    prog = drgn.Program(PLATFORM)

    def reader(data: bytes) -> Callable[[int, int, int, bool], bytes]:
        return lambda address, count, offset, phys: data[offset : offset + count]

    for segments, phys in ((virtual, False), (physical, True)):
        for address, data in segments.items():
            if data:
                prog.add_memory_segment(address, len(data), reader(data), phys)
    if vmcoreinfo is not None:
        raw = vmcoreinfo.encode() + b"\0"
        prog.add_memory_segment(VMCOREINFO_ADDR, len(raw), reader(raw), False)
        char_array = prog.array_type(prog.int_type("char", 1, True), len(raw))

        def find(
            prog: drgn.Program,
            name: str,
            flags: drgn.FindObjectFlags,
            filename: str | None,
        ) -> drgn.Object | None:
            if name == "VMCOREINFO":
                return drgn.Object(prog, char_array, address=VMCOREINFO_ADDR)
            return None

        prog.register_object_finder("fuzz-vmcoreinfo", find, enable_index=0)
    return prog


# --------------------------------------------------------------------------
# printk ring buffer through VMCOREINFO (no DWARF)
# --------------------------------------------------------------------------

#: The offsets the 7.2.13 fixture kernels publish (chain-aab's VMCOREINFO).
RING_VMCOREINFO = {
    "OFFSET(printk_ringbuffer.desc_ring)": 0,
    "OFFSET(printk_ringbuffer.text_data_ring)": 48,
    "OFFSET(prb_desc_ring.count_bits)": 0,
    "OFFSET(prb_desc_ring.descs)": 8,
    "OFFSET(prb_desc_ring.infos)": 16,
    "OFFSET(prb_desc_ring.head_id)": 24,
    "OFFSET(prb_desc_ring.tail_id)": 32,
    "SIZE(prb_desc)": 24,
    "OFFSET(prb_desc.state_var)": 0,
    "OFFSET(prb_desc.text_blk_lpos)": 8,
    "OFFSET(prb_data_blk_lpos.begin)": 0,
    "OFFSET(prb_data_blk_lpos.next)": 8,
    "SIZE(printk_info)": 88,
    "OFFSET(printk_info.seq)": 0,
    "OFFSET(printk_info.ts_nsec)": 8,
    "OFFSET(printk_info.text_len)": 16,
    "OFFSET(prb_data_ring.size_bits)": 0,
    "OFFSET(prb_data_ring.data)": 8,
}
RING_BASE = 0xFFFF888000100000
PRB_SYMBOL = 0xFFFFFFFF81000000


@dataclass
class Ring:
    """A printk ring laid out in memory, and what it should read back as."""

    memory: bytearray
    vmcoreinfo: dict[str, int]
    texts: list[bytes]

    def vmcoreinfo_text(self) -> str:
        lines = [f"SYMBOL(prb)={PRB_SYMBOL:x}"]
        lines += [f"{k}={v}" for k, v in self.vmcoreinfo.items()]
        return "\n".join(lines) + "\n"

    def program(self) -> drgn.Program:
        pointer = RING_BASE.to_bytes(8, "little")
        return fake_program(
            {PRB_SYMBOL: pointer, RING_BASE: bytes(self.memory)},
            {},
            self.vmcoreinfo_text(),
        )


def build_ring(texts: list[bytes], count_bits: int, first_id: int) -> Ring:
    """Lay out a consistent lockless ring (kernel/printk/printk_ringbuffer.c)
    holding ``texts`` as finalized records, oldest first."""
    word = 8
    size_bits = 12
    n_desc = 1 << count_bits
    texts = texts[-n_desc:]
    prb, descs = 0, 128
    infos = descs + 24 * n_desc
    data = infos + 88 * n_desc
    memory = bytearray(data + (1 << size_bits))

    def put(offset: int, value: int, size: int = 8) -> None:
        memory[offset : offset + size] = value.to_bytes(size, "little")

    put(prb + 0, count_bits, 4)
    put(prb + 8, RING_BASE + descs)
    put(prb + 16, RING_BASE + infos)
    put(prb + 48, size_bits, 4)
    put(prb + 56, RING_BASE + data)
    lpos = 0
    for i, text in enumerate(texts):
        rid = first_id + i
        idx = rid & (n_desc - 1)
        need = (word + len(text) + word - 1) & ~(word - 1)
        if (lpos & ((1 << size_bits) - 1)) + need > 1 << size_bits:
            lpos = (lpos | ((1 << size_bits) - 1)) + 1  # wrap to the start
        begin = lpos
        lpos += need
        put(descs + idx * 24, rid | (2 << 62))  # desc_finalized
        put(descs + idx * 24 + 8, begin)
        put(descs + idx * 24 + 16, lpos)
        start = data + (begin & ((1 << size_bits) - 1))
        put(start, rid)
        memory[start + word : start + word + len(text)] = text
        put(infos + idx * 88 + 0, i)  # seq
        put(infos + idx * 88 + 8, 1000 * i)  # ts_nsec
        put(infos + idx * 88 + 16, len(text), 2)
    last = first_id + max(len(texts) - 1, 0)
    put(prb + 24, last)  # head_id
    put(prb + 32, first_id)  # tail_id
    return Ring(memory, dict(RING_VMCOREINFO), texts)


record_texts = st.lists(st.binary(min_size=1, max_size=60), max_size=12)


@prop(
    "printk_ring_roundtrip",
    st.tuples(record_texts, st.integers(2, 4), st.integers(0, 1 << 20)),
)
def _printk_roundtrip(args: tuple[list[bytes], int, int]) -> None:
    """A consistent ring reads back exactly, through a real drgn Program."""
    texts, count_bits, first_id = args
    ring = build_ring(texts, count_bits, first_id)
    log = kernel_log(ring.program())
    assert log.source == "printk (VMCOREINFO)"
    assert [r.text for r in log.records] == [
        t.decode("utf-8", "replace") for t in ring.texts
    ]


@st.composite
def damaged_rings(draw: st.DrawFn) -> Ring:
    ring = build_ring(
        draw(record_texts), draw(st.integers(2, 4)), draw(st.integers(0, 1 << 20))
    )
    n = len(ring.memory)
    for _ in range(draw(st.integers(0, 12))):
        at = draw(st.integers(0, n - 1))
        value = draw(
            st.one_of(
                st.integers(0, 255).map(lambda v: bytes([v])),
                st.sampled_from(
                    [0, 1, 24, 31, 32, 63, 64, (1 << 62) | 1, 1 << 63, (1 << 64) - 1]
                ).map(lambda v: v.to_bytes(8, "little")),
                u64s.map(lambda v: v.to_bytes(8, "little")),
            )
        )
        ring.memory[at : at + len(value)] = value
        del ring.memory[n:]
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(ring.vmcoreinfo)))
        ring.vmcoreinfo[key] = draw(
            st.one_of(
                st.integers(-1, 256),
                st.sampled_from([1 << 20, 1 << 31, 1 << 40, (1 << 64) - 1, 1 << 70]),
            )
        )
    return ring


@prop("printk_ring_damaged", damaged_rings(), weight=3)
def _printk_damaged(ring: Ring) -> None:
    """Damaged memory or VMCOREINFO: a log or LogUnavailable, nothing else."""
    try:
        log = kernel_log(ring.program())
    except LogUnavailable as e:
        assert str(e)
        return
    assert len(log.records) <= 1 << 24
    for record in log.records:
        assert isinstance(record.text, str) and len(record.text) <= 0xFFFF


# --------------------------------------------------------------------------
# A whole handover read through drgn: FDT + subtrees + metadata in memory
# --------------------------------------------------------------------------

FDT_PHYS = 0x241000
BLOB_PHYS = 0x248000


@st.composite
def handover_memory(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    """A root FDT (real or built, maybe damaged) pointing at blobs in memory."""
    size = draw(st.sampled_from([0, 1, 72, 73, 74, 4096, 4097, 1 << 20, (1 << 64) - 1]))
    phys = draw(st.sampled_from([BLOB_PHYS, BLOB_PHYS + 4090, 0, (1 << 64) - 8]))
    fdt = kho_root_fdt([("memblock", 0x1299000, 210), ("kexec-metadata", phys, size)])
    if draw(st.booleans()):
        fdt = draw(mutated([fdt, *SEED_FDTS], max_ops=3))
    blob = draw(st.one_of(mutated(SEED_BLOBS, max_ops=3), st.binary(max_size=128)))
    return fdt, blob, draw(st.sampled_from(["incoming", "outgoing"]))


@prop("handover_in_memory", handover_memory(), weight=2)
def _handover(args: tuple[bytes, bytes, str]) -> None:
    """``state.read_handover`` turns every damage into findings."""
    fdt, blob, direction = args
    page = blob.ljust(4096, b"\0")
    prog = fake_program(
        {0xFFFF888000000000 + FDT_PHYS: fdt}, {FDT_PHYS: fdt, BLOB_PHYS: page}
    )
    physical = direction == "incoming"
    address = FDT_PHYS if physical else 0xFFFF888000000000 + FDT_PHYS
    handover = read_handover(prog, direction, address, physical)
    codes = {f.code for f in handover.findings}
    # No root FDT exactly when it was invalid or missing (a missing blob of a
    # subtree is also memory.missing, on the handover too).
    if handover.fdt is None:
        assert codes & {"fdt.invalid", "memory.missing"}
    else:
        assert "fdt.invalid" not in codes
    check_findings(list(handover.all_findings()))


# --------------------------------------------------------------------------
# Pure helpers: chain, log, VMCOREINFO, scratch
# --------------------------------------------------------------------------

log_lines = st.lists(
    st.one_of(
        st.text(max_size=80),
        st.sampled_from(
            [
                "KHO: exec from: 7.2.13-kho-a (count 2)",
                "KHO: exec from:  (count 0)",
                "KHO: exec from: x (count 99999999999999999999999)",
                "Kernel panic - not syncing: sysrq triggered crash",
                "Oops: 0002 [#1] SMP",
                "KHO: kexec-metadata version 2 not supported",
                "CPU: 1 UID: 0 PID: 1 Comm: init Not tainted 7.2.13-kho-b #1",
                "CPU: 0 PID: 99999999999999999999 Comm: a b Tainted: G W",
                "Call Trace:",
                " <TASK>",
                " ? vpanic+0x1ef/0x3c8",
                "RIP: 0033:0x47b7a0",
            ]
        ),
    ),
    max_size=8,
)


@st.composite
def kho_states(draw: st.DrawFn) -> tuple[KhoState, list[str] | None, bool]:
    def handover(direction: str) -> Handover | None:
        if draw(st.booleans()):
            return None
        blob = draw(mutated(SEED_BLOBS, max_ops=2))
        md = decode_kexec_metadata(blob, where=direction)
        return Handover(
            direction, fdt_phys=draw(st.one_of(st.none(), u64s)), metadata=md
        )

    kho_in = None
    if draw(st.booleans()):
        kho_in = KhoIn(
            fdt_phys=draw(u64s),
            scratch_phys=draw(u64s),
            previous_release=draw(st.one_of(st.none(), st.text(max_size=65))),
            kexec_count=draw(st.one_of(st.none(), st.integers(0, 0xFFFFFFFF))),
            has_metadata_copy=draw(st.booleans()),
        )
    state = KhoState(
        symbols=draw(st.sampled_from(list(SymbolSource))),
        release=draw(st.one_of(st.none(), st.text(max_size=65))),
        status=draw(st.sampled_from(list(KhoStatus))),
        enabled=draw(st.one_of(st.none(), st.booleans())),
        kho_in=kho_in,
        incoming=handover("incoming"),
        outgoing=handover("outgoing"),
    )
    return state, draw(st.one_of(st.none(), log_lines)), draw(st.booleans())


@prop("chain", kho_states(), weight=2)
def _chain(args: tuple[KhoState, list[str] | None, bool]) -> None:
    state, lines, wrapped = args
    chain = build_chain(state, lines, wrapped)
    check_findings(chain.findings)
    for live in (False, True):
        line = format_chain(chain, live)
        assert isinstance(line, str) and line


@prop("log_lines", log_lines)
def _log(lines: list[str]) -> None:
    message = find_panic_message(lines)
    assert message is None or any(message in line for line in lines)
    reason = panic_reason(message)
    assert (reason is None) == (message is None)
    boot = find_boot_line(lines)
    assert boot is None or boot.kexec_count >= 0
    log = KernelLog([LogRecord(i, i, t) for i, t in enumerate(lines)])
    assert not log.wrapped and len(log.kho_records()) <= len(lines)
    task = find_logged_task(lines)
    assert task is None or message is not None
    if task is not None:
        assert task.pid >= 0 and task.comm and len(task.stack) <= MAX_LOGGED_FRAMES
        assert all(any(frame in line for line in lines) for frame in task.stack)


@prop("vmcoreinfo_text", st.text(max_size=400))
def _vmcoreinfo(text: str) -> None:
    info = parse_vmcoreinfo(text)
    for key in list(info.entries)[:20]:
        value = info.number(key)
        assert value is None or isinstance(value, int)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


RECORD_PARTS = [(), ("report",), ("report", "chain"), ("report", "kho"),
                ("report", "crash")]  # fmt: skip


@st.composite
def triage_records(draw: st.DrawFn) -> Any:
    """kho-triage records with any part replaced by any JSON value."""
    record: Any = {
        "dump": "d", "host": "h", "status": "ok",
        "report": {
            "kho": {"status": draw(st.sampled_from(["kexec", "cold-boot", "x"]))},
            "chain": {"kexec_count": 2, "previous_release": "a",
                      "current_release": "b"},
            "crash": {"panic_reason": "Oops at 0x1"},
        },
    }  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(RECORD_PARTS))
        target = record
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            target[key] = draw(json_values)
    return record if draw(st.booleans()) else draw(json_values)


@prop("fleet_records", st.lists(triage_records(), max_size=6))
def _fleet(records: list[Any]) -> None:
    """Both engines read any records file alike and account for every line."""
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        seen = []
        for engine in ("python", "duckdb"):
            fleet = fleet_report([path], engine)
            try:
                assert fleet.dumps == len(records)
                failed = list(fleet.failed())
                transitions = fleet.tables["by_transition"]
                assert len(failed) + sum(n for _, n in transitions) == len(records)
                text, data = io.StringIO(), io.StringIO()
                render_fleet(fleet, text, hosts=True)
                write_fleet_json(fleet, data, hosts=True)
                report = json.loads(data.getvalue())
                assert report.pop("engine") == engine
                assert report["dumps"] == len(records)
                seen.append((fleet.tables, failed, report))
            finally:
                fleet.close()
        assert seen[0] == seen[1]


@prop("scratch_array", st.tuples(st.binary(max_size=512), byteorders))
def _scratch(args: tuple[bytes, ByteOrder]) -> None:
    raw, order = args
    areas = decode_scratch_array(raw, order)
    assert len(areas) == len(raw) // 16


# --------------------------------------------------------------------------
# Subtree blobs, with hostile memory behind their pointers
# --------------------------------------------------------------------------

SUBTREE_NAMES = ["memblock", "kho_test", "LUO", "kexec-metadata", "acme", ""]
#: Pages the pointers in fuzzed blobs may (or may not) lead to.
FUZZ_PAGES = [0x10000, 0x20000, 0x30000, 0x1FE000]
SEED_SUBTREES = [v for k, v in FIXTURE_SEEDS.items() if "/sub_fdts/" in k] + [
    b"luo-v5\0\0" + struct.pack("<QQQ", 3, FUZZ_PAGES[0], 0),
    b"luo-v5\0\0" + struct.pack("<QQQ", 3, FUZZ_PAGES[1] + 8, FUZZ_PAGES[2]),
]


@st.composite
def hostile_pages(draw: st.DrawFn) -> dict[int, bytes]:
    """A few pages whose words point at each other, at themselves, at pages
    that are not there, or anywhere."""
    words = st.one_of(
        st.sampled_from([0, 1, 2, 16, 255, 1 << 40, (1 << 64) - 1]),
        st.sampled_from(FUZZ_PAGES),
        st.integers(0, (1 << 64) - 1),
    )
    pages = {}
    for address in draw(st.lists(st.sampled_from(FUZZ_PAGES), unique=True)):
        values = draw(st.lists(words, max_size=12))
        pages[address] = struct.pack(f"<{len(values)}Q", *values).ljust(4096, b"\0")
    return pages


def _reader(pages: dict[int, bytes]) -> Callable[[int, int], bytes]:
    def read(address: int, size: int) -> bytes:
        base = address & ~4095
        if base not in pages:
            raise OSError(f"no page at {address:#x}")
        return pages[base][address - base : address - base + size]

    return read


@prop(
    "subtree_blobs",
    st.tuples(
        st.sampled_from(SUBTREE_NAMES),
        st.one_of(mutated(SEED_SUBTREES + SEED_BLOBS), st.binary(max_size=256)),
        byteorders,
        hostile_pages(),
    ),
    weight=3,
)
def _subtree(args: tuple[str, bytes, ByteOrder, dict[int, bytes]]) -> None:
    """``decode_subtree`` never raises; its view is JSON-ready and printable."""
    name, blob, byteorder, pages = args
    view = decode_subtree(name, blob, byteorder, read_phys=_reader(pages))
    check_findings(view.findings)
    json.dumps(view.to_dict())
    view.summary().encode("utf-8")
    render_view("incoming", view).encode("utf-8")


@st.composite
def hostile_maps(draw: st.DrawFn) -> tuple[dict[int, bytes], int, str, int, MapLimits]:
    """Map pages whose words are pointers at each other (cycles, shared
    nodes), past memory, unaligned, at missing pages, or all-ones bitmaps."""
    addresses = [0x10000, 0x11000, 0x12000, 0x13000, 0x14000]
    words = st.one_of(
        st.sampled_from(addresses),
        st.sampled_from([0, 8, 0x10008, 1 << 52, (1 << 64) - 4096, 0x99000]),
        st.integers(0, (1 << 64) - 1),
    )
    pages = {}
    for address in draw(st.lists(st.sampled_from(addresses), unique=True, min_size=1)):
        if draw(st.integers(0, 4)) == 0:
            pages[address] = b"\xff" * 4096  # a full leaf or bitmap
            continue
        slots = draw(st.dictionaries(st.integers(0, 511), words, max_size=16))
        page = bytearray(4096)
        for index, value in slots.items():
            page[index * 8 : index * 8 + 8] = value.to_bytes(8, "little")
        pages[address] = bytes(page)
    limits = MapLimits(
        max_phys=draw(st.sampled_from([1 << 20, 1 << 32, 1 << 52])),
        max_nodes=draw(st.integers(1, 64)),
        max_blocks=draw(st.integers(1, 5000)),
    )
    root = draw(st.one_of(st.sampled_from(addresses), words))
    return pages, root, draw(st.sampled_from(["radix", "chunks"])), \
        draw(st.sampled_from([4096, 32768, 100])), limits  # fmt: skip


@prop("memmap_hostile", hostile_maps(), weight=3)
def _memmap(args: tuple[dict[int, bytes], int, str, int, MapLimits]) -> None:
    """The walkers never raise, never exceed their limits, and say when a
    guard cut the walk short."""
    pages, root, map_format, bits, limits = args
    summary = summarize_memory_map(
        _reader(pages), root, map_format=map_format,  # type: ignore[arg-type]
        bitmap_bits=bits, limits=limits, missing=(OSError,),
    )  # fmt: skip
    check_findings(summary.findings)
    assert summary.blocks <= limits.max_blocks
    assert summary.nodes_read <= limits.max_nodes
    for r in summary.ranges:
        assert 0 <= r.start < r.end <= limits.max_phys
    if summary.findings and not summary.complete:
        assert any(f.severity.value != "info" for f in summary.findings)
    json.dumps(summary.to_dict())


# --------------------------------------------------------------------------
# Preserved-memory map walkers, called directly, on hostile memory
# --------------------------------------------------------------------------

#: Where hostile map pages live; pointers aim at them, at 512-byte kmalloc
#: objects inside them, at themselves, past max_phys and at missing pages.
MAP_PAGES = [0x100000 + i * 4096 for i in range(16)]
#: Codes that mean a guard cut the walk short (complete must be False).
MAP_GUARD_CODES = {
    "page.cycle", "page.bad-pointer",
    "memmap.pointer-null", "memmap.not-a-map", "memmap.invalid-key",
    "page.too-many", "memmap.too-many-blocks", "memmap.chunk-bad-count",
    "memmap.chunk-bad-order", "memmap.bad-depth", "memmap.bad-bitmap-size",
    "memmap.block-out-of-range", "memory.missing",
}  # fmt: skip


@dataclass
class HostileMap:
    pages: dict[int, bytes]
    root: int
    byteorder: ByteOrder
    map_format: str
    depth: int
    bits: int
    limits: MapLimits
    #: how read_phys fails on a missing page: an exception, or a short read
    failure: str


@st.composite
def hostile_map_memory(draw: st.DrawFn) -> HostileMap:
    """Pages of u64 words that are pointers into the page set (self-pointers,
    ancestors, shared children, 512-byte objects), past memory, unaligned or
    at missing pages, chunk headers with wild orders and counts, full and
    random bitmaps, random bytes and text: under random limits and depths."""
    byteorder: ByteOrder = draw(byteorders)
    end = "<" if byteorder == "little" else ">"
    present = draw(st.lists(st.sampled_from(MAP_PAGES), unique=True, max_size=12))
    max_phys = draw(st.sampled_from([1 << 21, 1 << 32, 1 << 52, 1 << 64]))
    pointers = st.one_of(
        st.sampled_from(MAP_PAGES),  # present or missing
        st.sampled_from(MAP_PAGES).map(lambda a: a + 512 * (a >> 12 & 7)),
        st.sampled_from([max_phys, max_phys - 4096, (1 << 64) - 4096, 1 << 52]).map(
            lambda a: a % (1 << 64)
        ),
        st.sampled_from([8, 0x100008, 0x100200, 0x7FF000]),
    )
    words = st.one_of(pointers, st.just(0), st.integers(0, (1 << 64) - 1))
    pages: dict[int, bytes] = {}
    for address in present:
        kind = draw(st.integers(0, 9))
        if kind <= 1:  # a full or patterned leaf/bitmap
            pages[address] = draw(st.sampled_from([b"\xff", b"\x55", b"\x80"])) * 4096
        elif kind == 2:
            pages[address] = draw(st.binary(min_size=4096, max_size=4096))
        elif kind == 3:
            pages[address] = (b"Linux version 7.2.13-kho " * 164)[:4096]
        elif kind <= 5:  # a chunk: next, order, num_elms, {phys_start, bitmap}
            page = bytearray(4096)
            struct.pack_into(
                end + "QII", page, 0,
                draw(st.one_of(pointers, st.just(address), st.just(0))),
                draw(st.one_of(st.integers(0, 12), st.integers(0, (1 << 32) - 1))),
                draw(st.one_of(st.integers(0, 256), st.integers(0, (1 << 32) - 1))),
            )  # fmt: skip
            starts = st.one_of(
                st.integers(0, 64).map(lambda n: n << 27),
                st.integers(0, (1 << 64) - 1),
                st.integers(1, 1 << 20).map(lambda n: (1 << 64) - (n << 12)),
            )
            entries = st.tuples(starts, st.one_of(pointers, st.just(0), words))
            for n, (start, bitmap) in enumerate(draw(st.lists(entries, max_size=8))):
                struct.pack_into(end + "QQ", page, 16 + n * 16, start, bitmap)
            pages[address] = bytes(page)
        else:  # a radix node: real trees use the low slots
            page = bytearray(4096)
            slots = draw(
                st.dictionaries(
                    st.one_of(st.integers(0, 3), st.integers(0, 511)),
                    st.one_of(words, st.just(address), st.just(address + 8)),
                    max_size=24,
                )
            )
            for index, value in slots.items():
                struct.pack_into(end + "Q", page, index * 8, value)
            pages[address] = bytes(page)
    limits = MapLimits(
        max_phys=max_phys,
        max_nodes=draw(st.integers(0, 600)),
        max_blocks=draw(st.integers(0, 40000)),
    )
    return HostileMap(
        pages,
        draw(st.one_of(st.sampled_from(present or MAP_PAGES), words)),
        byteorder,
        draw(st.sampled_from(["radix", "chunks"])),
        draw(st.one_of(st.just(RADIX_TREE_DEPTH), st.integers(-1, 9))),
        draw(st.sampled_from([CHUNK_BITMAP_BITS_SMALL, CHUNK_BITMAP_BITS_PAGE, 64])),
        limits,
        draw(st.sampled_from(["phys", "os", "short"])),
    )


def _hostile_reader(m: HostileMap) -> Callable[[int, int], bytes]:
    def read(address: int, size: int) -> bytes:
        base = address & ~4095
        if base not in m.pages:
            if m.failure == "short":
                return b"\0" * (size // 2)
            raise PhysReadError(f"{address:#x}") if m.failure == "phys" else OSError()
        return m.pages[base][address - base : address - base + size]

    return read


def check_map_walk(
    blocks: list[PreservedBlock], walk: MapWalk, limits: MapLimits
) -> None:
    """What every walk promises, however hostile the map."""
    check_findings(walk.findings)
    assert len(blocks) == walk.blocks <= limits.max_blocks
    assert walk.nodes_read <= limits.max_nodes
    for block in blocks:
        assert 0 <= block.order <= 52
        assert block.phys >= 0 and block.end <= min(limits.max_phys, 1 << 64)
    guards = {f.code for f in walk.findings} & MAP_GUARD_CODES
    assert walk.complete == (not guards), (walk.complete, guards)
    if walk.invalid_keys:
        assert "memmap.invalid-key" in guards
    if walk.out_of_range_blocks:
        assert "memmap.block-out-of-range" in guards
    # at most MAX_FINDINGS_PER_CODE of a code, and "... and N more" only
    # after that many (a finding may stand for many keys or blocks)
    for code in {f.code for f in walk.findings}:
        kept = [f for f in walk.findings if f.code == code]
        more = [f for f in kept if f.message.startswith("... and ")]
        plain = len(kept) - len(more)
        assert len(more) <= 1 and plain <= MAX_FINDINGS_PER_CODE
        assert not more or plain == MAX_FINDINGS_PER_CODE, (code, plain)


@prop("memmap_walkers_hostile", hostile_map_memory(), weight=3)
def _memmap_walkers(m: HostileMap) -> None:
    """for_each_radix_block / for_each_chunk_block on hostile pages: they
    return (findings, never an exception), stay within max_nodes and
    max_blocks, yield only blocks below max_phys, and say complete=False
    exactly when a guard fired."""
    walk = MapWalk(where="fuzz")
    if m.map_format == "radix":
        blocks = list(
            for_each_radix_block(
                _hostile_reader(m), m.root, m.byteorder, limits=m.limits,
                walk=walk, depth=m.depth,
            )
        )  # fmt: skip
    else:
        blocks = list(
            for_each_chunk_block(
                _hostile_reader(m), m.root, m.byteorder, bitmap_bits=m.bits,
                limits=m.limits, walk=walk,
            )
        )  # fmt: skip
    check_map_walk(blocks, walk, m.limits)
    json.dumps([f.to_dict() for f in walk.findings])


@st.composite
def damaged_kernel_maps(
    draw: st.DrawFn,
) -> tuple[Phys, int, str, int, bool, set[tuple[int, int]]]:
    """A map built the kernel's way (test_memmap's radix_map / chunk_map), then
    damaged: words overwritten with ancestors, self, wild or missing
    pointers, huge counts; pages dropped or zeroed."""
    blocks = draw(
        st.sets(
            st.tuples(st.integers(0, (1 << 28) - 1), st.integers(0, 20)).map(
                lambda t: (t[0] >> t[1] << (t[1] + 12), t[1])
            ),
            max_size=12,
        )
    )
    byteorder = draw(byteorders)
    map_format = draw(st.sampled_from(["radix", "chunks"]))
    bits = draw(st.sampled_from([CHUNK_BITMAP_BITS_SMALL, CHUNK_BITMAP_BITS_PAGE]))
    if map_format == "radix":
        mem, root = radix_map(sorted(blocks), byteorder)
    else:
        mem, root = chunk_map(sorted(blocks), bits, byteorder)
    addresses = sorted(mem.pages) or [0x100000]
    edits = draw(
        st.lists(
            st.tuples(
                st.sampled_from(addresses),
                st.integers(0, 511),
                st.one_of(
                    st.sampled_from(addresses),  # an ancestor, a sibling, itself
                    st.sampled_from([0, 8, 1 << 52, (1 << 64) - 1, 0x7FF000]),
                    st.integers(0, (1 << 64) - 1),
                ),
            ),
            max_size=6,
        )
    )
    for address, index, value in edits:
        if address in mem.pages:
            mem.set_u64(address + index * 8, value)
    dropped = draw(st.lists(st.sampled_from(addresses), max_size=2))
    for address in dropped:
        if draw(st.booleans()):
            mem.pages.pop(address, None)
        elif address in mem.pages:
            mem.pages[address][:] = bytes(4096)
    return mem, root, map_format, bits, bool(edits or dropped), blocks


@prop("memmap_kernel_maps_damaged", damaged_kernel_maps(), weight=2)
def _memmap_damaged(
    args: tuple[Phys, int, str, int, bool, set[tuple[int, int]]],
) -> None:
    """Kernel-built maps, damaged: the same promises; undamaged, the exact
    blocks come back, whole."""
    mem, root, map_format, bits, damaged, blocks = args
    limits = MapLimits(max_phys=1 << 44, max_nodes=400, max_blocks=5000)
    walk = MapWalk()
    found = list(
        for_each_preserved_block(
            mem.read_phys, root, mem.byteorder,  # type: ignore[arg-type]
            map_format=map_format, bitmap_bits=bits,  # type: ignore[arg-type]
            limits=limits, walk=walk,
        )
    )  # fmt: skip
    check_map_walk(found, walk, limits)
    if not damaged:
        assert {(b.phys, b.order) for b in found} == blocks and walk.complete


DEBUGFS_PATHS = [
    "in/fdt", "out/fdt", "kho/in/fdt",
    "in/sub_fdts/kexec-metadata", "in/sub_fdts/memblock", "out/sub_fdts/kho_test",
    "out/sub_fdts/LUO", "out/sub_fdts/x", "out/scratch_phys", "out/scratch_len",
]  # fmt: skip


@prop(
    "debugfs_trees",
    st.tuples(
        st.dictionaries(
            st.one_of(st.sampled_from(DEBUGFS_PATHS), st.text(max_size=20)),
            st.one_of(
                mutated(SEED_FDTS + SEED_SUBTREES + SEED_BLOBS, max_ops=3),
                st.sampled_from([b"0x1000\n0x2000\n", b"zz\n", b""]),
                st.binary(max_size=64),
            ),
            max_size=8,
        ),
        byteorders,
    ),
    weight=2,
)
def _debugfs(args: tuple[dict[str, bytes], ByteOrder]) -> None:
    """A damaged or partial debugfs tree decodes to findings, never raises."""
    files, byteorder = args
    state = decode_debugfs(files, byteorder)
    check_findings(state.all_findings())
    report = debugfs_report(state, None)
    json.dumps(report_to_dict(report))
    render_report(report, subtree_detail=True).encode("utf-8")


# --------------------------------------------------------------------------
# Regression tests: every crasher the fuzz job found, pinned
# --------------------------------------------------------------------------


def _rename_in_strings(blob: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and blob.count(old) == 1
    return blob.replace(old, new)


def test_regression_property_name_not_utf8() -> None:
    """Found by fdt_mutated_seeds: a property name with a byte >= 0x80 in the
    strings block made libfdt's binding raise SystemError (exit 4).  The
    kernel looks properties up by name and would still use the tree, so the
    name is escaped and the rest decoded."""
    blob = _rename_in_strings(
        kho_root_fdt(SUBTREES), b"preserved-memory-map", b"\x80reserved-memory-map"
    )
    fdt = decode_kho_fdt(blob)
    assert "\\x80reserved-memory-map" in fdt.root.properties
    assert [f.code for f in fdt.findings] == ["fdt.no-memory-map"]
    md = fdt.subtree("kexec-metadata")
    assert md is not None and (md.phys, md.size) == (0x248000, 73)


def test_regression_node_name_not_utf8() -> None:
    blob = _rename_in_strings(kho_root_fdt(SUBTREES), b"memblock", b"memb\xffock")
    fdt = decode_kho_fdt(blob)
    assert [s.name for s in fdt.subtrees] == ["kexec-metadata", "memb\\xffock"]


#: Found by the 700k fuzz run (fdt_mutated_seeds, from the real memblock
#: sub-FDT): the structure block starts with FDT_END, which fdt_check_full
#: accepts; walking it raised libfdt.FdtException (BADOFFSET), not FdtError,
#: so the script exited 4.
NO_ROOT_NODE = bytes.fromhex(
    "d00dfeed000000d200000040000000bc0000003000000011000000100000000000000016"
    "0000007c0000000000000000000000000000000000000000000000000000000900000000"
    "000000030000000c0000000b6d656d626c6f636b2d763100000000016b686f7465737400"
    "000000030000000f0000000b726573657276652d6d656d2d763100000000000300000008"
    "0000000500c0661f00000000000000030000000800000000000010000000000000000002"
    "000000020000000973697a6500737461727400636f6d70617469626c6500"
)


def test_regression_fdt_without_root_node() -> None:
    assert libfdt.fdt_check_full(bytearray(NO_ROOT_NODE), len(NO_ROOT_NODE)) == 0
    with pytest.raises(FdtError, match="no root node"):
        decode_kho_fdt(NO_ROOT_NODE)
    built = bytearray(kho_root_fdt(SUBTREES))
    struct_at = int.from_bytes(built[8:12], "big")
    built[struct_at : struct_at + 4] = (9).to_bytes(4, "big")  # FDT_END first
    with pytest.raises(FdtError, match="no root node"):
        decode_kho_fdt(bytes(built))


def test_regression_printk_struct_size_implausible() -> None:
    """Found by printk_ring_damaged: SIZE(prb_desc) from a damaged VMCOREINFO
    made the reader allocate that many bytes per record (MemoryError)."""
    ring = build_ring([b"hello"], 2, 0)
    ring.vmcoreinfo["SIZE(prb_desc)"] = 1 << 40
    with pytest.raises(LogUnavailable, match="implausible"):
        kernel_log(ring.program())
    ring.vmcoreinfo["SIZE(prb_desc)"] = -1
    with pytest.raises(LogUnavailable, match="implausible"):
        kernel_log(ring.program())


def test_regression_printk_address_overflow() -> None:
    """Found by printk_ring_damaged: a damaged descs pointer or offset made an
    address past 2^64, and drgn's OverflowError escaped (exit 4)."""
    ring = build_ring([b"hello"], 2, 0)
    ring.memory[8:16] = ((1 << 64) - 8).to_bytes(8, "little")  # descs
    with pytest.raises(LogUnavailable, match="not readable"):
        kernel_log(ring.program())


# --------------------------------------------------------------------------
# Test generation: a fast slice for the default run, the fuzz job behind -m fuzz
# --------------------------------------------------------------------------


def _fast_settings() -> settings:
    return settings(
        max_examples=FAST_EXAMPLES,
        deadline=DEADLINE,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=DEADLINE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


def _body(p: Property) -> Callable[[Any], None]:
    check = _guarded(p.check)

    def body(value: Any) -> None:
        check(value)

    body.__qualname__ = body.__name__ = p.name
    return body


def _make_tests() -> None:
    total_weight = sum(p.weight for p in PROPERTIES)
    for p in PROPERTIES:
        examples = max(1, math.ceil(FUZZ_TOTAL * p.weight / total_weight))

        body = _body(p)
        fast = _fast_settings()(given(p.strategy)(body))
        fast.__name__ = fast.__qualname__ = f"test_{p.name}"
        fuzz = pytest.mark.fuzz(_fuzz_settings(examples)(given(p.strategy)(body)))
        fuzz.__name__ = fuzz.__qualname__ = f"test_{p.name}_fuzz"
        globals()[fast.__name__] = fast
        globals()[fuzz.__name__] = fuzz


_make_tests()
