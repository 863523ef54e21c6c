"""kho-drgn: which kernel did this one come from?

drgn helpers that decode Linux Kexec HandOver (KHO) state -- the incoming and
outgoing handover FDTs, their subtrees, the ``kexec-metadata`` blob and the
preserved-memory maps -- from a vmcore or a live kernel, and put the kexec
chain beside the crash context.

Names are imported lazily so that loading the drgn plugin (which happens in
every drgn session once kho-drgn is installed) costs nothing until used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "decode_debugfs": "kho_drgn.debugfs",
    "read_debugfs_files": "kho_drgn.debugfs",
    "for_each_preserved_block": "kho_drgn.memmap",
    "summarize_memory_map": "kho_drgn.memmap",
    "kexec_chain": "kho_drgn.helpers",
    "preserved_memory": "kho_drgn.helpers",
    "SubtreeView": "kho_drgn.subtrees",
    "decode_subtree": "kho_drgn.subtrees",
    "KexecChain": "kho_drgn.chain",
    "build_chain": "kho_drgn.chain",
    "decode_kho_fdt": "kho_drgn.fdt",
    "KexecMetadata": "kho_drgn.metadata",
    "decode_kexec_metadata": "kho_drgn.metadata",
    "KhoReport": "kho_drgn.report",
    "kho_report": "kho_drgn.helpers",
    "report_to_dict": "kho_drgn.report",
    "LuoState": "kho_drgn.luo_target",
    "luo_state": "kho_drgn.luo_target",
    "decode_luo_blob": "kho_drgn.luo",
    "KhoState": "kho_drgn.state",
    "KhoStatus": "kho_drgn.state",
    "for_each_handover": "kho_drgn.state",
    "kho_state": "kho_drgn.helpers",
}

__all__ = (
    "KexecChain",
    "KexecMetadata",
    "KhoReport",
    "KhoState",
    "KhoStatus",
    "LuoState",
    "SubtreeView",
    "build_chain",
    "decode_debugfs",
    "decode_kexec_metadata",
    "decode_kho_fdt",
    "decode_luo_blob",
    "decode_subtree",
    "for_each_handover",
    "for_each_preserved_block",
    "kexec_chain",
    "kho_report",
    "kho_state",
    "luo_state",
    "preserved_memory",
    "read_debugfs_files",
    "report_to_dict",
    "summarize_memory_map",
)

if TYPE_CHECKING:
    from kho_drgn.chain import KexecChain, build_chain
    from kho_drgn.debugfs import decode_debugfs, read_debugfs_files
    from kho_drgn.fdt import decode_kho_fdt
    from kho_drgn.helpers import kexec_chain, kho_report, kho_state, preserved_memory
    from kho_drgn.luo import decode_luo_blob
    from kho_drgn.luo_target import LuoState, luo_state
    from kho_drgn.memmap import for_each_preserved_block, summarize_memory_map
    from kho_drgn.metadata import KexecMetadata, decode_kexec_metadata
    from kho_drgn.report import KhoReport, report_to_dict
    from kho_drgn.state import KhoState, KhoStatus, for_each_handover
    from kho_drgn.subtrees import SubtreeView, decode_subtree


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kho_drgn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
