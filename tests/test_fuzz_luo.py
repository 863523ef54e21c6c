"""Fuzz properties of the LUO decoder (hypothesis).

Invariant: whatever the blob and the memory it points into, ``decode_luo_blob``
returns a :class:`~kho_drgn.luo.LuoSide` (findings for what is wrong), never
raises, never hangs.  Seeds: a whole luo-v5 handover built the kernel's way
(``test_luo.luo_v5``), with bytes of its pages overwritten at random.

``test_<name>`` is the small derandomized slice of the default run;
``test_<name>_fuzz`` (marked ``fuzz``) the fuzz job's share
(``KHO_DRGN_FUZZ_EXAMPLES``, default 100000, spread over the properties).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_luo import PhysMem, luo_v5

from kho_drgn.luo import LuoSide, decode_luo_blob

FAST = settings(
    max_examples=int(os.environ.get("KHO_DRGN_FAST_EXAMPLES", "25")),
    derandomize=True,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ = settings(
    max_examples=max(1, int(os.environ.get("KHO_DRGN_FUZZ_EXAMPLES", "100000")) // 20),
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)

damage = st.lists(
    st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    max_size=24,
)


def _check_damaged_handover(patches: list[tuple[int, bytes]], blob_cut: int) -> None:
    mem = PhysMem()
    blob = luo_v5(mem)
    pages = sorted(mem.pages)
    for where, data in patches:
        page = pages[where % len(pages)]
        mem.write(page + (where >> 8) % 4096, data[: 4096 - (where >> 8) % 4096])
    side = decode_luo_blob(blob[:blob_cut], "incoming", read_phys=mem.read)
    assert isinstance(side, LuoSide)
    side.to_dict()
    list(side.all_findings())


def _check_random_blob(blob: bytes, memory: bytes) -> None:
    mem = PhysMem()
    base = mem.alloc(2)
    mem.write(base, memory[:8192])
    side = decode_luo_blob(blob, "outgoing", read_phys=mem.read)
    assert isinstance(side, LuoSide)
    side.to_dict()


@FAST
@given(damage, st.integers(0, 40))
def test_damaged_handover(patches: list[tuple[int, bytes]], cut: int) -> None:
    _check_damaged_handover(patches, cut)


@pytest.mark.fuzz
@FUZZ
@given(damage, st.integers(0, 40))
def test_damaged_handover_fuzz(patches: list[tuple[int, bytes]], cut: int) -> None:
    _check_damaged_handover(patches, cut)


blobs = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda v, rest: b"luo-v" + v + rest,
        st.binary(max_size=3),
        st.binary(min_size=24, max_size=40),
    ),
)


@FAST
@given(blobs, st.binary(max_size=8192))
def test_random_blob(blob: bytes, memory: bytes) -> None:
    _check_random_blob(blob, memory)


@pytest.mark.fuzz
@FUZZ
@given(blobs, st.binary(max_size=8192))
def test_random_blob_fuzz(blob: bytes, memory: bytes) -> None:
    _check_random_blob(blob, memory)
