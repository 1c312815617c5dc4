"""The storage core: encryption, erasure coding, hash trees, capabilities,
the share format and placement, as pure functions and classes (no I/O).

Modules, each small: :mod:`.hashing` (tagged SHA-256, Merkle trees),
:mod:`.crypto` (keys, storage index, AES-128-CTR at any offset),
:mod:`.caps` (read/verify/literal capabilities), :mod:`.layout` (parameters,
UEB, share header and trailer), :mod:`.encoder`, :mod:`.decoder`,
:mod:`.repair`, :mod:`.placement`, :mod:`.errors`. The format is specified
in docs/STORAGE.md.
"""

from openheap.storage.caps import LITERAL_MAX, LiteralCap, ReadCap, VerifyCap, parse_cap
from openheap.storage.errors import (BadCapability, CorruptShare, IntegrityError, NotEnoughShares,
                                     NotHappy, StorageError)
from openheap.storage.layout import Params

__all__ = [
    "LITERAL_MAX", "LiteralCap", "ReadCap", "VerifyCap", "parse_cap", "Params",
    "StorageError", "BadCapability", "IntegrityError", "CorruptShare", "NotEnoughShares", "NotHappy",
]
