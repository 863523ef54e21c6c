"""The library API on Programs opened in-process from the shared dumps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import drgn
import pytest
from fixturedata import Truth, fixture_files, load_truth

from kho_drgn import KhoStatus, for_each_handover, kho_report, kho_state
from kho_drgn.target import SymbolSource

pytestmark = pytest.mark.fixtures


def open_dump(vmcore: Path, vmlinux: Path | None) -> drgn.Program:
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    if vmlinux is not None:
        prog.load_debug_info([str(vmlinux)])
    return prog


@pytest.fixture(scope="module", params=[True, False], ids=["dwarf", "no-debuginfo"])
def aab(request: pytest.FixtureRequest) -> Iterator[tuple[drgn.Program, Truth]]:
    truth = load_truth("chain-aab")
    vmcore, vmlinux = fixture_files(truth)
    yield open_dump(vmcore, vmlinux if request.param else None), truth


def test_kho_state(aab: tuple[drgn.Program, Truth]) -> None:
    prog, truth = aab
    state = kho_state(prog)
    assert state.status is KhoStatus.KEXEC
    assert state.release == truth.release
    assert [h.direction for h in for_each_handover(state)] == ["incoming", "outgoing"]
    assert state.incoming is not None and state.incoming.metadata is not None
    assert state.incoming.metadata.previous_release == "7.2.13-kho-a"
    assert state.kho_in is not None and state.kho_in.kexec_count == 2
    # The incoming FDT's physical address is kho_in.fdt_phys.
    assert state.incoming.fdt_phys == state.kho_in.fdt_phys
    # The outgoing FDT is read through kho_out.fdt's direct-map address, and
    # its physical address is worked out with or without DWARF.
    assert state.outgoing is not None and state.outgoing.fdt_phys is not None
    assert prog.read(state.outgoing.fdt_phys, 4, True) == b"\xd0\x0d\xfe\xed"


def test_kho_report(aab: tuple[drgn.Program, Truth]) -> None:
    prog, truth = aab
    report = kho_report(prog)
    assert report.chain.previous_release == truth.chain[-2]
    assert report.chain.kexec_count == len(truth.chain) - 1
    assert report.crash is not None
    assert report.crash.panic_reason == truth.panic_reason
    assert report.crash.crashed_task is not None
    assert report.crash.crashed_task.comm == "init"
    if report.target.symbols is SymbolSource.DWARF:
        assert report.crash.crashed_task.source == "drgn"
    else:  # what the kernel printed with the panic
        assert report.crash.crashed_task.source == "log"
        assert "crashed_task" not in report.crash.unavailable


def test_not_a_kernel_is_a_clear_error(tmp_path: Path) -> None:
    from kho_drgn.cli import TargetUnreadable, build_report

    prog = drgn.Program()  # no target at all: not a Linux kernel
    with pytest.raises(TargetUnreadable, match="not a Linux kernel"):
        build_report(prog)


def _filtered_kallsyms(
    prog: drgn.Program, keep: Callable[[drgn.Symbol], bool]
) -> drgn.Program:
    """The dump's real kallsyms, less the symbols ``keep`` rejects."""
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    index = load_vmlinux_kallsyms(prog)

    def find(
        prog: drgn.Program, name: str | None, address: int | None, one: bool
    ) -> list[drgn.Symbol]:
        return [s for s in index(prog, name, address, False) if keep(s)][
            : 1 if one else None
        ]

    prog.register_symbol_finder("kallsyms", find, enable_index=0)
    return prog


def test_kallsyms_without_data_symbols_is_not_mistaken_for_no_kho() -> None:
    """A kernel built without CONFIG_KALLSYMS_ALL has no kho_in/kho_out in
    kallsyms: with no vmlinux that must be an error naming the cause, not
    'KHO not built in'."""
    from kho_drgn.target import KhoReadError

    vmcore, _ = fixture_files(load_truth("chain-aab"))
    prog = _filtered_kallsyms(
        open_dump(vmcore, None), lambda s: s.kind != drgn.SymbolKind.OBJECT
    )
    with pytest.raises(KhoReadError, match="CONFIG_KALLSYMS_ALL=n"):
        kho_state(prog)


def test_kernel_without_kho_is_not_built() -> None:
    """No KHO symbol at all (a kernel without CONFIG_KEXEC_HANDOVER)."""
    vmcore, _ = fixture_files(load_truth("chain-aab"))
    prog = _filtered_kallsyms(
        open_dump(vmcore, None), lambda s: not s.name.startswith("kho")
    )
    state = kho_state(prog)
    assert state.status is KhoStatus.NOT_BUILT
    assert state.incoming is None and state.outgoing is None
    report = kho_report(prog)
    assert "KHO not built in" in report.chain_line
