"""``kexec-metadata``: the previous kernel's release and the kexec count.

A packed ``struct kho_kexec_metadata`` (Linux 7.1+), not an FDT, recognised
by its node name; decoded by :func:`kho_drgn.metadata.decode_kexec_metadata`.
"""

from __future__ import annotations

from kho_drgn.abi import KEXEC_METADATA_NODE, MetadataLayout
from kho_drgn.fdt import FdtNode
from kho_drgn.formats.base import ByteOrder, DecodeContext, SubtreeFormat, SubtreeView
from kho_drgn.metadata import KexecMetadata, decode_kexec_metadata

__all__ = ("FORMAT", "decode_metadata_blob", "metadata_view")


def decode_metadata_blob(
    blob: bytes,
    byteorder: ByteOrder = "little",
    layout: MetadataLayout | None = None,
    where: str = "",
    name: str = KEXEC_METADATA_NODE,
) -> SubtreeView:
    """The kexec-metadata blob as a view (see :mod:`kho_drgn.metadata`)."""
    kwargs = {} if layout is None else {"layout": layout}
    md = decode_kexec_metadata(
        blob, byteorder, blob_size=len(blob), where=where, **kwargs
    )
    return metadata_view(md, len(blob), name)


def metadata_view(
    md: KexecMetadata, size: int, name: str = KEXEC_METADATA_NODE
) -> SubtreeView:
    """An already-decoded kexec-metadata blob as a view."""
    return SubtreeView(
        name,
        "kexec-metadata",
        None,
        size,
        fields={
            "version": md.version,
            "previous_release": md.previous_release,
            "kexec_count": md.kexec_count,
            "valid": md.valid,
        },
        findings=list(md.findings),
        summarizer=_summary,
    )


def _decode(
    name: str, blob: bytes, root: FdtNode | None, ctx: DecodeContext
) -> SubtreeView:
    return decode_metadata_blob(
        blob, ctx.byteorder, ctx.metadata_layout, ctx.where, name
    )


def _summary(view: SubtreeView) -> str:
    f = view.fields
    if not f.get("valid"):
        return "invalid: see findings"
    return f"v{f['version']}: {f['previous_release']}, count {f['kexec_count']}"


FORMAT = SubtreeFormat(
    kind="kexec-metadata",
    decode=_decode,
    summary=_summary,
    node_names=(KEXEC_METADATA_NODE,),
    by_node_name=True,
)
