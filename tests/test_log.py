"""The crash as the kernel printed it: panic line, task header, call trace."""

from __future__ import annotations

import re

import pytest
from fixturedata import shared_dir

from kho_drgn.log import (
    MAX_LOGGED_FRAMES,
    MAX_OOPS_LINES,
    find_logged_task,
    find_panic_message,
)

TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\] ")

OOPS = """\
BUG: kernel NULL pointer dereference, address: 0000000000000008
#PF: supervisor write access in kernel mode
Oops: Oops: 0002 [#1] SMP NOPTI
CPU: 3 PID: 4242 Comm: my worker Tainted: G           O       6.9.0 #1
Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)
RIP: 0010:kho_demo_store+0x15/0x40 [kho_demo]
Code: 48 89 f8 c3 cc cc
RSP: 0018:ffffb7c1c0a3fe08 EFLAGS: 00010246
RAX: 0000000000000000 RBX: ffff8880 RCX: 0000000000000000
CR2: 0000000000000008 CR3: 0000000101b2e000 CR4: 00000000000006f0
Call Trace:
 <TASK>
 ? __die+0x23/0x70
 ? page_fault_oops+0x171/0x4e0
 kho_demo_store+0x15/0x40 [kho_demo]
 kernfs_fop_write_iter+0x13e/0x1f0
 vfs_write+0x25e/0x450
 </TASK>
Modules linked in: kho_demo(O)
CR2: 0000000000000008
---[ end trace 0000000000000000 ]---
Kernel panic - not syncing: Fatal exception
""".splitlines()


def test_oops_then_panic_takes_the_oops_task_and_trace() -> None:
    """After an Oops, panic() prints no second stack: the header before the
    panic line is the crashed task's, and its trace stops at the end marker."""
    assert find_panic_message(OOPS) == "Kernel panic - not syncing: Fatal exception"
    task = find_logged_task(OOPS)
    assert task is not None
    assert (task.cpu, task.pid, task.comm) == (3, 4242, "my worker")
    assert task.stack == [
        "? __die+0x23/0x70",
        "? page_fault_oops+0x171/0x4e0",
        "kho_demo_store+0x15/0x40 [kho_demo]",
        "kernfs_fop_write_iter+0x13e/0x1f0",
        "vfs_write+0x25e/0x450",
    ]


def test_an_old_warning_header_is_not_the_crashed_task() -> None:
    old = ["CPU: 1 PID: 9 Comm: kthreadd Not tainted 6.9.0 #1"]
    filler = ["usb 1-1: new device"] * (MAX_OOPS_LINES + 1)
    assert find_logged_task([*old, *filler, "Kernel panic - not syncing: x"]) is None


def test_a_warning_just_before_the_panic_is_not_the_crashed_task() -> None:
    """A WARN prints the same header; without an Oops above it, it is not the
    crash (a kdump kernel's panic prints no header of its own)."""
    warn = [
        "------------[ cut here ]------------",
        "WARNING: CPU: 1 PID: 77 at mm/page_alloc.c:4000 f+0x1/0x2",
        "Modules linked in:",
        "CPU: 1 UID: 0 PID: 77 Comm: kswapd0 Not tainted 7.2.13 #1",
        "Call Trace:",
        " f+0x1/0x2",
        "---[ end trace 0000000000000000 ]---",
        "sysrq: Trigger a crash",
        "Kernel panic - not syncing: sysrq triggered crash",
    ]
    assert find_logged_task(warn) is None


def test_no_panic_or_no_header_is_none() -> None:
    assert find_logged_task(["CPU: 0 UID: 0 PID: 1 Comm: init Not tainted 7.2"]) is None
    assert find_logged_task(["Kernel panic - not syncing: x", "Call Trace:"]) is None
    assert find_logged_task([]) is None


def test_header_without_trace_and_runaway_trace() -> None:
    header = "CPU: 0 UID: 0 PID: 7 Comm: sh Not tainted 7.2.13 #1"
    bare = find_logged_task(["Kernel panic - not syncing: x", header])
    assert bare is not None and bare.stack == [] and bare.comm == "sh"
    frames = [f" f{i}+0x1/0x2" for i in range(MAX_LOGGED_FRAMES * 2)]
    long = find_logged_task(
        ["Kernel panic - not syncing: x", header, "Call Trace:", *frames]
    )
    assert long is not None and len(long.stack) == MAX_LOGGED_FRAMES


@pytest.mark.fixtures
def test_real_panic_from_the_serial_log() -> None:
    """The last stage of chain-aab as its console printed it (7.2.13: the
    header carries UID:, the trace runs into the user-mode registers)."""
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared is missing: no serial log")
    text = (shared / "fixtures/kho-7.2/chain-aab.serial.log").read_text(
        errors="replace"
    )
    lines = [TIMESTAMP.sub("", line) for line in text.splitlines()]
    task = find_logged_task(lines)
    assert task is not None
    assert (task.pid, task.comm) == (1, "init")
    names = [frame.split("+")[0] for frame in task.stack]
    assert names[:4] == ["dump_stack_lvl", "dump_stack", "vpanic", "panic"]
    assert names[-1].startswith("entry_SYSCALL_64")
