#!/usr/bin/env python3
"""Benchmark kho-drgn against bare drgn on the same dumps, in the same run.

Not a test: it prints a Markdown table of medians (wall time, peak RSS) and
ratios to the baseline measured alongside, so numbers from different
machines are never compared with each other.

    python3 bench/bench.py [--repeat 5] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fixturedata import decompressed, shared_dir  # noqa: E402

SCRIPT = str(REPO / "contrib" / "kho_chain.py")
#: The drgn calls a report with DWARF makes on its own: the crashed task's
#: stack (drgn's first unwind loads the unwind tables) and the printk ring.
DRGN_WORK = (
    "from drgn.helpers.linux.printk import get_printk_records\n"
    "get_printk_records(prog)\n"
    "try:\n"
    "    prog.crashed_thread().stack_trace()\n"
    "except Exception:\n"
    "    pass\n"
)
#: kho_chain.py --json's work, run by ``drgn -e`` so that drgn's teardown
#: follows, as it does for ``-e pass``.
KHO_WITH_TEARDOWN = (
    "import io\n"
    "from kho_drgn.cli import run\n"
    "run(prog, ['--json'], stdout=io.StringIO())\n"
)


@dataclass
class Result:
    name: str
    wall_s: float
    max_rss_mib: float
    baseline: str
    ratio: float | None = None


def run_once(cmd: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one run of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in ok:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def measure(
    cmd: list[str], repeat: int, ok: tuple[int, ...] = (0,)
) -> tuple[float, float]:
    """Median wall time and median peak RSS of ``cmd`` over ``repeat`` runs."""
    return measure_interleaved({"": cmd}, repeat, ok)[""]


def measure_interleaved(
    cmds: dict[str, list[str]], repeat: int, ok: tuple[int, ...] = (0,)
) -> dict[str, tuple[float, float]]:
    """Medians of several commands run in turn, round after round, so that a
    busy or drifting machine weighs on the baseline and the others alike."""
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in cmds}
    for _ in range(repeat):
        for label, cmd in cmds.items():
            samples[label].append(run_once(cmd, ok))
    return {
        label: (
            statistics.median(wall for wall, _ in runs),
            statistics.median(rss for _, rss in runs),
        )
        for label, runs in samples.items()
    }


def compile_bytecode() -> None:
    """Write kho-drgn's .pyc files, as ``pip install`` does for a regular
    install: an editable install under PYTHONDONTWRITEBYTECODE (set on this
    project's machines) would otherwise compile every module on every run."""
    import compileall

    import kho_drgn

    compileall.compile_dir(str(Path(kho_drgn.__file__).parent), quiet=1)


def batch_throughput(
    fx: Path, drgn: list[str], copies: int, repeat: int
) -> list[Result]:
    """kho-triage over ``4 * copies`` dumps (symlinks to the four fixtures)
    with 1 and 2 workers, against bare drgn run on each dump in turn.

    Peak RSS is the largest single process (wait4 reports the biggest
    descendant), i.e. the per-dump worker: it must not grow with the batch.
    The copies are hard links (kho-triage skips paths that resolve to a dump
    it already has), made beside the decompressed fixtures.
    """
    import tempfile

    fixtures = {
        "chain-aab": ("kho-7.2/chain-aab.vmcore.xz", "kho-7.2/vmlinux-7.2.13-kho-b.xz"),
        "cold-b": ("kho-7.2/cold-b.vmcore.xz", "kho-7.2/vmlinux-7.2.13-kho-b.xz"),
        "off-b": ("kho-7.2/off-b.vmcore.xz", "kho-7.2/vmlinux-7.2.13-kho-b.xz"),
        "kdump": (
            "kho-7.2-kdump/kdump.vmcore.xz",
            "kho-7.2-kdump/vmlinux-7.2.13-kho-b.xz",
        ),
    }
    cache = decompressed(fx / fixtures["chain-aab"][0]).parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-", dir=cache) as tmp:
        root, debug = Path(tmp, "crash"), Path(tmp, "debuginfo")
        debug.mkdir()
        pairs = []
        for name, (core_xz, vmlinux_xz) in fixtures.items():
            core, vmlinux = decompressed(fx / core_xz), decompressed(fx / vmlinux_xz)
            link = debug / f"{name}-vmlinux"
            link.symlink_to(vmlinux)
            pairs.append((core, vmlinux))
            for i in range(copies):
                host = root / f"{name}-{i}"
                host.mkdir(parents=True)
                os.link(core, host / "vmcore")
        n = len(pairs) * copies
        serial = [
            [*drgn, "-c", str(core), "-s", str(vmlinux), "-e", "pass"]
            for core, vmlinux in pairs
        ]
        each = list(
            measure_interleaved(
                {str(i): c for i, c in enumerate(serial)}, repeat
            ).values()
        )
        base = sum(wall for wall, _ in each) * copies
        label = f"{n} dumps: bare drgn -e pass, one after another"
        results = [Result(label, base, max(rss for _, rss in each), label)]
        for jobs in (1, 2):
            cmd = [sys.executable, "-m", "kho_drgn.triage.cli", str(root),
                   "--debuginfo-dir", str(debug), "-j", str(jobs),
                   "-o", str(Path(tmp, f"out-{jobs}.jsonl"))]  # fmt: skip
            wall, rss = measure(cmd, max(1, repeat // 3), ok=(0, 1))
            results.append(
                Result(f"{n} dumps: kho-triage -j {jobs} "
                       f"({n / wall:.1f} dumps/s)", wall, rss, label, wall / base)
            )  # fmt: skip
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--batch-copies",
        type=int,
        default=6,
        help="copies of each fixture in the batch",
    )
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None:
        print("no ../shared fixtures (set KHO_DRGN_SHARED)", file=sys.stderr)
        return 2
    fx = shared / "fixtures"
    vmlinux_name = "vmlinux-7.2.13-kho-b.xz"
    dumps = {
        "chain-aab": (
            fx / "kho-7.2/chain-aab.vmcore.xz",
            fx / "kho-7.2" / vmlinux_name,
        ),
        "kdump": (
            fx / "kho-7.2-kdump/kdump.vmcore.xz",
            fx / "kho-7.2-kdump" / vmlinux_name,
        ),
        # LUO sessions read from the kernel's variables and blocks.
        "luo-in": (
            fx / "kho-7.2-luo/luo-in.vmcore.xz",
            fx / "kho-7.2-luo/vmlinux-7.2.13-kho-l.xz",
        ),
        # The 6.16-6.18 era: chunk-list maps, era probing without DWARF.
        "chain-ab": (
            fx / "kho-6.18/chain-ab.vmcore.xz",
            fx / "kho-6.18/vmlinux-6.18.5-kho-618a.xz",
        ),
    }
    compile_bytecode()
    drgn = [sys.executable, "-m", "drgn", "--quiet"]
    results: list[Result] = []
    for name, (core_xz, vmlinux_xz) in dumps.items():
        core, vmlinux = str(decompressed(core_xz)), str(decompressed(vmlinux_xz))
        sym = [*drgn, "-c", core, "-s", vmlinux]
        nosym = [*drgn, "-c", core, "--no-default-symbols"]
        runs = {
            "bare drgn -e pass": [*sym, "-e", "pass"],
            # What the report asks of drgn itself with DWARF: its first unwind
            # of the crashed task and its printk reader.  kho-drgn's own cost
            # is what a --json run adds on top of this.
            "bare drgn: unwind + printk": [*sym, "-e", DRGN_WORK],
            "kho_chain.py --json": [*sym, SCRIPT, "--json"],
            # The same report with drgn's teardown, as bare drgn pays it (the
            # script skips it): kho-drgn's own cost, like for like.
            "JSON report, drgn tears down": [*sym, "-e", KHO_WITH_TEARDOWN],
            "kho_chain.py --json --no-crash": [*sym, SCRIPT, "--json", "--no-crash"],
            "kho_chain.py (text)": [*sym, SCRIPT],
            "bare drgn, no symbols": [*nosym, "-e", "pass"],
            "kho_chain.py --json, no debuginfo": [*nosym, SCRIPT, "--json"],
        }
        measured = measure_interleaved(runs, args.repeat)
        for label, (wall, rss) in measured.items():
            base = (
                "bare drgn, no symbols"
                if "no" in label and "debuginfo" in label
                else "bare drgn -e pass"
            )
            ratio = None if label == base else wall / measured[base][0]
            results.append(Result(f"{name}: {label}", wall, rss, base, ratio))
        # kho-drgn's own cost: the --json run against drgn doing the same
        # unwind and printk read with nothing else.
        label, base = "kho_chain.py --json", "bare drgn: unwind + printk"
        wall, rss = measured[label]
        results.append(
            Result(
                f"{name}: {label} (against drgn's unwind + printk)",
                wall,
                rss,
                base,
                wall / measured[base][0],
            )
        )
        # Without debuginfo kho-drgn must still beat drgn loading DWARF.
        label = "kho_chain.py --json, no debuginfo"
        wall, rss = measured[label]
        base = "bare drgn -e pass"
        results.append(
            Result(
                f"{name}: {label} (against DWARF)",
                wall,
                rss,
                base,
                wall / measured[base][0],
            )
        )

    results += batch_throughput(fx, drgn, args.batch_copies, args.repeat)

    print(f"| run (median of {args.repeat}) | wall s | peak RSS MiB | vs baseline |")
    print("|---|---|---|---|")
    for r in results:
        shown = "baseline" if r.ratio is None else f"{r.ratio:.2f}x {r.baseline}"
        print(f"| {r.name} | {r.wall_s:.3f} | {r.max_rss_mib:.0f} | {shown} |")
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
