"""The ``kho`` drgn command, loaded by a real drgn through its plugin entry point."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import drgn
import pytest
from fixturedata import CONTRIB_SCRIPT, fixture_files, load_truth

pytestmark = pytest.mark.fixtures


def plugin_installed() -> bool:
    eps = importlib.metadata.entry_points(group="drgn.plugins")
    return any(ep.name == "kho" and ep.value == "kho_drgn.command" for ep in eps)


@pytest.fixture(autouse=True)
def need_plugin() -> None:
    if not plugin_installed():
        pytest.skip("kho-drgn is not pip-installed: no drgn.plugins entry point")


def drgn_exec(code: str, *drgn_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drgn", "--quiet", *drgn_args, "-e", code],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_kho_command_json() -> None:
    vmcore, vmlinux = fixture_files(load_truth("chain-aab"))
    proc = drgn_exec(
        "from drgn.commands import run_command; run_command(prog, 'kho --json')",
        "-c",
        str(vmcore),
        "-s",
        str(vmlinux),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["chain"]["previous_release"] == "7.2.13-kho-a"
    assert report["chain"]["kexec_count"] == 2


def test_kho_command_text_and_errors() -> None:
    vmcore, vmlinux = fixture_files(load_truth("cold-b"))
    code = (
        "from drgn.commands import run_command, CommandError\n"
        "run_command(prog, 'kho --no-crash')\n"
        "try:\n"
        "    run_command(prog, 'kho --bogus')\n"
        "except CommandError as e:\n"
        "    print('ERR', e)\n"
    )
    proc = drgn_exec(code, "-c", str(vmcore), "-s", str(vmlinux))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("kexec chain: cold boot -> 7.2.13-kho-b")
    assert "ERR kho: error: unrecognized arguments: --bogus" in proc.stdout


def test_kho_command_in_interactive_repl() -> None:
    pexpect = pytest.importorskip("pexpect")
    vmcore, vmlinux = fixture_files(load_truth("chain-aab"))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "drgn", "--quiet", "-c", str(vmcore), "-s", str(vmlinux)],
        encoding="utf-8",
        timeout=120,
        env={"TERM": "dumb", "PAGER": "cat", "PATH": "/usr/bin:/bin"},
    )
    try:
        child.expect(r"from drgn\.helpers\.linux import \*")  # end of the banner
        child.expect(">>> ")
        child.sendline("%kho --no-crash")
        child.expect(r"kexec chain: cold boot -> \(1 kexec\) -> 7\.2\.13-kho-a")
        child.expect(">>> ")
        child.sendline("%kho --help")
        child.expect("Decode Kexec HandOver")
        child.expect(">>> ")
        child.sendline("%kho --bogus")
        child.expect("drgn: kho: error: unrecognized arguments: --bogus")
        child.expect(">>> ")
        child.sendline("prog.config['crash_scroll'] = False")  # no pager here
        child.expect(">>> ")
        child.sendline("%crash kho --no-crash --no-memmap")
        child.expect(r"kexec chain: cold boot -> \(1 kexec\) -> 7\.2\.13-kho-a")
        child.expect(">>> ")
        # The script run by execscript() leaves the session running (as drgn's
        # script it ends the process without drgn's teardown).
        script = str(CONTRIB_SCRIPT)
        child.sendline(f"execscript({script!r}, '--no-crash', '--no-memmap')")
        child.expect(r"kexec chain: cold boot -> \(1 kexec\) -> 7\.2\.13-kho-a")
        child.expect(">>> ")
        child.sendline("6 * 7")
        child.expect("42")
        child.expect(">>> ")
        child.sendline("exit()")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_kho_command_views() -> None:
    """``kho memmap --ranges`` and ``kho subtrees``, and a bad view name."""
    vmcore, vmlinux = fixture_files(load_truth("chain-aab"))
    code = (
        "from drgn.commands import run_command, CommandError\n"
        "run_command(prog, 'kho memmap --ranges')\n"
        "print('=====')\n"
        "run_command(prog, 'kho subtrees')\n"
        "try:\n"
        "    run_command(prog, 'kho bogus')\n"
        "except CommandError as e:\n"
        "    print('ERR', e)\n"
    )
    proc = drgn_exec(code, "-c", str(vmcore), "-s", str(vmlinux))
    assert proc.returncode == 0, proc.stderr
    memmap, subtrees = proc.stdout.split("=====\n")
    assert "outgoing: blocks per order" in memmap
    assert "outgoing: preserved ranges" in memmap
    assert "KHO_PAGE_MAGIC" in memmap
    assert "Crash context" not in memmap
    assert subtrees.startswith("kexec chain: cold boot -> (1 kexec)")
    assert "Subtrees" in subtrees and "Crash context" not in subtrees
    assert "ERR kho: error: argument view: invalid choice: 'bogus'" in subtrees


def test_kho_in_the_crash_namespace() -> None:
    """``%crash kho`` runs the same command beside crash's bt, log, sys."""
    vmcore, _ = fixture_files(load_truth("chain-aab"))
    code = (
        "from drgn.commands import run_command\n"
        "run_command(prog, 'crash kho --json --no-memmap')\n"
    )
    proc = drgn_exec(code, "-c", str(vmcore), "--no-default-symbols")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["chain"]["previous_release"] == "7.2.13-kho-a"
    assert report["target"]["symbols"] == "kallsyms"


def test_script_and_command_share_their_options() -> None:
    """One argument spec: the command takes what the script takes, same help."""
    import contextlib
    import io

    from drgn.commands import run_command

    import kho_drgn.command  # noqa: F401  (registers the command)
    from kho_drgn.cli import build_parser

    def option_help(text: str) -> str:
        # The argument sections, less -h and the script's own --debug.
        body = text.split("positional arguments:", 1)[1]
        return re.sub(
            r"\n  (-h, --help|--debug) .*?(?=\n  \S|\Z)", "", body, flags=re.S
        ).strip()

    vmcore, _ = fixture_files(load_truth("chain-aab"))
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_command(prog, "kho --help")
    script = build_parser("kho").format_help()
    assert option_help(out.getvalue()) == option_help(script)
    for option in ("--json", "--ranges", "--scan-pages", "--no-memmap", "--strict"):
        assert option in option_help(script)
    assert "--debug" not in option_help(script)
