"""Errors of the storage core.

Every message is one sentence a person can act on, as everywhere in
openheap (see :mod:`openheap.errors`). The storage errors keep the
facts a caller needs as attributes too (which share is corrupt, how many
shares were found and needed), so that the coordinator can react (use another
share, report the node) rather than parse messages.
"""

from __future__ import annotations

from openheap.errors import OpenheapError, UsageError

__all__ = [
    "StorageError",
    "BadCapability",
    "IntegrityError",
    "CorruptShare",
    "NotEnoughShares",
    "NotHappy",
]


class StorageError(OpenheapError):
    """Base of the errors raised by :mod:`openheap.storage`."""


class BadCapability(UsageError):
    """A capability string is mistyped, truncated or otherwise broken (exit 2)."""


class IntegrityError(StorageError):
    """Data failed a hash check or is inconsistent with what it claims to be."""


class CorruptShare(IntegrityError):
    """One or more shares are damaged; ``shnums`` says which (may be empty).

    ``shnum`` is the first of them (or ``None`` when the share number is not
    known, e.g. while parsing a header alone); ``reason`` is the problem
    without the share number, so a caller can prefix the node's name.
    """

    def __init__(self, reason: str, shnum: int | None = None, shnums=None):
        self.reason = reason
        if shnums is None:
            shnums = [] if shnum is None else [shnum]
        self.shnums = sorted(shnums)
        self.shnum = shnum if shnum is not None else (self.shnums[0] if self.shnums else None)
        if len(self.shnums) > 1:
            message = "shares %s are corrupt: %s" % (", ".join(map(str, self.shnums)), reason)
        elif self.shnum is not None:
            message = "share %d is corrupt: %s" % (self.shnum, reason)
        else:
            message = "the share is corrupt: %s" % reason
        super().__init__(message)

    def for_share(self, shnum: int) -> "CorruptShare":
        """The same problem, attributed to share ``shnum``."""
        return CorruptShare(self.reason, shnum)


class NotEnoughShares(StorageError):
    """Fewer than k usable shares were found; ``found`` and ``needed`` say how many."""

    def __init__(self, found: int, needed: int, message: str | None = None):
        self.found = found
        self.needed = needed
        if message is None:
            message = "found %d good share%s of this file but %d are needed to rebuild it" % (
                found, "" if found == 1 else "s", needed)
        super().__init__(message)


class NotHappy(StorageError):
    """The servers-of-happiness rule cannot be met; ``happiness`` < ``needed``."""

    def __init__(self, message: str, happiness: int = 0, needed: int = 0):
        self.happiness = happiness
        self.needed = needed
        super().__init__(message)
