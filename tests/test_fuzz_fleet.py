"""Fuzz properties of the fleet report and the crash buckets (hypothesis).

As in tests/test_fuzz.py, each property runs twice: a derandomized slice in the
default run (``KHO_DRGN_FAST_EXAMPLES``, default 25) and, marked ``fuzz``, in
the fuzz job (``python3 -m pytest -m fuzz tests/test_fuzz_fleet.py``,
``KHO_DRGN_FLEET_FUZZ_EXAMPLES``, default 2000 each: every example starts
both engines).

* any records file (mutated real-shaped records, random bytes, deep nesting,
  control characters): both engines give the same report, every line is
  accounted for, the text output carries no control byte but newlines;
* any stack lines: a crash bucket, at most three frames, never an exception.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kho_drgn.bucket import BUCKET_FRAMES, crash_bucket
from kho_drgn.triage.fleet import fleet_report, render_fleet, write_fleet_json

pytest.importorskip("duckdb")

FAST = int(os.environ.get("KHO_DRGN_FAST_EXAMPLES", "25"))
FUZZ = int(os.environ.get("KHO_DRGN_FLEET_FUZZ_EXAMPLES", "2000"))

text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["(none)", "", "ok", "kexec", "cold-boot", "7.2-a", "\x1b[2J", "a\rb", "\\ud800"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | text
    | st.sampled_from([10**400, -(10**400)])
)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {
        "dump": draw(text),
        "host": draw(st.sampled_from(["h1", "h2", "(none)", None])),
        "status": draw(st.sampled_from(["ok", "ok", "failed", "timeout"])),
        "error": None,
        "elapsed_s": 0.1,
        "crash_bucket": {"bucket": draw(text)},
        "report": {
            "kho": {"status": draw(st.sampled_from(["kexec", "cold-boot", "x"]))},
            "chain": {
                "line": "l",
                "kexec_count": draw(st.integers(-3, 14) | st.none()),
                "previous_release": draw(text | st.none()),
                "current_release": draw(text | st.none()),
            },
            "crash": {"live": False, "panic_reason": draw(text | st.none())},
            "findings": [{"code": draw(text), "severity": "error"}],
        },
    }
    for _ in range(draw(st.integers(0, 2))):
        path = draw(
            st.sampled_from([(), ("report",), ("report", "chain"), ("report", "crash")])
        )
        target: Any = record
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict) and target:
            target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    return record


lines = st.one_of(
    records().map(lambda r: json.dumps(r).encode()),
    records().map(lambda r: json.dumps(r).encode()[:30]),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


def both_engines(body: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        path.write_bytes(b"\n".join(body) + b"\n")
        seen = []
        for engine in ("python", "duckdb"):
            fleet = fleet_report([path], engine)
            try:
                out, data = io.StringIO(), io.StringIO()
                render_fleet(fleet, out, hosts=True)
                write_fleet_json(fleet, data, hosts=True)
                shown = out.getvalue()
                assert not any(ord(c) < 0x20 and c != "\n" for c in shown)
                assert not any(0x7F <= ord(c) < 0xA0 for c in shown)
                report = json.loads(data.getvalue())
                report.pop("engine")
                assert report["dumps"] == sum(1 for b in body if b.strip())
                assert report["dumps"] == report["ok"] + len(report["failed"])
                seen.append(report)
            finally:
                fleet.close()
        assert seen[0] == seen[1]


def check_bucket(args: tuple[str | None, list[str]]) -> None:
    reason, stack = args
    found = crash_bucket(reason, stack)
    assert isinstance(found.bucket, str) and found.bucket
    assert len(found.frames) <= BUCKET_FRAMES
    assert found.bucket.startswith(found.message_class)


stack_lines = st.lists(
    st.one_of(
        text,
        st.sampled_from(["panic+0x1/0x2", "#0  vpanic (k.c:1)", "? x+0x1/0x2"]),
        st.from_regex(r"#\d+ +[a-z_.]{1,12}(\+0x[0-9a-f]+/0x[0-9a-f]+)? \(f\.c:\d+\)"),
        st.from_regex(r"[a-z_.]{1,12}\+0x[0-9a-f]{1,4}/0x[0-9a-f]{1,4}( \[m\])?"),
    ),
    max_size=12,
)

CASES: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], None]]] = [
    ("fleet_records_file", st.lists(lines, max_size=8), both_engines),
    ("crash_bucket", st.tuples(text | st.none(), stack_lines), check_bucket),
]


def _test(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], n: int,
          derandomize: bool) -> Callable[[], None]:  # fmt: skip
    @settings(
        max_examples=n,
        derandomize=derandomize,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        check(value)

    return run


for _name, _strategy, _check in CASES:
    globals()[f"test_{_name}"] = _test(_strategy, _check, FAST, True)
    globals()[f"test_{_name}_fuzz"] = pytest.mark.fuzz(
        _test(_strategy, _check, FUZZ, False)
    )
