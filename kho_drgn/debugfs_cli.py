"""``kho-debugfs``: the kexec chain of a running host from debugfs alone.

For hosts where drgn cannot read kernel memory; see :mod:`kho_drgn.debugfs`.
Exit status as ``kho_chain.py``: 0 read, 1 ``--strict`` and an error
finding (an entry that is not a regular file is one), 2 usage (``--root``
not a directory), 3 the directory cannot be read, 4 internal error (one
line; ``KHO_DRGN_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kho_drgn.cli import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    debug_requested,
    internal_error_message,
)
from kho_drgn.debugfs import (
    DEFAULT_ROOT,
    DebugfsRootError,
    DebugfsUnavailable,
    debugfs_report,
    decode_debugfs,
    host_byteorder,
    read_debugfs_tree,
)
from kho_drgn.escape import escape_text
from kho_drgn.findings import Severity


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kho-debugfs",
        description=(
            "Decode KHO's debugfs files (CONFIG_KEXEC_HANDOVER_DEBUGFS): the "
            "kexec chain and every subtree, without access to kernel memory."
        ),
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"the KHO debugfs directory or a copy of it (default {DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--release",
        help="the running kernel's release (default: uname -r when --root is "
        "the live default, else taken from the outgoing metadata)",
    )
    parser.add_argument(
        "--byteorder",
        choices=("little", "big"),
        default=host_byteorder(),
        help="byte order of the kernel that wrote the files (default: this host's)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 on any error-severity finding"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except Exception as e:
        if debug_requested():
            raise
        print(internal_error_message("kho-debugfs", e), file=sys.stderr)
        return EXIT_INTERNAL


def _main(args: argparse.Namespace) -> int:
    try:
        tree = read_debugfs_tree(args.root)
    except DebugfsUnavailable as e:
        print(f"kho-debugfs: error: {escape_text(str(e))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, DebugfsRootError) else EXIT_UNREADABLE
    state = decode_debugfs(tree.files, args.byteorder, str(args.root), tree.skipped)
    release = args.release
    if release is None and args.root == DEFAULT_ROOT:
        release = os.uname().release
    report = debugfs_report(state, release)  # the chain and its checks, once
    if args.json:
        from kho_drgn.report import report_to_dict

        sys.stdout.write(json.dumps(report_to_dict(report), indent=2) + "\n")
    else:
        from kho_drgn.render import render_report

        sys.stdout.write(render_report(report, subtree_detail=True))
    errors = any(f.severity is Severity.ERROR for f in report.findings)
    return EXIT_FINDINGS if args.strict and errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
