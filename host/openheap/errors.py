"""The openheap exception hierarchy.

Every error a user can cause or fix is an :class:`OpenheapError`. Its
message is one actionable sentence (the CLI prints exactly that on stderr,
never a traceback) and its :attr:`~OpenheapError.exit_code` is the process
exit status the CLI uses.

Exit codes::

    1  OpenheapError (anything not more specific)
    2  UsageError    (bad command line or arguments)
    3  ConfigError   (a broken board file, config file or state directory)
    4  BuildError    (the firmware bundle could not be built)
    5  SimError      (virtual boards could not be started, stopped, found)
    6  CoapError     (a node answered with a 4.xx/5.xx error)
    7  NodeUnreachable (a node did not answer at all)
    8  CoordinatorError (openheap.coordinator.errors: not running, already running, port in use)

Other modules extend the hierarchy by subclassing; keep one sentence per
message and pick the closest existing base.
"""

from __future__ import annotations

__all__ = [
    "OpenheapError",
    "UsageError",
    "ConfigError",
    "BuildError",
    "SimError",
    "CoapError",
    "ClientError",
    "ServerError",
    "NodeUnreachable",
    "from_code",
    "format_code",
]


class OpenheapError(Exception):
    """Base of every error openheap reports to a user.

    ``message`` should be one sentence that says what went wrong and, where
    possible, what to do about it.
    """

    exit_code = 1

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or self.__class__.__name__


class UsageError(OpenheapError):
    """The command line or the arguments of an API call make no sense."""

    exit_code = 2


class ConfigError(OpenheapError):
    """A board definition, config file or state directory is wrong."""

    exit_code = 3


class BuildError(OpenheapError):
    """The firmware bundle could not be built (e.g. mpy-cross failed)."""

    exit_code = 4


class SimError(OpenheapError):
    """A virtual board could not be created, started, stopped or found."""

    exit_code = 5


def format_code(code) -> str:
    """Render a CoAP code (an int ``class << 5 | detail``) as ``"4.04"``."""
    code = int(code)
    return "%d.%02d" % (code >> 5, code & 0x1F)


def _parse_code(code) -> int:
    """Accept ``0x84``, ``132``, an IntEnum like aiocoap's codes, or ``"4.04"``."""
    if isinstance(code, str):
        cls, _, detail = code.partition(".")
        try:
            return int(cls) << 5 | int(detail)
        except ValueError:
            raise ValueError("not a CoAP code: %r" % code) from None
    return int(code)


class CoapError(OpenheapError):
    """A node answered a request with an error response code.

    ``code`` is the CoAP code as an int (``class << 5 | detail``, so 4.04 is
    ``0x84``) or ``None`` when there was no response at all;
    ``diagnostic`` is the diagnostic payload text, if any.
    """

    exit_code = 6

    def __init__(self, code=None, diagnostic: str | None = None, message: str | None = None):
        self.code = None if code is None else _parse_code(code)
        self.diagnostic = diagnostic or None
        if message is None:
            if self.code is None:
                message = "the node did not answer"
            else:
                message = "the node answered %s" % format_code(self.code)
            if self.diagnostic:
                message += ": " + self.diagnostic
        super().__init__(message)


class ClientError(CoapError):
    """A 4.xx response: the request was wrong (bad input, not found, ...)."""


class ServerError(CoapError):
    """A 5.xx response: the node failed to handle a valid request."""


class NodeUnreachable(CoapError):
    """No response arrived from a node (timeout, ICMP unreachable, ...)."""

    exit_code = 7

    def __init__(self, node: str | None = None, diagnostic: str | None = None, message: str | None = None):
        self.node = node
        if message is None:
            who = "node %s" % node if node else "the node"
            message = "%s did not answer; is it running and reachable?" % who
            if diagnostic:
                message = "%s did not answer (%s); is it running and reachable?" % (who, diagnostic)
        super().__init__(None, diagnostic, message)


def from_code(code, diagnostic: str | None = None) -> CoapError:
    """Return the :class:`CoapError` subclass instance matching ``code``.

    4.xx gives :class:`ClientError`, 5.xx :class:`ServerError`; any other
    code (which should not be an error) gives a plain :class:`CoapError`.
    """
    value = _parse_code(code)
    cls = {4: ClientError, 5: ServerError}.get(value >> 5, CoapError)
    return cls(value, diagnostic)
