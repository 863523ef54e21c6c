"""The drgn errors that mean "not in this target", shared by every reader.

Kept apart from :mod:`kho_drgn.target` so that the small modules it uses
(VMCOREINFO parsing) can name them without importing the target layer.
"""

from __future__ import annotations

from drgn import BadDataError, FaultError, MissingDebugInfoError

__all__ = ("TARGET_ERRORS",)

#: Errors drgn raises when target memory or symbols are not there.
TARGET_ERRORS = (
    BadDataError,
    FaultError,
    MissingDebugInfoError,
    LookupError,
    ValueError,
    OverflowError,
)
