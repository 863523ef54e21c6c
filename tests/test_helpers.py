"""The drgn-style helpers: default program, answers as objects, Program untouched."""

from __future__ import annotations

import subprocess
import sys

import drgn
import pytest
from fixturedata import Truth, fixture_files, load_truth
from test_library import open_dump

from kho_drgn import kexec_chain, kho_state, preserved_memory
from kho_drgn.chain import NextKernel
from kho_drgn.state import KhoStatus

pytestmark = pytest.mark.fixtures


def _finders(prog: drgn.Program) -> tuple[list[str], list[str]]:
    return prog.registered_symbol_finders(), prog.enabled_symbol_finders()


@pytest.mark.parametrize("with_vmlinux", [True, False], ids=["dwarf", "no-debuginfo"])
def test_helpers_on_the_default_program(with_vmlinux: bool) -> None:
    truth: Truth = load_truth("chain-aab")
    vmcore, vmlinux = fixture_files(truth)
    prog = open_dump(vmcore, vmlinux if with_vmlinux else None)
    before = _finders(prog)
    drgn.set_default_prog(prog)
    try:
        chain = kexec_chain()
        state = kho_state()
        outgoing = preserved_memory(direction="outgoing")
        incoming = preserved_memory(prog, "incoming")
    finally:
        drgn.set_default_prog(None)
    assert chain.previous_release == truth.chain[-2]
    assert chain.kexec_count == len(truth.chain) - 1
    assert chain.current_release == truth.release
    assert chain.next == NextKernel(truth.release, len(truth.chain))
    assert chain.source == "incoming kexec-metadata blob"
    assert state.status is KhoStatus.KEXEC
    assert outgoing is not None and outgoing.direction == "outgoing"
    assert outgoing.summary is not None and outgoing.summary.complete
    assert outgoing.summary.blocks > 0
    assert incoming is not None and incoming.direction == "incoming"
    # A helper never reconfigures the caller's Program.
    assert _finders(prog) == before
    with pytest.raises(ValueError, match="direction"):
        preserved_memory(prog, "sideways")  # type: ignore[arg-type]


def test_kexec_chain_in_a_drgn_session_without_vmlinux() -> None:
    """As a user types it: ``drgn -c DUMP``, no vmlinux, then the helper."""
    truth = load_truth("chain-aab")
    vmcore, _ = fixture_files(truth)
    code = (
        "before = (prog.registered_symbol_finders(), prog.enabled_symbol_finders())\n"
        "from kho_drgn import kexec_chain\n"
        "c = kexec_chain()\n"
        "after = (prog.registered_symbol_finders(), prog.enabled_symbol_finders())\n"
        "print(c.previous_release, c.kexec_count, c.next.release, before == after)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "--quiet", "-c", str(vmcore),
         "--no-default-symbols", "-e", code],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [truth.chain[-2], "2", truth.release, "True"]


def test_kho_report_takes_the_default_program() -> None:
    truth = load_truth("cold-b")
    vmcore, _ = fixture_files(truth)
    prog = open_dump(vmcore, None)
    from kho_drgn import kho_report

    drgn.set_default_prog(prog)
    try:
        report = kho_report(with_memory_map=False, with_crash=False)
    finally:
        drgn.set_default_prog(None)
    assert report.chain_line.startswith(f"cold boot -> {truth.release} [crashed")
