"""The CLI's client of the coordinator's HTTP API (stdlib ``urllib``).

``CoordinatorClient(home)`` finds the API in ``<home>/coordinator/api.json``,
sends the token from ``<home>/coordinator/token``, and turns every failure
into an :class:`openheap.errors.OpenheapError` with one sentence:

* no ``api.json``, a dead pid, or a refused connection:
  :class:`CoordinatorNotRunning` ("the coordinator is not running; start it
  with 'openheap up' or 'openheap serve'");
* an error answer: the coordinator's own sentence, raised as the error class
  matching its ``exit_code`` (UsageError for 2, ...), with ``http_status``,
  ``kind`` and ``details`` attributes.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterable

from ..errors import (BuildError, CoapError, ConfigError, NodeUnreachable, OpenheapError, SimError, UsageError)
from ..proc import pid_alive
from .errors import CoordinatorError, CoordinatorNotRunning
from .paths import paths

__all__ = ["CoordinatorClient", "read_api_info", "pid_alive", "remote_error"]

DEFAULT_TIMEOUT = 30.0


def read_api_info(home=None) -> dict | None:
    """The running coordinator's ``api.json`` (None if there is none or its pid is dead)."""
    p = paths(home)
    try:
        info = json.loads(p.api.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not pid_alive(info.get("pid")) or not isinstance(info.get("api_port"), int):
        return None
    return info


_BY_EXIT = {1: OpenheapError, 2: UsageError, 3: ConfigError, 4: BuildError, 5: SimError, 8: CoordinatorError}


def remote_error(status: int, body: bytes) -> OpenheapError:
    """The exception for an error answer of the API."""
    try:
        data = json.loads(body.decode("utf-8"))
        message = str(data["error"])
        exit_code = int(data.get("exit_code") or 1)
        kind = str(data.get("kind") or "")
        details = data.get("details") if isinstance(data.get("details"), dict) else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body.decode("utf-8", "replace").strip().splitlines()
        message = "the coordinator answered HTTP %d%s" % (status, ": " + text[0][:200] if text else "")
        exit_code, kind, details = 8, "", {}
    if status == 401:
        message = ("the coordinator refused this home's API token (did the token file change since it started?); "
                   "restart it with 'openheap down' then 'openheap up'")
        exit_code = 8
    if exit_code == 6:
        exc = CoapError(details.get("code"), details.get("diagnostic"), message=message)
    elif exit_code == 7:
        exc = NodeUnreachable(details.get("node"), message=message)
    else:
        cls = _BY_EXIT.get(exit_code, OpenheapError)
        exc = cls(message)
        if cls is OpenheapError and exit_code != 1:
            exc.exit_code = exit_code
    exc.http_status = status
    exc.kind = kind
    exc.details = details
    return exc


class CoordinatorClient:
    """Talk to the coordinator of ``home`` (see the module docstring)."""

    def __init__(self, home=None, timeout: float = DEFAULT_TIMEOUT):
        self.paths = paths(home)
        self.home = self.paths.home
        self.timeout = timeout
        self._info: dict | None = None
        self._token: str | None = None

    @property
    def info(self) -> dict:
        """``api.json`` of the running coordinator; CoordinatorNotRunning if none."""
        if self._info is None:
            info = read_api_info(self.home)
            if info is None:
                raise CoordinatorNotRunning()
            self._info = info
        return self._info

    @property
    def token(self) -> str:
        if self._token is None:
            try:
                self._token = self.paths.token.read_text().strip()
            except FileNotFoundError:
                raise CoordinatorNotRunning() from None
            except OSError as e:
                raise ConfigError("cannot read the API token %s: %s" % (self.paths.token, e.strerror or e)) from None
        return self._token

    def url(self, path: str, query: dict | None = None) -> str:
        url = "http://127.0.0.1:%d%s" % (self.info["api_port"], path)
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def open(self, method: str, path: str, *, query: dict | None = None,
             body: bytes | Iterable[bytes] | None = None, headers: dict | None = None,
             timeout: float | None = ...) -> http.client.HTTPResponse:
        """Send a request; return the open response (2xx only) to read or stream.

        ``body`` may be bytes, a binary file or an iterable of bytes (sent
        chunked unless a Content-Length header is given). ``timeout`` None
        waits forever (for long uploads); default: the client's timeout.
        """
        hdrs = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url(path, query), data=body, headers=hdrs, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        t = self.timeout if timeout is ... else timeout
        try:
            return opener.open(req, timeout=t) if t is not None else opener.open(req)
        except urllib.error.HTTPError as e:
            try:
                payload = e.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            raise remote_error(e.code, payload) from None
        except urllib.error.URLError as e:
            raise self._connection_error(e.reason) from None
        except (ConnectionError, http.client.HTTPException, socket.timeout) as e:
            raise self._connection_error(e) from None

    def _connection_error(self, reason) -> OpenheapError:
        if isinstance(reason, ConnectionRefusedError):
            return CoordinatorNotRunning()
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return CoordinatorError("the coordinator did not answer within %g s; see %s" % (self.timeout, self.paths.log))
        return CoordinatorError("the coordinator's API failed (%s); see %s" % (reason, self.paths.log))

    def request(self, method: str, path: str, *, query: dict | None = None, json_body=None,
                timeout: float | None = ...):
        """Send a request (with an optional JSON body); return the decoded JSON answer."""
        body = None
        headers = {}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        with self.open(method, path, query=query, body=body, headers=headers, timeout=timeout) as rsp:
            try:
                data = rsp.read()
            except (OSError, http.client.HTTPException) as e:
                raise self._connection_error(e) from None
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise CoordinatorError("the coordinator answered %s %s with something that is not JSON" % (method, path)) from None

    # -- endpoints

    def status(self) -> dict:
        """``GET /v1/status``."""
        return self.request("GET", "/v1/status")

    def nodes(self, state: str | None = None) -> list[dict]:
        """``GET /v1/nodes``."""
        return self.request("GET", "/v1/nodes", query={"state": state})

    def remove_node(self, name: str) -> dict:
        """``DELETE /v1/nodes/<name>``."""
        return self.request("DELETE", "/v1/nodes/" + urllib.parse.quote(name, safe=""))

    # -- files (served once the coordinator has a FileService)

    def put(self, body: bytes | Iterable[bytes], *, name: str | None = None, size: int | None = None,
            k: int | None = None, n: int | None = None, happy: int | None = None, random_key: bool = False,
            timeout: float | None = None) -> dict:
        """``POST /v1/files``: upload (bytes, a binary file or an iterable of
        chunks, streamed); returns the service's answer (``{"cap": ...}``)."""
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        query = {"name": name, "k": k, "n": n, "happy": happy, "random_key": 1 if random_key else None}
        with self.open("POST", "/v1/files", query=query, body=body, headers=headers, timeout=timeout) as rsp:
            return json.loads(rsp.read().decode("utf-8"))

    def get(self, cap: str, timeout: float | None = None) -> http.client.HTTPResponse:
        """``GET /v1/files/<cap>``: the open response; ``Content-Length`` is
        the file size; read it in chunks and compare the count at the end."""
        return self.open("GET", "/v1/files/" + urllib.parse.quote(cap.strip(), safe=":"), timeout=timeout,
                         headers={"Accept": "application/octet-stream, application/json"})

    def last_read(self, cap: str) -> dict:
        """``GET /v1/files/<cap>/last-read``: what the latest read of the file
        found (``served``, ``corrupt``, ``failed``; ``at`` None when none yet)."""
        return self.request("GET", "/v1/files/" + urllib.parse.quote(cap.strip(), safe=":") + "/last-read")

    def files(self) -> list[dict]:
        """``GET /v1/files``: the catalog."""
        return self.request("GET", "/v1/files")

    def delete(self, cap: str) -> dict:
        """``DELETE /v1/files/<cap>``."""
        return self.request("DELETE", "/v1/files/" + urllib.parse.quote(cap.strip(), safe=":"))

    def delete_name(self, name: str) -> dict:
        """``DELETE /v1/files?name=<name>``: remove a catalog entry (and its
        file's shares unless another entry names the same file)."""
        return self.request("DELETE", "/v1/files", query={"name": name})

    def describe(self, cap: str) -> dict:
        """``GET /v1/caps/<cap>``: what a capability points to, and the shares found now."""
        return self.request("GET", "/v1/caps/" + urllib.parse.quote(cap.strip(), safe=":"))

    def add(self, cap: str, name: str | None = None) -> dict:
        """``POST /v1/catalog``: put a capability into the catalog."""
        return self.request("POST", "/v1/catalog", json_body={"cap": cap.strip(), "name": name})

    def upkeep(self) -> dict:
        """``GET /v1/upkeep``: lease renewal and repair scheduler figures."""
        return self.request("GET", "/v1/upkeep")

    def check(self, caps: list[str] | None = None, *, verify: bool = False, repair: bool = False,
              timeout: float | None = None) -> dict:
        """``POST /v1/check`` for ``caps``, or the whole catalog when None."""
        body = {"all": True} if caps is None else {"caps": list(caps)}
        body.update(verify=verify, repair=repair)
        return self.request("POST", "/v1/check", json_body=body, timeout=timeout)
