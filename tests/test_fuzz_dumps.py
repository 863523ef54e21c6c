"""End to end on real dumps with damaged pages: the whole report, never a crash.

The decoders are fuzzed one by one elsewhere; here the real script's code
path (``kho_drgn.cli.run``: finding, decoding, checks, crash context, JSON
and text) runs on the fixture dumps with pages that matter damaged: kho_in,
kho_out, both root FDTs, the metadata blobs, the preserved-memory map roots,
the printk ring, the kallsyms tables, the LUO state.  Damage is laid over
the dump with drgn's own memory segments (``add_memory_segment`` takes
precedence over the core file), so no copy of a 512 MiB dump is written.

Invariant: exit status 0 (a report, valid JSON) or 3 (the target cannot be
read, one line), never 4 (an internal error) or an exception; the text view
has no control character but its own newlines.

``test_<name>`` is the small derandomized slice of the default run;
``test_<name>_fuzz`` (marked ``fuzz``) the fuzz job's share
(``KHO_DRGN_DUMP_FUZZ_EXAMPLES``, default 300: each example opens a dump).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import drgn
import pytest
from fixturedata import decompressed, fixture_path, overlay_phys
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kho_drgn.cli import EXIT_OK, EXIT_UNREADABLE, run

pytestmark = pytest.mark.fixtures

PAGE = 4096
FAST = settings(
    max_examples=int(os.environ.get("KHO_DRGN_DUMP_FAST_EXAMPLES", "6")),
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
FUZZ = settings(
    max_examples=int(os.environ.get("KHO_DRGN_DUMP_FUZZ_EXAMPLES", "300")),
    deadline=timedelta(seconds=60),
    suppress_health_check=list(HealthCheck),
)
DUMPS = {
    "chain-aab": ("kho-7.2/chain-aab.vmcore.xz", "kho-7.2/vmlinux-7.2.13-kho-b.xz"),
    "luo-in": ("kho-7.2-luo/luo-in.vmcore.xz", "kho-7.2-luo/vmlinux-7.2.13-kho-l.xz"),
}


@dataclass(frozen=True)
class Dump:
    core: str
    vmlinux: str
    #: region name -> physical addresses of pages worth damaging
    pages: dict[str, tuple[int, ...]]


@cache
def dump(name: str) -> Dump:
    """The dump, its vmlinux, and where its KHO state lives (read with DWARF)."""
    from drgn.helpers.linux.mm import follow_phys, virt_to_phys

    core_xz, vmlinux_xz = DUMPS[name]
    core = str(decompressed(fixture_path(core_xz)))
    vmlinux = str(decompressed(fixture_path(vmlinux_xz)))
    prog = drgn.Program()
    prog.set_core_dump(core)
    prog.load_debug_info([vmlinux])
    mm = prog["init_mm"].address_of_()

    def phys(address: int) -> int:
        return int(follow_phys(mm, address).value_()) & ~(PAGE - 1)

    from kho_drgn.state import kho_state

    state = kho_state(prog)
    pages: dict[str, list[int]] = {
        "kho_in": [phys(prog["kho_in"].address_)],
        "kho_out": [phys(prog["kho_out"].address_)],
        "incoming fdt": [prog["kho_in"].fdt_phys.value_() & ~(PAGE - 1)],
        "outgoing fdt": [virt_to_phys(prog["kho_out"].fdt).value_() & ~(PAGE - 1)],
        "printk": [phys(prog["prb"].value_()), phys(prog["printk_rb_static"].address_)],
    }
    for handover in (state.incoming, state.outgoing):
        if handover is None or handover.fdt is None:
            continue
        if handover.fdt.memory_map_phys:
            pages.setdefault("map roots", []).append(handover.fdt.memory_map_phys)
        for ref in handover.fdt.subtrees:
            if ref.phys:
                pages.setdefault("blobs", []).append(ref.phys & ~(PAGE - 1))
    text = prog["VMCOREINFO"].string_().decode()
    for line in text.splitlines():
        if line.startswith(("SYMBOL(kallsyms_names)", "SYMBOL(kallsyms_offsets)")):
            pages.setdefault("kallsyms", []).append(phys(int(line.split("=")[1], 16)))
    for symbol in ("luo_global", "luo_session_global", "luo_flb_global"):
        with contextlib.suppress(KeyError):
            pages.setdefault("luo", []).append(phys(prog[symbol].address_))
    return Dump(core, vmlinux, {k: tuple(v) for k, v in pages.items() if v})


Damager = Callable[[bytes], bytes]


@st.composite
def damage(draw: st.DrawFn) -> tuple[str, bool, list[tuple[str, int, object]]]:
    name = draw(st.sampled_from(sorted(DUMPS)))
    regions = sorted(dump(name).pages)
    edits = draw(
        st.lists(
            st.tuples(
                st.sampled_from(regions),
                st.integers(0, 64),
                st.one_of(
                    st.just("zero"),
                    st.just("ones"),
                    st.binary(min_size=1, max_size=64),
                ),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return name, draw(st.booleans()), edits


def _apply(prog: drgn.Program, d: Dump, edits: list[tuple[str, int, object]]) -> None:
    damaged: dict[int, bytearray] = {}
    for region, pick, how in edits:
        candidates = d.pages[region]
        page = candidates[pick % len(candidates)]
        data = damaged.setdefault(page, bytearray(prog.read(page, PAGE, True)))
        if how == "zero":
            data[:] = bytes(PAGE)
        elif how == "ones":
            data[:] = b"\xff" * PAGE
        else:
            assert isinstance(how, bytes)
            at = (pick * 61) % (PAGE - len(how))
            data[at : at + len(how)] = how
    for page, data in damaged.items():
        overlay_phys(prog, page, bytes(data))


def _check(case: tuple[str, bool, list[tuple[str, int, object]]]) -> None:
    name, with_vmlinux, edits = case
    d = dump(name)
    prog = drgn.Program()
    prog.set_core_dump(d.core)
    if with_vmlinux:
        prog.load_debug_info([d.vmlinux])
    _apply(prog, d, edits)
    for view in (["--json"], ["--scan-pages"]):
        out, err = io.StringIO(), io.StringIO()
        status = run(prog, view, stdout=out, stderr=err)
        assert status in (EXIT_OK, EXIT_UNREADABLE), err.getvalue()
        if status == EXIT_UNREADABLE:
            assert err.getvalue().count("\n") == 1, err.getvalue()
            return
        if view == ["--json"]:
            report = json.loads(out.getvalue())
            assert report["chain"]["line"]
        else:
            text = out.getvalue().replace("\n", "")
            assert text.isprintable(), [c for c in text if not c.isprintable()][:5]


@FAST
@given(damage())
def test_damaged_dump(case: tuple[str, bool, list[tuple[str, int, object]]]) -> None:
    _check(case)


@pytest.mark.fuzz
@FUZZ
@given(damage())
def test_damaged_dump_fuzz(
    case: tuple[str, bool, list[tuple[str, int, object]]],
) -> None:
    _check(case)
