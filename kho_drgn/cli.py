"""Command-line front end shared by ``contrib/kho_chain.py`` and tools.

Exit status (also in the README):

* 0 -- the target was read and a report printed, whatever its KHO state and
  findings (unless ``--strict``);
* 1 -- ``--strict`` and at least one error-severity finding;
* 2 -- bad command-line arguments;
* 3 -- the target could not be read (not a Linux kernel, KHO variables
  unreadable, no symbols to find them);
* 4 -- internal error in kho-drgn (a bug: please report it with the message;
  ``--debug`` or ``KHO_DRGN_DEBUG=1`` in the environment shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any, NoReturn

from drgn import Program, ProgramFlags

from kho_drgn.escape import escape_text

if TYPE_CHECKING:
    from kho_drgn.report import KhoReport

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_INTERNAL = 4

#: Text views (``kho_drgn.render.VIEWS``, kept here so --help needs no import).
VIEWS = ("chain", "subtrees", "memmap")


#: Environment variable that asks for tracebacks on internal errors, for the
#: script (drgn takes ``--debug`` as an abbreviation of one of its own
#: options), the ``kho`` command and ``kho-debugfs``.
DEBUG_ENV = "KHO_DRGN_DEBUG"


def debug_requested() -> bool:
    """True when ``KHO_DRGN_DEBUG`` is set to anything but "", "0" or "no"."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "no")


def internal_error_message(prog_name: str, e: BaseException) -> str:
    """The one line an internal error gets, its message escaped."""
    return (
        f"{prog_name}: internal error: {type(e).__name__}: "
        f"{escape_text(str(e))} (re-run with {DEBUG_ENV}=1 in the environment "
        "for a traceback and report it)"
    )


def exit_without_teardown(status: int) -> NoReturn:
    """Flush the output and end the process now, with ``status``.

    For a process that only ran one report (the script, a kho-triage
    worker): tearing down drgn's Program object by object -- its DWARF index,
    unwind tables and caches -- takes about 50 ms on these small kernels and
    more with a distro vmlinux, and the kernel reclaims all of it at exit
    anyway.  The output is flushed first; atexit handlers are skipped (logging's
    stream handlers have already written every line).  Not for a library
    caller or a drgn session.
    """
    for stream in (sys.stdout, sys.stderr):
        # A reader that closed the pipe (| head) has what it wanted.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def end_script(prog: Program, status: int) -> None:
    """End ``drgn contrib/kho_chain.py`` with ``status``.

    As drgn's script, the process ends without drgn's teardown
    (:func:`exit_without_teardown`).  Run by ``execscript()`` in a drgn
    session (drgn's REPL marks the Program with ``outer_repl``), it returns
    and the session goes on: an exit status means nothing there.
    """
    if "outer_repl" in prog.config or hasattr(sys, "ps1"):
        return
    exit_without_teardown(status)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(
            f"{self.format_usage().strip()}\n{self.prog}: error: {message}"
        )


#: The options of the script and of the ``kho`` command, declared once:
#: ``(flags, add_argument keyword arguments)``.
OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("view",),
        {
            "nargs": "?",
            "choices": VIEWS,
            "default": "chain",
            "help": "chain (default): everything, summarised; subtrees: every "
            "subtree decoded in full; memmap: the preserved-memory maps per order",
        },
    ),
    (("--json",), {"action": "store_true", "help": "print the JSON report"}),
    (
        ("--ranges",),
        {
            "action": "store_true",
            "help": "list every preserved physical range (text and JSON)",
        },
    ),
    (
        ("--scan-pages",),
        {
            "action": "store_true",
            "help": "check the incoming map against KHO_PAGE_MAGIC in the struct "
            "pages (reads 64 bytes per page of RAM; implied by the memmap view)",
        },
    ),
    (
        ("--no-memmap",),
        {
            "action": "store_true",
            "help": "do not walk the preserved-memory maps or scan struct pages",
        },
    ),
    (
        ("--no-crash",),
        {
            "action": "store_true",
            "help": "skip the crash context (panic, task, stack, log lines)",
        },
    ),
    (
        ("--strict",),
        {
            "action": "store_true",
            "help": "fail (exit 1) when any finding has error severity",
        },
    ),
)

DESCRIPTION = (
    "Show which kernel this one was kexec'd from (KHO kexec-metadata), "
    "what the next kernel will be told, and the crash context."
)


def build_parser(prog_name: str) -> argparse.ArgumentParser:
    """The script's parser: :data:`OPTIONS` plus ``--debug``."""
    parser = _Parser(prog=prog_name, description=DESCRIPTION)
    for flags, kwargs in OPTIONS:
        parser.add_argument(*flags, **kwargs)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="let internal errors raise with a traceback (for bug reports); "
        f"through drgn, which takes --debug for itself, set {DEBUG_ENV}=1",
    )
    return parser


def run(
    prog: Program,
    argv: list[str],
    prog_name: str = "kho_chain",
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Parse ``argv``, report on ``prog`` and return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = build_parser(prog_name).parse_args(argv)
    except UsageError as e:
        print(e, file=err)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)
    try:
        return _report(prog, args, out, err, prog_name)
    except Exception as e:
        if args.debug or debug_requested():
            raise
        print(internal_error_message(prog_name, e), file=err)
        return EXIT_INTERNAL


class TargetUnreadable(Exception):
    """The target cannot be analysed at all; the message says why."""


def build_report(
    prog: Program,
    with_crash: bool = True,
    with_memory_map: bool = True,
    scan_pages: bool = False,
) -> KhoReport:
    """``kho_report`` with every "cannot read the target" case as one error.

    :raises TargetUnreadable: not a kernel, or the KHO variables unreadable.
    """
    from kho_drgn.report import kho_report
    from kho_drgn.target import TARGET_ERRORS, KhoReadError

    if not prog.flags & ProgramFlags.IS_LINUX_KERNEL:
        raise TargetUnreadable("the target is not a Linux kernel")
    try:
        return kho_report(
            prog,
            with_crash=with_crash,
            with_memory_map=with_memory_map,
            scan_pages=scan_pages,
        )
    except KhoReadError as e:
        raise TargetUnreadable(str(e)) from e
    except TARGET_ERRORS as e:
        raise TargetUnreadable(f"cannot read the target: {e}") from e


def format_report(
    report: KhoReport, as_json: bool, view: str = "chain", ranges: bool = False
) -> str:
    """The report as indented JSON (always whole) or as one human view."""
    if as_json:
        from kho_drgn.report import report_to_dict

        return json.dumps(report_to_dict(report, ranges=ranges), indent=2) + "\n"
    from kho_drgn.render import render_report

    return render_report(report, view=view, ranges=ranges)


def has_errors(report: KhoReport) -> bool:
    from kho_drgn.findings import Severity

    return any(f.severity is Severity.ERROR for f in report.findings)


def report_for_options(prog: Program, args: argparse.Namespace) -> KhoReport:
    """The report the options (:data:`OPTIONS`) ask for: the crash context for
    the chain view only, struct pages scanned for the memmap view.

    :raises TargetUnreadable: as :func:`build_report`.
    """
    return build_report(
        prog,
        with_crash=not args.no_crash and args.view == "chain",
        with_memory_map=not args.no_memmap,
        scan_pages=args.scan_pages or args.view == "memmap",
    )


def _report(
    prog: Program, args: argparse.Namespace, out: IO[str], err: IO[str], prog_name: str
) -> int:
    try:
        report = report_for_options(prog, args)
    except TargetUnreadable as e:
        print(f"{prog_name}: error: {escape_text(str(e))}", file=err)
        return EXIT_UNREADABLE
    out.write(format_report(report, args.json, args.view, args.ranges))
    if args.strict and has_errors(report):
        return EXIT_FINDINGS
    return EXIT_OK
