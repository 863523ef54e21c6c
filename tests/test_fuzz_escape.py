"""Fuzz: no control character from a target reaches text output.

Every string that comes from a target (releases, subtree and node names,
compatibles, decoded fields, debugfs file names, log lines, the panic
message, the task's comm, stack trace lines, dump paths) is arbitrary text
here, with terminal controls (ESC, BEL, CR, CSI, DEL, C1, bidi overrides,
line separators) mixed in.  The property: the rendered text holds no
character that is not printable, except the newlines the renderer itself
lays out; the JSON form keeps the exact strings.

As in ``tests/test_fuzz.py``: ``test_<name>`` is a small derandomized slice
of the default run (``KHO_DRGN_FAST_EXAMPLES``, default 25); the
``test_<name>_fuzz`` twin is marked ``fuzz`` (``python3 -m pytest -m fuzz``)
and runs ``KHO_DRGN_FUZZ_EXAMPLES`` (default 100000) spread over these
properties.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kho_drgn.chain import build_chain
from kho_drgn.crash import CrashContext, TaskInfo
from kho_drgn.debugfs import debugfs_report, decode_debugfs, read_debugfs_tree
from kho_drgn.escape import escape_bytes, escape_text
from kho_drgn.fdt import FdtNode, KhoFdt, SubtreeRef
from kho_drgn.findings import warning
from kho_drgn.log import LogRecord
from kho_drgn.metadata import KexecMetadata, decode_c_string
from kho_drgn.render import render_report
from kho_drgn.report import KhoReport, TargetInfo, report_to_dict
from kho_drgn.state import Handover, KhoState, KhoStatus
from kho_drgn.subtrees import SubtreeView
from kho_drgn.target import KhoIn, SymbolSource

FUZZ_TOTAL = int(os.environ.get("KHO_DRGN_FUZZ_EXAMPLES", "100000"))
FAST_EXAMPLES = int(os.environ.get("KHO_DRGN_FAST_EXAMPLES", "25"))
HANG_SECONDS = 60
DEADLINE = timedelta(
    milliseconds=int(os.environ.get("KHO_DRGN_FUZZ_DEADLINE_MS", "2000"))
)

#: What a hostile target would print: C0 controls, DEL, C1 (CSI), bidi
#: overrides and isolates, zero-width and line/paragraph separators.
CONTROLS = [
    *map(chr, range(0x20)),
    "\x7f",
    *map(chr, range(0x80, 0xA0)),
    "\u200b", "\u200e", "\u202a", "\u202e", "\u2066", "\u2069",
    "\u2028", "\u2029", "\ufeff", "\\",
]  # fmt: skip

#: Arbitrary text, controls and terminal sequences weighted in.
hostile = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(CONTROLS)), max_size=40
) | st.sampled_from(
    ["7.2\x1b[2J\x07\rkexec chain: forged", "\x9b31m", "a\u202eb", "\r\n\x1b]0;t\x07"]
)


def assert_clean(text: str) -> None:
    """Only printable characters and the renderer's own newlines."""
    bad = {c for c in text if not c.isprintable() and c != "\n"}
    assert not bad, sorted(map(hex, map(ord, bad)))


@dataclass(frozen=True)
class Property:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


PROPERTIES: list[Property] = []


def prop(
    name: str, strategy: st.SearchStrategy[Any]
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    def register(check: Callable[[Any], None]) -> Callable[[Any], None]:
        PROPERTIES.append(Property(name, strategy, check))
        return check

    return register


# --------------------------------------------------------------------------
# The escaping functions themselves
# --------------------------------------------------------------------------


@prop("escape_text_printable", st.tuples(hostile, st.binary(max_size=64)))
def _escape(args: tuple[str, bytes]) -> None:
    """Escaped text is printable, and distinct inputs stay distinct."""
    text, raw = args
    out = escape_text(text)
    assert_clean(out)
    assert "\n" not in out
    assert escape_text(text + "x") == out + "x"
    assert escape_text(text + "\x1b") != escape_text(text + "\\x1b")
    out_bytes = escape_bytes(raw)
    assert out_bytes.isascii() and out_bytes.isprintable()
    # A C string from raw bytes, as the metadata decoder makes its findings.
    _, findings = decode_c_string(raw, "previous_release", "incoming")
    for finding in findings:
        assert_clean(finding.message)


# --------------------------------------------------------------------------
# A whole report whose every target string is hostile
# --------------------------------------------------------------------------

report_strings = st.fixed_dictionaries(
    {
        "path": hostile,
        "release": hostile,
        "previous": hostile,
        "copy": hostile,
        "next": hostile,
        "compatible": hostile,
        "names": st.lists(hostile, max_size=3),
        "field": hostile,
        "panic": hostile,
        "comm": hostile,
        "stack": st.lists(hostile, max_size=3),
        "log": st.lists(hostile, max_size=3),
        "reason": hostile,
        "build_id": hostile,
    }
)


def _metadata(release: str, count: int) -> KexecMetadata:
    return KexecMetadata(73, b"", 1, release, count, "abi")


def _handover(direction: str, s: dict[str, Any], release: str, count: int) -> Handover:
    names = [*s["names"], "kexec-metadata"]
    fdt = KhoFdt(
        totalsize=256,
        compatible=s["compatible"],
        abi=None,
        memory_map_phys=0x1000,
        subtrees=[SubtreeRef(n, 0x2000 + i, 16) for i, n in enumerate(names)],
        root=FdtNode("/", ""),
    )
    views = [
        SubtreeView(
            name,
            "fdt",
            s["compatible"],
            16,
            fields={s["field"]: s["field"], "n": 7},
            entries=[{s["field"]: s["field"], "name": name}],
            findings=[warning("subtree.x", f"{name}: {s['field']}", direction)],
        )
        for name in s["names"]
    ]
    return Handover(
        direction,
        0x3000,
        fdt=fdt,
        metadata=_metadata(release, count),
        views=views,
    )


def hostile_report(s: dict[str, Any]) -> KhoReport:
    state = KhoState(
        SymbolSource.KALLSYMS,
        s["release"],
        KhoStatus.KEXEC,
        True,
        kho_in=KhoIn(0x3000, 0x4000, s["copy"], 2, True),
        incoming=_handover("incoming", s, s["previous"], 2),
        outgoing=_handover("outgoing", s, s["next"], 3),
    )
    lines = [
        *s["log"],
        f"KHO: exec from: {s['previous']} (count 2)",
        f"KHO: failed to {s['reason']}",
    ]
    chain = build_chain(state, lines)
    crash = CrashContext(
        live=False,
        release=s["release"],
        build_id=s["build_id"],
        panic_message=s["panic"],
        crashed_cpu=0,
        crashed_task=TaskInfo(s["comm"], 1, "log"),
        stack_trace=s["stack"],
        stack_trace_source="log",
        uptime_seconds=1.0,
        uptime_source="log",
        taint=s["field"],
        taint_mask=1,
        log_source="printk",
        log_records=len(lines),
        kho_log=[LogRecord(i, i, line) for i, line in enumerate(lines)],
        unavailable={"log": s["reason"]},
    )
    return KhoReport(
        TargetInfo("vmcore", s["path"], SymbolSource.KALLSYMS),
        state,
        chain,
        crash,
        list(state.all_findings()) + chain.findings,
    )


@prop("report_text_escaped", report_strings)
def _report(s: dict[str, Any]) -> None:
    report = hostile_report(s)
    for view in ("chain", "subtrees", "memmap"):
        assert_clean(render_report(report, view=view, ranges=True))
    first = render_report(report).split("\n", 1)[0]
    assert first.startswith("kexec chain: ") and "\r" not in first
    data = report_to_dict(report)
    json.dumps(data)
    # JSON keeps the decoded strings exactly.
    assert data["target"]["path"] == s["path"]
    assert data["kho"]["kho_in"]["previous_release"] == s["copy"]
    assert data["crash"]["panic_message"] == s["panic"]


# --------------------------------------------------------------------------
# debugfs: decoded snapshots, and real trees on disk
# --------------------------------------------------------------------------


@prop(
    "debugfs_text_escaped",
    st.tuples(
        st.dictionaries(hostile, st.binary(max_size=48), max_size=4),
        st.dictionaries(hostile, hostile, max_size=3),
        hostile,
        hostile,
    ),
)
def _debugfs(args: tuple[dict[str, bytes], dict[str, str], str, str]) -> None:
    blobs, skipped, root, release = args
    files = {f"in/sub_fdts/{name}": data for name, data in blobs.items()}
    files.update({f"out/sub_fdts/{name}": data for name, data in blobs.items()})
    report = debugfs_report(decode_debugfs(files, "little", root, skipped), release)
    assert_clean(render_report(report, subtree_detail=True))
    json.dumps(report_to_dict(report))


#: File names the file system takes: no "/" or NUL, not "." or "..".
file_names = st.binary(min_size=1, max_size=24).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@prop(
    "debugfs_tree_on_disk",
    st.lists(
        st.tuples(
            st.sampled_from(["in/sub_fdts", "out/sub_fdts", "in", "out"]),
            file_names,
            st.sampled_from(["file", "fifo", "link-dev-zero", "link-dir", "dir"]),
            st.binary(max_size=32),
        ),
        max_size=6,
    ),
)
def _debugfs_tree(entries: list[tuple[str, bytes, str, bytes]]) -> None:
    """Random trees of files, FIFOs and links: read without blocking (a
    FIFO opened would hang the example), skipped entries named, text clean."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for directory, name, kind, data in entries:
            parent = os.path.join(os.fsencode(root), directory.encode())
            os.makedirs(parent, exist_ok=True)
            path = os.path.join(parent, name)
            if os.path.lexists(path):
                continue
            if kind == "file":
                with open(path, "xb") as f:
                    f.write(data)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "link-dev-zero":
                os.symlink(b"/dev/zero", path)
            elif kind == "link-dir":
                os.symlink(b"/", path)
            else:
                os.mkdir(path)
        tree = read_debugfs_tree(root)
        for rel in tree.skipped:
            assert not os.path.isfile(root / rel) or os.path.islink(root / rel)
        for rel in tree.files:
            assert os.path.isfile(root / rel) and not os.path.islink(root / rel)
        state = decode_debugfs(tree.files, "little", str(root), tree.skipped)
        codes = [f.code for f in state.all_findings()]
        assert codes.count("debugfs.entry-skipped") == len(tree.skipped)
        assert_clean(render_report(debugfs_report(state, None), subtree_detail=True))


# --------------------------------------------------------------------------
# Test generation: a fast slice for the default run, the fuzz job behind -m fuzz
# --------------------------------------------------------------------------


def _settings(examples: int, fast: bool) -> settings:
    extra: dict[str, Any] = {"derandomize": True, "database": None} if fast else {}
    return settings(
        max_examples=examples,
        deadline=DEADLINE,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=not fast,
        **extra,
    )


def _body(p: Property) -> Callable[[Any], None]:
    def body(value: Any) -> None:
        # A hang (a FIFO opened) dumps the stacks and ends the run.
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            p.check(value)
        finally:
            faulthandler.cancel_dump_traceback_later()

    body.__name__ = body.__qualname__ = p.name
    return body


def _make_tests() -> None:
    per_property = max(1, math.ceil(FUZZ_TOTAL / len(PROPERTIES)))
    for p in PROPERTIES:
        body = _body(p)
        fast = _settings(FAST_EXAMPLES, True)(given(p.strategy)(body))
        fast.__name__ = fast.__qualname__ = f"test_{p.name}"
        fuzz = pytest.mark.fuzz(_settings(per_property, False)(given(p.strategy)(body)))
        fuzz.__name__ = fuzz.__qualname__ = f"test_{p.name}_fuzz"
        globals()[fast.__name__] = fast
        globals()[fuzz.__name__] = fuzz


_make_tests()
