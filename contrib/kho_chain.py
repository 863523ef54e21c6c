#!/usr/bin/env drgn
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Which kernel did this one come from? Print the KHO kexec chain.

Usage:
    drgn -c VMCORE [-s VMLINUX] contrib/kho_chain.py [--json] [--strict]
    drgn contrib/kho_chain.py                    # the running kernel
    drgn --qemu QMP_SOCKET -s VMLINUX contrib/kho_chain.py

Exit status: see ``kho_drgn.cli`` (0 read, 1 --strict findings, 2 usage,
3 target unreadable, 4 internal error).
"""

import os
import sys

if __name__ == "__main__":
    try:
        from kho_drgn.cli import end_script, run
    except ImportError:  # running from a checkout without pip install
        sys.path.insert(
            0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        )
        from kho_drgn.cli import end_script, run

    target = prog  # type: ignore[name-defined]  # noqa: F821
    # Ends without drgn's teardown (~50 ms of freeing for nothing), except
    # when execscript() runs it inside a drgn session.
    end_script(target, run(target, sys.argv[1:], prog_name="kho_chain"))
