"""Findings: what kho-drgn noticed about the handover state, one record each.

A finding is never fatal: decoders and finders return them next to whatever
they could still read, so one damaged blob does not hide the rest of a dump.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import NamedTuple


class Severity(str, enum.Enum):
    """How much a finding matters to someone triaging a crash."""

    ERROR = "error"  # the handover data is damaged or contradicts itself
    WARNING = "warning"  # something is missing or unusual; results may be partial
    INFO = "info"  # context worth knowing (e.g. the log buffer wrapped)

    def __str__(self) -> str:
        return self.value


class Finding(NamedTuple):
    """One observation, with a stable machine-readable ``code``.

    ``where`` names the part of the target it is about: ``incoming``,
    ``outgoing``, ``log``, ``crash`` or ``target``.
    """

    code: str
    severity: Severity
    message: str
    where: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "where": self.where,
            "message": self.message,
        }


def error(code: str, message: str, where: str = "") -> Finding:
    return Finding(code, Severity.ERROR, message, where)


def warning(code: str, message: str, where: str = "") -> Finding:
    return Finding(code, Severity.WARNING, message, where)


def info(code: str, message: str, where: str = "") -> Finding:
    return Finding(code, Severity.INFO, message, where)


def memory_missing(message: str, where: str = "") -> Finding:
    """Target memory that is not in the dump: absent data, not damage.

    Every reader reports it with this one code (a warning: filtered and
    truncated dumps lack pages without anything being damaged).
    """
    return warning("memory.missing", message, where)


#: Least to most severe.
SEVERITY_ORDER = (Severity.INFO, Severity.WARNING, Severity.ERROR)


def most_severe_first(findings: Iterable[Finding]) -> list[Finding]:
    """Each finding once, errors first, then warnings, then infos; within a
    severity, in the order they were found (incoming, outgoing, checks)."""
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: -SEVERITY_ORDER.index(f.severity))
