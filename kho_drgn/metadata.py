"""Decoding the ``kexec-metadata`` blob (``struct kho_kexec_metadata``).

Pure functions over bytes: no drgn here.  The kernel's own rules
(kernel/liveupdate/kexec_handover.c) decide what is valid; anything else is
reported as a finding next to the raw values, never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kho_drgn.abi import (
    KEXEC_METADATA_MIN_SIZE,
    KEXEC_METADATA_V1,
    KEXEC_METADATA_VERSION,
    MetadataLayout,
)
from kho_drgn.escape import escape_bytes
from kho_drgn.findings import Finding, error, warning

ByteOrder = Literal["little", "big"]


@dataclass(eq=False)
class KexecMetadata:
    """A decoded ``kexec-metadata`` blob.

    ``version``, ``previous_release`` and ``kexec_count`` are ``None`` when
    the blob does not hold a valid value for them; ``raw`` always has the bytes
    that were read, so a finding can be checked by hand.
    """

    blob_size: int
    raw: bytes
    version: int | None = None
    previous_release: str | None = None
    kexec_count: int | None = None
    layout_source: str = "abi"
    findings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when the kernel would have accepted this blob."""
        return (
            self.version == KEXEC_METADATA_VERSION
            and self.previous_release is not None
            and self.kexec_count is not None
        )


def decode_c_string(
    data: bytes, what: str, where: str
) -> tuple[str | None, list[Finding]]:
    """Decode a NUL-terminated char array; findings when it is not one."""
    nul = data.find(b"\0")
    if nul < 0:
        return None, [
            error(
                "metadata.release-unterminated",
                f"{what} has no NUL within its {len(data)} bytes: "
                f"'{escape_bytes(data)}'",
                where,
            )
        ]
    try:
        return data[:nul].decode("utf-8"), []
    except UnicodeDecodeError:
        return None, [
            error(
                "metadata.release-not-utf8",
                f"{what} is not valid UTF-8: '{escape_bytes(data[:nul])}'",
                where,
            )
        ]


def decode_kexec_metadata(
    blob: bytes,
    byteorder: ByteOrder = "little",
    layout: MetadataLayout = KEXEC_METADATA_V1,
    blob_size: int | None = None,
    where: str = "",
) -> KexecMetadata:
    """Decode a ``kexec-metadata`` blob as the kernel would.

    :param blob: the bytes read from the blob's physical address (may be
        shorter than ``blob_size`` if only a prefix was read).
    :param byteorder: the target CPU's byte order.
    :param layout: the struct layout (from DWARF when available).
    :param blob_size: the ``blob-size`` the FDT declared (defaults to
        ``len(blob)``).
    :param where: ``incoming`` or ``outgoing``, carried into findings.
    """
    size = len(blob) if blob_size is None else blob_size
    md = KexecMetadata(
        blob_size=size, raw=bytes(blob[: layout.size]), layout_source=layout.source
    )
    if size < KEXEC_METADATA_MIN_SIZE or len(blob) < KEXEC_METADATA_MIN_SIZE:
        md.findings.append(
            error(
                "metadata.too-small",
                f"kexec-metadata blob is {size} bytes, smaller than its "
                f"{KEXEC_METADATA_MIN_SIZE}-byte version field",
                where,
            )
        )
        return md

    def u32(offset: int) -> int:
        return int.from_bytes(blob[offset : offset + 4], byteorder)

    md.version = u32(layout.version_offset)
    if md.version != KEXEC_METADATA_VERSION:
        md.findings.append(
            error(
                "metadata.unknown-version",
                f"kexec-metadata version {md.version} is not one this tool "
                f"knows (expected {KEXEC_METADATA_VERSION}); raw blob "
                f"{bytes(blob[: layout.size]).hex()}",
                where,
            )
        )
        return md

    if min(size, len(blob)) < layout.size:
        md.findings.append(
            error(
                "metadata.too-small-for-version",
                f"kexec-metadata blob is {min(size, len(blob))} bytes, smaller "
                f"than the v{md.version} struct ({layout.size} bytes)",
                where,
            )
        )
        return md
    if size > layout.size:
        md.findings.append(
            warning(
                "metadata.oversized",
                f"kexec-metadata blob-size is {size} bytes, larger than the "
                f"v{md.version} struct ({layout.size}); the rest is ignored",
                where,
            )
        )

    release = blob[layout.release_offset : layout.release_offset + layout.release_size]
    md.previous_release, findings = decode_c_string(
        bytes(release), "previous_release", where
    )
    md.findings.extend(findings)
    md.kexec_count = u32(layout.count_offset)
    return md
