"""The ``kho`` drgn command, registered through the ``drgn.plugins`` entry point.

After ``pip install``, in a drgn session on a kernel::

    >>> %kho              # the chain, KHO state and crash context
    >>> %kho --json       # the JSON report (schema kho-drgn/report/2)
    >>> %kho subtrees     # every subtree decoded in full
    >>> %kho memmap --ranges   # preserved memory per order, and its ranges
    >>> %crash kho        # the same, among crash's commands (bt, log, sys)

Importing this module only registers the command; the library loads on first
use, so drgn sessions that never call it pay nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from drgn import Program
from drgn.commands import CommandError, argument
from drgn.commands._crash.common import crash_command
from drgn.commands.linux import linux_kernel_command

from kho_drgn.cli import DESCRIPTION, OPTIONS
from kho_drgn.escape import escape_text

_LONG_DESCRIPTION = f"""
    {DESCRIPTION} Decode Kexec HandOver (KHO) state from the target: the
    incoming handover (what the previous kernel handed this one, kho_in) and
    the outgoing one (what the next kernel will be told, kho_out), their
    subtrees and the kexec-metadata blobs, and print the kexec chain on one
    line, followed by tables and the crash context. Works without vmlinux
    debug info through kallsyms and VMCOREINFO.
    """

#: The script's options (kho_drgn.cli.OPTIONS), and -h: drgn 0.3.0 has no
#: help command, so argparse's own help text serves.
_ARGUMENTS = (
    argument("-h", "--help", action="store_true", help="show this help"),
    *(argument(*flags, **kwargs) for flags, kwargs in OPTIONS),
)


def _kho(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from kho_drgn.cli import (
        TargetUnreadable,
        debug_requested,
        format_report,
        has_errors,
        internal_error_message,
        report_for_options,
    )

    parser = kwargs.get("parser")
    if args.help and parser is not None:
        parser.print_help()
        return

    try:
        report = report_for_options(prog, args)
    except TargetUnreadable as e:
        raise CommandError(f"{name}: {escape_text(str(e))}") from e
    except Exception as e:
        if debug_requested():
            raise
        raise CommandError(internal_error_message(name, e)) from None
    sys.stdout.write(format_report(report, args.json, args.view, args.ranges))
    if args.strict and has_errors(report):
        raise CommandError(f"{name}: error-severity findings (see above)")


#: One declaration for both registrations.
_SPEC: dict[str, Any] = {
    "name": "kho",
    "description": "show the KHO kexec chain: which kernel this one came from",
    "long_description": _LONG_DESCRIPTION,
    "arguments": _ARGUMENTS,
}

_cmd_kho = linux_kernel_command(**_SPEC)(_kho)
# The same command beside crash's own (``%crash kho``, next to bt, log, sys).
_crash_cmd_kho = crash_command(**_SPEC)(_kho)
