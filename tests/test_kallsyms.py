"""kho-drgn's few-symbols kallsyms reader against drgn's full index, on every era."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
from datetime import timedelta

import drgn
import pytest
from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms
from fixturedata import decompressed, fixture_path
from hypothesis import given, settings
from hypothesis import strategies as st

from kho_drgn.kallsyms import kallsyms_lookup, read_kallsyms_tables

pytestmark = pytest.mark.fixtures

DUMPS = {
    "7.2": "kho-7.2/chain-aab.vmcore.xz",
    "7.2-kdump": "kho-7.2-kdump/kdump.vmcore.xz",
    "7.2-luo": "kho-7.2-luo/luo-in.vmcore.xz",
    "6.18": "kho-6.18/chain-ab.vmcore.xz",
}
#: What kho-drgn looks up without vmlinux, and names no kernel has.
WANTED = (
    "kho_in", "kho_out", "kho_enable", "kho_scratch", "kho_scratch_cnt",
    "panic_cpu", "tainted_mask", "page_offset_base", "max_pfn", "luo_global",
    "luo_session_global", "luo_flb_global", "kho_is_enabled", "kho_add_subtree",
)  # fmt: skip
ABSENT = ("kho_no_such_symbol", "kho_bootmem_cnt_x", "luo")


def _open(name: str) -> tuple[drgn.Program, dict[str, int]]:
    prog = drgn.Program()
    prog.set_core_dump(str(decompressed(fixture_path(DUMPS[name]))))
    text = prog["VMCOREINFO"].string_().decode()
    known = {m[1]: int(m[2], 16) for m in re.finditer(r"SYMBOL\((\w+)\)=(\w+)", text)}
    return prog, known


@pytest.mark.parametrize("markers", [True, False], ids=["markers", "walk"])
@pytest.mark.parametrize("dump", list(DUMPS))
def test_same_addresses_as_drgns_index(dump: str, markers: bool) -> None:
    prog, known = _open(dump)
    tables = read_kallsyms_tables(lambda a, n: prog.read(a, n), known)
    assert tables is not None and tables.markers is not None
    if not markers:
        tables = dataclasses.replace(tables, markers=None)
    lookup = kallsyms_lookup(tables, known)
    assert lookup is not None
    index = load_vmlinux_kallsyms(prog)
    every = index(prog, None, None, False)
    sample = random.Random(dump).sample(every, 150)
    names = [*WANTED, *(s.name for s in sample)]
    for name in names:
        addresses = {s.address for s in index(prog, name, None, False)}
        found = lookup.address(name)
        assert (found in addresses) if addresses else found is None, name
    for name in ABSENT:
        assert lookup.address(name) is None


def test_damaged_tables_are_not_trusted() -> None:
    """A token table that does not compress as the kernel did fails the
    VMCOREINFO check: the caller falls back to drgn's index."""
    prog, known = _open("7.2")
    tables = read_kallsyms_tables(lambda a, n: prog.read(a, n), known)
    assert tables is not None
    shuffled = dataclasses.replace(tables, tokens=tables.tokens[::-1])
    assert kallsyms_lookup(shuffled, known) is None
    offsets = bytearray(tables.offsets)
    offsets[:4096] = b"\xff" * 4096  # _stext's entry among them
    assert (
        kallsyms_lookup(dataclasses.replace(tables, offsets=bytes(offsets)), known)
        is None
    )
    # tokens all alike: every learned token splits every way; not used, quickly
    alike = dataclasses.replace(tables, tokens=[b"aa"] * 256)
    assert kallsyms_lookup(alike, known) is None
    splits = dataclasses.replace(tables, tokens=[b"aa"] * 200 + [b"a"] * 56)
    assert kallsyms_lookup(splits, known) is None  # thousands of ways each
    # VMCOREINFO that names no tables, or a layout this reader does not know
    assert read_kallsyms_tables(lambda a, n: prog.read(a, n), {}) is None
    swapped = dict(known, kallsyms_token_table=known["kallsyms_names"] - 8)
    assert read_kallsyms_tables(lambda a, n: prog.read(a, n), swapped) is None


def test_no_debuginfo_report_does_not_build_the_full_index() -> None:
    """The no-vmlinux report finds its symbols through the few-symbols reader."""
    from kho_drgn.report import kho_report
    from kho_drgn.target import kho_target

    prog, _ = _open("7.2")
    report = kho_report(prog, with_memory_map=False)
    assert report.chain.previous_release == "7.2.13-kho-a"
    target = kho_target(prog)
    assert target.kallsyms_lookup is not None
    assert target.kallsyms is None  # drgn's full index was never needed


tokens_strategy = st.lists(
    st.binary(min_size=1, max_size=4), min_size=256, max_size=256
)


def _hostile_tables(
    tokens: list[bytes], names: bytes, offsets: bytes, count: int
) -> None:
    """Any tables: a lookup or None, never an exception, in bounded time."""
    from kho_drgn.kallsyms import KallsymsError, KallsymsTables

    tables = KallsymsTables(
        num_syms=count,
        names=names,
        tokens=tokens,
        offsets_addr=0xFFFFFFFF81000000,
        offsets=offsets.ljust(4 * count, b"\0"),
    )
    known = {"_stext": 0xFFFFFFFF81000000, "init_uts_ns": 0xFFFFFFFF82000000}
    lookup = kallsyms_lookup(tables, known)
    if lookup is not None:
        with contextlib.suppress(KallsymsError):
            lookup.address("kho_in")


hostile = given(
    tokens_strategy,
    st.binary(max_size=2048),
    st.binary(max_size=256),
    st.integers(1, 64),
)


@settings(max_examples=25, derandomize=True, deadline=timedelta(seconds=5))
@hostile
def test_hostile_tables(
    tokens: list[bytes], names: bytes, offsets: bytes, n: int
) -> None:
    _hostile_tables(tokens, names, offsets, n)


@pytest.mark.fuzz
@settings(
    max_examples=int(os.environ.get("KHO_DRGN_FUZZ_EXAMPLES", "100000")) // 50,
    deadline=timedelta(seconds=5),
)
@hostile
def test_hostile_tables_fuzz(
    tokens: list[bytes], names: bytes, offsets: bytes, n: int
) -> None:
    _hostile_tables(tokens, names, offsets, n)
