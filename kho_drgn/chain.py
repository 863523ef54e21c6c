"""The kexec chain and its cross-checks, from an already-read KhoState.

Pure: no drgn.  Answers the on-call question -- which kernel did this one come
from, after how many kexecs, and what will the next kernel be told -- and says
where the sources of that answer disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from kho_drgn.abi import EXEC_FROM_RE
from kho_drgn.checks import (
    check_boot_line,
    check_kernel_complaints,
    check_kho_in_copy,
    check_outgoing,
)
from kho_drgn.findings import Finding, Severity, error
from kho_drgn.state import KHO_IN_UNREADABLE, PREDATES_METADATA, KhoState, KhoStatus


@dataclass(eq=False)
class BootLine:
    """The kernel's ``KHO: exec from: <release> (count N)`` line."""

    release: str
    kexec_count: int
    text: str


def find_boot_line(lines: list[str]) -> BootLine | None:
    """The kernel's ``KHO: exec from:`` record, if the log still has it.

    Only a record that is the kernel's own line counts (it starts with the
    ``KHO:`` prefix; userspace writing to /dev/kmsg cannot forge one with a
    prefix of its own), and the first: the kernel prints it once, at boot.
    """
    for line in lines:
        match = EXEC_FROM_RE.match(line.strip())
        if match:
            return BootLine(match["release"], int(match["count"]), line.strip())
    return None


@dataclass(eq=False)
class KexecChain:
    """Where this kernel sits in its kexec chain.

    ``kexec_count`` is the number of KHO kexecs since the last cold boot that
    led to this kernel (0: cold boot).  ``source`` says where the incoming
    half came from: the ``kexec-metadata`` blob, the ``kho_in`` copy the kernel
    made at boot, or the boot log line.  ``status`` is the state's, except
    ``KEXEC`` when the log shows a handover that damaged KHO variables lost.
    """

    status: KhoStatus
    current_release: str | None
    kexec_count: int | None = None
    previous_release: str | None = None
    next_release: str | None = None
    next_kexec_count: int | None = None
    source: str | None = None
    findings: list[Finding] = field(default_factory=list)
    #: Whether this kernel was reached by a KHO kexec (None: unknown), known
    #: even when nothing counts kexecs (before Linux 7.1).
    kho_kexec: bool | None = None
    #: The kernel predates kexec-metadata: no count, no previous release.
    predates_metadata: bool = False
    #: What the "next" part says when there is no outgoing metadata.
    next_note: str | None = None

    @property
    def next(self) -> NextKernel | None:
        """What the outgoing blob will tell the next kernel; None if nothing."""
        if self.next_release is None and self.next_kexec_count is None:
            return None
        return NextKernel(self.next_release, self.next_kexec_count)


class NextKernel(NamedTuple):
    """The outgoing ``kexec-metadata``: this kernel's release and the count."""

    release: str | None
    kexec_count: int | None


def build_chain(
    state: KhoState, log_lines: list[str] | None = None, log_wrapped: bool = False
) -> KexecChain:
    """Work out the chain from a KhoState, cross-checking every source.

    :param log_lines: the kernel log (or just its KHO lines) when readable;
        ``None`` when the log could not be read at all.
    :param log_wrapped: the oldest boot records are gone from the log buffer.
    """
    chain = KexecChain(status=state.status, current_release=state.release)
    incoming_md = state.incoming.metadata if state.incoming else None
    outgoing_md = state.outgoing.metadata if state.outgoing else None
    kho_in = state.kho_in
    boot_line = find_boot_line(log_lines) if log_lines is not None else None

    if state.status is KhoStatus.COLD_BOOT:
        chain.kexec_count = 0
        chain.source = "cold boot (no incoming handover)"
    elif state.status is KhoStatus.DISABLED_WITH_INCOMING:
        if incoming_md is not None and incoming_md.valid:
            chain.previous_release = incoming_md.previous_release
            chain.kexec_count = incoming_md.kexec_count
            chain.source = "incoming kexec-metadata blob (not consumed: KHO off)"
    elif state.status is KhoStatus.KEXEC:
        blob_valid = incoming_md is not None and incoming_md.valid
        copy_valid = (
            kho_in is not None
            and kho_in.has_metadata_copy
            and kho_in.previous_release is not None
            and bool(kho_in.kexec_count)
        )
        if blob_valid and copy_valid and _copy_outweighs_blob(state, boot_line):
            assert kho_in is not None
            chain.previous_release = kho_in.previous_release
            chain.kexec_count = kho_in.kexec_count
            chain.source = KHO_IN_OVER_BLOB
        elif incoming_md is not None and incoming_md.valid:
            chain.previous_release = incoming_md.previous_release
            chain.kexec_count = incoming_md.kexec_count
            chain.source = "incoming kexec-metadata blob"
        elif copy_valid:
            assert kho_in is not None
            chain.previous_release = kho_in.previous_release
            chain.kexec_count = kho_in.kexec_count
            chain.source = "kho_in (the kernel's boot-time copy)"
        elif boot_line is not None:
            chain.previous_release = boot_line.release
            chain.kexec_count = boot_line.kexec_count
            chain.source = "boot log line"

    if outgoing_md is not None and outgoing_md.valid:
        chain.next_release = outgoing_md.previous_release
        chain.next_kexec_count = outgoing_md.kexec_count

    chain.findings.extend(_chain_from_log(state, chain, boot_line, log_lines))
    # The chain's cross-checks (kho_drgn.checks), once it is decided.
    chain.findings.extend(
        check_kho_in_copy(state, follows_copy=chain.source == KHO_IN_OVER_BLOB)
    )
    chain.findings.extend(check_outgoing(state, chain))
    if chain.status in (KhoStatus.KEXEC, KhoStatus.COLD_BOOT):
        chain.findings.extend(
            check_boot_line(
                chain,
                boot_line,
                log_lines,
                log_wrapped,
                predates_metadata=_predates_metadata(state),
            )
        )
    chain.findings.extend(check_kernel_complaints(log_lines or []))
    _without_metadata(state, chain, log_lines or [])
    return chain


#: The line the kernel prints when it finds a handover FDT (kho_populate).
FOUND_HANDOVER_LINE = "KHO: found kexec handover data"

#: ``KexecChain.source`` when kho_in says cold boot but the boot line and the
#: outgoing count agree on a KHO kexec.
BOOT_LINE_OVER_KHO_IN = "boot log line and outgoing count (kho_in damaged)"

#: ``KexecChain.source`` when the KHO variables read as disabled but the log
#: says a handover was found.
LOG_OVER_KHO_VARIABLES = "boot log (the KHO variables read as disabled)"


def _kho_in_unreadable(state: KhoState) -> bool:
    return any(f.code == KHO_IN_UNREADABLE for f in state.findings)


def _kho_in_damage(state: KhoState) -> str:
    """How ``kho_in`` reads, for a finding: unreadable or zeroed."""
    if _kho_in_unreadable(state):
        return "kho_in could not be read"
    return "kho_in reads as zeroed (no incoming FDT)"


def _chain_without_kho_in(state: KhoState, chain: KexecChain) -> None:
    """``kho_in`` unreadable and the log does not give the chain: only the
    outgoing count (incoming + 1) is left, and not the previous release."""
    outgoing_md = state.outgoing.metadata if state.outgoing else None
    if outgoing_md is None or not outgoing_md.valid or not outgoing_md.kexec_count:
        chain.status, chain.kexec_count = KhoStatus.KEXEC, None
        chain.source = "unknown (kho_in unreadable)"
        return
    chain.kexec_count = outgoing_md.kexec_count - 1
    chain.source = "outgoing count (kho_in unreadable)"
    if chain.kexec_count:
        chain.status = KhoStatus.KEXEC


def _chain_from_log(
    state: KhoState,
    chain: KexecChain,
    boot_line: BootLine | None,
    log_lines: list[str] | None,
) -> list[Finding]:
    """The chain from the log when the KHO variables lost the incoming side.

    A zeroed or unreadable ``kho_in`` reads as a cold boot; zeroed
    ``kho_in`` and ``kho_out`` read as KHO disabled.  The kernel's boot lines
    say otherwise: ``KHO: exec from: R (count N)``, borne out by an outgoing
    count of N + 1, gives the incoming side; ``KHO: found kexec handover
    data`` at least says there was a handover.
    """
    outgoing_md = state.outgoing.metadata if state.outgoing else None
    if state.status is KhoStatus.COLD_BOOT:
        if (
            boot_line is None
            or outgoing_md is None
            or not outgoing_md.valid
            or outgoing_md.kexec_count != boot_line.kexec_count + 1
        ):
            if _kho_in_unreadable(state):
                _chain_without_kho_in(state, chain)
            return []
        chain.status = KhoStatus.KEXEC
        chain.previous_release = boot_line.release
        chain.kexec_count = boot_line.kexec_count
        chain.source = BOOT_LINE_OVER_KHO_IN
        return [
            error(
                "check.kho-in-vs-log",
                f"{_kho_in_damage(state)}, as on a cold boot, but the log has "
                f"{boot_line.text!r} and the outgoing kexec_count is "
                f"{outgoing_md.kexec_count}: kho_in was damaged after boot; "
                "the chain follows the boot line and the outgoing count",
                "incoming",
            )
        ]
    if state.status is not KhoStatus.DISABLED or log_lines is None:
        return []
    if not any(line.lstrip().startswith(FOUND_HANDOVER_LINE) for line in log_lines):
        return []
    chain.status = KhoStatus.KEXEC
    chain.source = LOG_OVER_KHO_VARIABLES
    if boot_line is not None:
        chain.previous_release = boot_line.release
        chain.kexec_count = boot_line.kexec_count
        follows = f"the chain follows {boot_line.text!r}"
    else:
        follows = "no 'KHO: exec from:' line gives the previous kernel"
    return [
        error(
            "check.kho-vars-vs-log",
            "kho_in and kho_out read as KHO disabled (no incoming or outgoing "
            f"FDT), but the log has {FOUND_HANDOVER_LINE!r}: this kernel was "
            f"handed KHO data and its KHO variables were damaged; {follows}",
            "incoming",
        )
    ]


def _predates_metadata(state: KhoState) -> bool:
    """The state says once that the kernel predates kexec-metadata (7.1)."""
    return any(f.code == PREDATES_METADATA for f in state.findings)


def _without_metadata(state: KhoState, chain: KexecChain, lines: list[str]) -> None:
    """What is still known when the kernel predates kexec-metadata (7.1):
    that a KHO kexec happened (kho_in and the incoming FDT), not how many or
    from which kernel; the boot line is not expected (it came with 7.1)."""
    chain.kho_kexec = {
        KhoStatus.KEXEC: True,
        KhoStatus.DISABLED_WITH_INCOMING: True,
        KhoStatus.COLD_BOOT: False,
    }.get(chain.status)
    if not _predates_metadata(state):
        return
    chain.predates_metadata = True
    if state.status is KhoStatus.KEXEC and chain.source is None:
        logged = any(line.lstrip().startswith(FOUND_HANDOVER_LINE) for line in lines)
        chain.source = (
            (
                "the incoming FDT"
                if state.kho_in is None
                else "kho_in and the incoming FDT"
            )
            + (f", and the boot line {FOUND_HANDOVER_LINE!r}" if logged else "")
            + " (no kexec-metadata before 7.1)"
        )
    if any(f.code == "kho.not-finalized" for f in state.findings):
        chain.next_note = "nothing prepared (KHO not finalized)"
    elif state.outgoing is not None and state.outgoing.fdt is not None:
        chain.next_note = "KHO finalized, count unknown (no kexec-metadata before 7.1)"


#: ``KexecChain.source`` when the blob and the boot-time copy disagree and
#: the copy is the one the other sources bear out.
KHO_IN_OVER_BLOB = "kho_in (the kernel's boot-time copy; the blob disagrees)"


def _copy_outweighs_blob(state: KhoState, boot_line: BootLine | None) -> bool:
    """When the incoming blob and the kernel's boot-time copy in ``kho_in``
    disagree, which one to believe: the one the boot line and the outgoing
    count (incoming + 1) agree with; on a tie the copy, which is what the
    kernel read when the blob was fresh and acted on since."""
    kho_in, md = state.kho_in, state.incoming.metadata if state.incoming else None
    if kho_in is None or md is None:
        return False
    copy = (kho_in.previous_release, kho_in.kexec_count)
    blob = (md.previous_release, md.kexec_count)
    if copy == blob:
        return False
    out = state.outgoing.metadata if state.outgoing else None

    def support(release: str | None, count: int | None) -> int:
        votes = 0
        if boot_line is not None:
            votes += (boot_line.release, boot_line.kexec_count) == (release, count)
        if out is not None and out.valid and count is not None:
            votes += out.kexec_count == count + 1
        return votes

    return support(*copy) >= support(*blob)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_chain(
    chain: KexecChain, live: bool, findings: Iterable[Finding] = ()
) -> str:
    """The kexec chain on one line, e.g.

    ``cold boot -> (1 kexec) -> A -> B [crashed, kexec #2] -> next: B, count 3``

    Kernels before the previous one are not recorded anywhere; they are
    collapsed into "(N kexecs)".  When the sources of the chain contradict
    each other (a failed ``check.*``) or any other finding (``findings``:
    the report's) is an error, the line says so: it may be all that is read.
    """
    return _format_line(chain, live) + error_mark([*chain.findings, *findings])


def error_mark(findings: Iterable[Finding]) -> str:
    """The chain line's ``(!) ...`` suffix for error findings ("" if none)."""
    errors = [f for f in dict.fromkeys(findings) if f.severity is Severity.ERROR]
    failed = sum(f.code.startswith("check.") for f in errors)
    others = len(errors) - failed
    said = []
    if failed:
        said.append(f"{_plural(failed, 'cross-check')} failed")
    if others:
        said.append(_plural(others, "error finding" if not failed else "other error"))
    return f" (!) {', '.join(said)}: see findings" if said else ""


def _format_line(chain: KexecChain, live: bool) -> str:
    here = "running" if live else "crashed"
    current = chain.current_release or "(unknown release)"
    status = chain.status
    if status is KhoStatus.NOT_BUILT:
        return f"{current} [{here}; KHO not built in: chain unknown]"
    if status is KhoStatus.DISABLED:
        return f"{current} [{here}; KHO disabled: no handover data, chain unknown]"
    if status is KhoStatus.COLD_BOOT:
        return f"cold boot -> {current} [{here}, cold boot]{_format_next(chain)}"
    if chain.predates_metadata and chain.kexec_count is None:
        return (
            f"? -> (previous kernel not recorded before 7.1) -> {current} "
            f"[{here}, KHO kexec: yes, count unknown]{_format_next(chain)}"
        )
    tags = [here, f"kexec #{chain.kexec_count}" if chain.kexec_count else "kexec #?"]
    if status is KhoStatus.DISABLED_WITH_INCOMING:
        tags.append("KHO off")
    before = _format_before(chain)
    return f"{before} -> {current} [{', '.join(tags)}]{_format_next(chain)}"


def _format_before(chain: KexecChain) -> str:
    previous = chain.previous_release or "(unknown previous kernel)"
    count = chain.kexec_count
    if not count:
        return f"? -> {previous}"
    if count == 1:
        return f"cold boot -> {previous}"
    return f"cold boot -> ({_plural(count - 1, 'kexec')}) -> {previous}"


def _format_next(chain: KexecChain) -> str:
    if chain.status is KhoStatus.DISABLED_WITH_INCOMING:
        return " -> next: nothing (KHO disabled)"
    if chain.next_release is None and chain.next_note is not None:
        return f" -> next: {chain.next_note}"
    if chain.next_release is None:
        return " -> next: (no valid outgoing metadata)"
    return f" -> next: {chain.next_release}, count {chain.next_kexec_count}"
