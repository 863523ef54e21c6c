"""Grouping triage records across a fleet: which kexec transitions crash.

Pure: records in, tables out.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: kexec_count buckets: 0 (cold boot), 1, 2, 3-5, 6-10, >10.
BUCKETS = (
    (0, 0, "0 (cold boot)"),
    (1, 1, "1"),
    (2, 2, "2"),
    (3, 5, "3-5"),
    (6, 10, "6-10"),
)


def count_bucket(count: int | None) -> str:
    if count is None:
        return "unknown"
    for low, high, label in BUCKETS:
        if low <= count <= high:
            return label
    return ">10"


_NOISE = re.compile(r"0x[0-9a-fA-F]+|\b\d+\b")


def panic_signature(reason: str | None) -> str:
    """A panic reason with addresses and numbers masked, for grouping."""
    if not reason:
        return "(no panic message)"
    return _NOISE.sub("N", reason).strip()


def transition(status: str, previous: str | None, current: str | None) -> str:
    """``previous -> crashed`` release, or the KHO state when there is none."""
    current = current or "?"
    if status == "cold-boot":
        return f"cold boot -> {current}"
    if status in ("kexec", "disabled-with-incoming") and previous:
        return f"{previous} -> {current}"
    return f"({status}) {current}"


#: ``status`` of a record that is not a kho-triage record at all.
UNREADABLE = "unreadable"


class RecordError(ValueError):
    """A record that does not have the shape kho-triage writes; says why."""


@dataclass
class CrashRecord:
    """What the fleet report takes from one analysed dump's record."""

    dump: str
    host: str
    kho_status: str
    kexec_count: int | None
    previous_release: str | None
    current_release: str | None
    panic_reason: str | None


def _field(
    data: Any, key: str, kind: type | tuple[type, ...], where: str, optional: bool
) -> Any:
    if not isinstance(data, dict):
        raise RecordError(f"{where} is not an object")
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"{where}.{key} is {value!r}")
    return value


def parse_record(record: Any) -> CrashRecord:
    """The fields of an ``ok`` record, type-checked.

    :raises RecordError: if it is not shaped like kho-triage's records.
    """
    report = _field(record, "report", dict, "record", False)
    chain = _field(report, "chain", dict, "report", False)
    crash = report.get("crash")
    return CrashRecord(
        dump=str(record.get("dump") or "?"),
        host=_field(record, "host", str, "record", True) or "(unknown host)",
        kho_status=_field(_field(report, "kho", dict, "report", False),
                          "status", str, "report.kho", False),
        kexec_count=_field(chain, "kexec_count", int, "chain", True),
        previous_release=_field(chain, "previous_release", str, "chain", True),
        current_release=_field(chain, "current_release", str, "chain", True),
        panic_reason=_field(crash, "panic_reason", str, "crash", True)
        if crash is not None
        else None,
    )  # fmt: skip


def unreadable_record(dump: str, why: str) -> dict[str, Any]:
    """A stand-in for a record that could not be read (bad JSON, bad shape)."""
    return {"dump": dump, "status": UNREADABLE, "error": why}


@dataclass
class HostCrash:
    """One dump of a host: where its kernel sat in the kexec chain."""

    kexec_count: int | None
    previous_release: str | None
    release: str | None
    dump: str


@dataclass
class FleetReport:
    total: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    by_transition: Counter[str] = field(default_factory=Counter)
    by_bucket: Counter[str] = field(default_factory=Counter)
    by_panic: Counter[str] = field(default_factory=Counter)
    #: (transition, panic signature) -> crashes: which handover breaks how
    by_transition_panic: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: host -> its dumps in kexec_count order
    hosts: dict[str, list[HostCrash]] = field(default_factory=dict)


def host_chain(crashes: list[HostCrash]) -> list[tuple[int, list[str]]]:
    """The kernels a host ran at each kexec_count, pieced together from its
    dumps: each dump names its own kernel (at its count) and the previous one
    (at count - 1).  More than one release at a position means the dumps come
    from different boot chains."""
    seen: dict[int, list[str]] = defaultdict(list)
    for crash in crashes:
        if crash.kexec_count is None:
            continue
        known = [(crash.kexec_count, crash.release)]
        if crash.kexec_count > 0:
            known.append((crash.kexec_count - 1, crash.previous_release))
        for position, release in known:
            if release is not None and release not in seen[position]:
                seen[position].append(release)
    return sorted(seen.items())


def fleet_report(records: Iterable[Any]) -> FleetReport:
    """Group records; failed dumps and records of the wrong shape are listed
    in ``failed`` (the latter with status ``unreadable``), never fatal."""
    fleet = FleetReport()
    hosts: dict[str, list[HostCrash]] = defaultdict(list)
    for record in records:
        fleet.total += 1
        if not isinstance(record, dict):
            fleet.failed.append(unreadable_record("?", "record is not an object"))
            continue
        if record.get("status") != "ok":
            fleet.failed.append(record)
            continue
        try:
            crash = parse_record(record)
        except RecordError as e:
            dump = str(record.get("dump") or "?")
            fleet.failed.append(unreadable_record(dump, f"malformed record: {e}"))
            continue
        step = transition(
            crash.kho_status, crash.previous_release, crash.current_release
        )
        fleet.by_transition[step] += 1
        fleet.by_bucket[count_bucket(crash.kexec_count)] += 1
        signature = panic_signature(crash.panic_reason)
        fleet.by_panic[signature] += 1
        fleet.by_transition_panic[(step, signature)] += 1
        hosts[crash.host].append(
            HostCrash(
                crash.kexec_count,
                crash.previous_release,
                crash.current_release,
                crash.dump,
            )
        )
    fleet.hosts = {
        host: sorted(entries, key=lambda e: (e.kexec_count is None, e.kexec_count or 0))
        for host, entries in sorted(hosts.items())
    }
    return fleet


def fleet_to_dict(fleet: FleetReport) -> dict[str, Any]:
    return {
        "schema": "kho-drgn/fleet-report/1",
        "dumps": fleet.total,
        "ok": fleet.total - len(fleet.failed),
        "failed": [
            {"dump": r.get("dump"), "status": r.get("status"), "error": r.get("error")}
            for r in fleet.failed
        ],
        "by_transition": dict(fleet.by_transition.most_common()),
        "by_kexec_count": dict(fleet.by_bucket.most_common()),
        "by_panic": dict(fleet.by_panic.most_common()),
        "by_transition_and_panic": [
            {"transition": step, "panic": signature, "crashes": n}
            for (step, signature), n in fleet.by_transition_panic.most_common()
        ],
        "hosts": {
            host: {
                "dumps": [
                    {
                        "kexec_count": e.kexec_count,
                        "previous_release": e.previous_release,
                        "release": e.release,
                        "dump": e.dump,
                    }
                    for e in entries
                ],
                "chain": [
                    {"kexec_count": position, "releases": releases}
                    for position, releases in host_chain(entries)
                ],
            }
            for host, entries in fleet.hosts.items()
        },
    }


def render_fleet(fleet: FleetReport) -> str:
    from tabulate import tabulate

    def table(title: str, counter: Counter[str], what: str) -> str:
        rows = counter.most_common()
        return f"{title}\n" + tabulate(rows, headers=(what, "crashes"))

    ok = fleet.total - len(fleet.failed)
    out = [
        f"{fleet.total} dumps: {ok} analysed, {len(fleet.failed)} failed",
        table(
            "By kexec transition (previous -> crashed)",
            fleet.by_transition,
            "transition",
        ),
        table("By kexec_count", fleet.by_bucket, "kexec_count"),
        table("By panic signature", fleet.by_panic, "panic"),
    ]
    pairs = [
        (step, signature, n)
        for (step, signature), n in fleet.by_transition_panic.most_common()
    ]
    out.append(
        "By transition and panic signature\n"
        + tabulate(pairs, headers=("transition", "panic", "crashes"))
    )
    host_rows = [
        (
            host,
            len(entries),
            " -> ".join(
                f"#{position} {'|'.join(releases)}"
                for position, releases in host_chain(entries)
            )
            or "(no kexec_count)",
            ", ".join(
                f"#{'?' if e.kexec_count is None else e.kexec_count}" for e in entries
            ),
        )
        for host, entries in fleet.hosts.items()
    ]
    out.append(
        "Per host: kernels by kexec_count, pieced together from its dumps "
        "('a|b': dumps from different boot chains)\n"
        + tabulate(
            host_rows,
            headers=("host", "dumps", "chain", "crashed at"),
            maxcolwidths=[None, None, 70, 30],
        )
    )
    if fleet.failed:
        rows = [(r.get("dump"), r.get("status"), r.get("error")) for r in fleet.failed]
        out.append(
            "Failed\n"
            + tabulate(
                rows,
                headers=("dump", "status", "reason"),
                maxcolwidths=[None, None, 70],
            )
        )
    return "\n\n".join(out) + "\n"
