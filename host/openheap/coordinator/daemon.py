"""Running the coordinator in the foreground or in the background.

Foreground (``openheap serve``): :func:`run_foreground` logs to stderr and
serves until SIGTERM or Ctrl-C.

Background (``openheap up``): :func:`start_background` runs
``python -m openheap.coordinator --home HOME --detach ...`` with its stderr
appended to ``<home>/coordinator/coordinator.log``. That process forks; the
child becomes the coordinator (not a child of the caller, so no zombie in a
long-lived caller) and reports through a pipe once it serves, or why it
could not start; the parent prints that one line and exits, so the caller
learns the outcome without polling::

    {"pid": ..., "api_port": ..., "coap_port": ...}    ready (api.json's content)
    error <exit status> <one sentence>                 failed

:func:`stop` ends the coordinator of a home: SIGTERM, then SIGKILL after a
timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import OpenheapError
from .client import pid_alive, read_api_info
from .errors import CoordinatorError
from .paths import paths

__all__ = ["run_foreground", "start_background", "stop", "running_pid", "setup_logging", "main", "START_TIMEOUT"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_ROTATE = 1 << 20

log = logging.getLogger("openheap.coordinator")


def setup_logging(verbose: bool = False, stream=None) -> None:
    """Coordinator logs as ``time level name: message`` lines on ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("openheap")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    coap = logging.getLogger("openheap.coordinator.coap")  # aiocoap's own messages
    coap.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _coordinator(args):
    from .registry import DEFAULT_GRACE
    from .service import Coordinator, default_file_service

    grace = DEFAULT_GRACE if getattr(args, "grace", None) is None else args.grace
    return Coordinator(args.home, coap_host=args.coap_host, coap_port=args.coap_port, api_port=args.api_port,
                       grace=grace, files=default_file_service, upkeep=upkeep_config(args))


def upkeep_config(args):
    """The :class:`UpkeepConfig` of parsed ``--lease``/``--renew-every``/``--repair-*`` options."""
    from .upkeep_loop import UpkeepConfig

    cfg = UpkeepConfig()
    for key in UPKEEP_OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            setattr(cfg, key, value)
    return cfg.validate()


def run_foreground(args) -> int:
    """``openheap serve``: serve until SIGTERM/SIGINT; return the exit status."""
    setup_logging(getattr(args, "verbose", False))
    coordinator = _coordinator(args)

    def ready(c):
        print("openheap coordinator: CoAP on %s, API on http://127.0.0.1:%d (home %s)"
              % (c.describe()["coap"], c.api_port, c.home), file=sys.stderr, flush=True)

    coordinator.run(ready)
    return 0


def _detached(args) -> int:
    """Fork; the child serves, the parent relays its readiness line and exits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:  # the parent: wait for the child's word
        os.close(w)
        chunks = []
        while True:
            data = os.read(r, 4096)
            if not data:
                break
            chunks.append(data)
        os.close(r)
        line = b"".join(chunks).decode("utf-8", "replace").strip()
        if not line:
            line = "error 8 the coordinator exited while starting; see %s" % paths(args.home).log
        print(line, flush=True)
        if line.startswith("{"):
            return 0
        try:
            return int(line.split()[1])
        except (IndexError, ValueError):
            return 8
    # the child: the coordinator
    os.close(r)
    os.setsid()
    setup_logging(getattr(args, "verbose", False))
    wfile = os.fdopen(w, "w")

    def ready(c):
        wfile.write(json.dumps(c.describe()) + "\n")
        wfile.close()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)  # let the caller's pipe close
        os.close(devnull)

    try:
        _coordinator(args).run(ready)
    except OpenheapError as e:
        log.error("%s", e)
        if not wfile.closed:
            wfile.write("error %d %s\n" % (e.exit_code, e))
        return e.exit_code
    except BaseException as e:
        log.exception("the coordinator failed")
        if not wfile.closed:
            wfile.write("error 8 the coordinator failed: %s: %s\n" % (type(e).__name__, e))
        return 8
    finally:
        if not wfile.closed:
            wfile.close()
    return 0


def start_background(home, *, coap_host: str = "127.0.0.1", coap_port: int | None = None, api_port: int = 0,
                     grace: float | None = None, timeout: float = START_TIMEOUT, upkeep: dict | None = None) -> dict:
    """Start a detached coordinator for ``home``; return its api.json once it serves.

    ``upkeep`` maps :data:`UPKEEP_OPTIONS` names (``lease``, ``repair_grace``,
    ...) to values, passed on as the matching options (None: left out).

    Raises the coordinator's own error (e.g. AlreadyRunning, a taken port) as
    a CoordinatorError/OpenheapError with its sentence.
    """
    p = paths(home)
    p.dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "openheap.coordinator", "--home", str(p.home), "--detach",
            "--coap-host", coap_host, "--api-port", str(api_port)]
    if coap_port is not None:
        argv += ["--coap-port", str(coap_port)]
    if grace is not None:
        argv += ["--grace", str(grace)]
    for key, value in (upkeep or {}).items():
        if key not in UPKEEP_OPTIONS:
            raise ValueError("unknown upkeep option %r" % key)
        if value is not None:
            argv += ["--" + key.replace("_", "-"), str(value)]
    try:
        if p.log.is_file() and p.log.stat().st_size > LOG_ROTATE:
            os.replace(p.log, p.log.with_name(p.log.name + ".1"))
        logf = open(p.log, "ab")
    except OSError as e:
        raise CoordinatorError("cannot open %s: %s" % (p.log, e.strerror or e)) from None
    env = dict(os.environ)
    host_dir = str(Path(__file__).resolve().parents[2])  # so the child imports this openheap
    env["PYTHONPATH"] = os.pathsep.join(x for x in (host_dir, env.get("PYTHONPATH")) if x)
    with logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                                cwd=str(p.dir), env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise CoordinatorError("the coordinator did not start within %g s; see %s" % (timeout, p.log)) from None
    line = out.decode("utf-8", "replace").strip().splitlines()
    line = line[-1] if line else ""
    if proc.returncode == 0 and line.startswith("{"):
        return json.loads(line)
    if line.startswith("error "):
        parts = line.split(" ", 2)
        exc = CoordinatorError(parts[2] if len(parts) > 2 else "the coordinator failed to start; see %s" % p.log)
        try:
            exc.exit_code = int(parts[1])
        except (IndexError, ValueError):
            pass
        raise exc
    raise CoordinatorError("the coordinator failed to start (exit status %s); see %s" % (proc.returncode, p.log))


def running_pid(home) -> int | None:
    """Pid of the coordinator serving ``home``, or None."""
    info = read_api_info(home)
    if info is not None:
        return info["pid"]
    p = paths(home)
    try:
        pid = int(p.pid.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and _is_coordinator(pid):
        return pid
    return None


def _is_coordinator(pid: int) -> bool:
    try:
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return not os.path.isdir("/proc/self")
    return b"openheap" in cmdline


def stop(home, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the coordinator of ``home``; return its pid, or None if none ran."""
    pid = running_pid(home)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        log.warning("coordinator pid %d ignored SIGTERM; killing it", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        p = paths(home)
        try:
            if json.loads(p.api.read_text()).get("pid") == pid:
                p.api.unlink()
        except (OSError, ValueError, AttributeError):
            pass
    return pid


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a port number, not %r" % text) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535, not %d" % value)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds, not %r" % text) from None
    if not 0 <= value <= 86400 * 365:
        raise argparse.ArgumentTypeError("must be from 0 to 31536000 seconds, not %r" % text)
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 1000000:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 1000000, not %r" % text)
    return int(text)


def _lease(text: str) -> int:
    from ohproto import const as P

    if not text.strip().isdigit() or not 1 <= int(text) <= P.LEASE_MAX:
        raise argparse.ArgumentTypeError("must be a whole number of seconds from 1 to %d, not %r"
                                         % (P.LEASE_MAX, text))
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of bytes per second, not %r" % text) from None
    if not 0 <= value < 1e12:
        raise argparse.ArgumentTypeError("must be a number of bytes per second of at least 0, not %r" % text)
    return value


# argparse dest -> UpkeepConfig field (the same names)
UPKEEP_OPTIONS = ("lease", "renew_every", "repair_grace", "repair_every", "repair_files", "repair_rate")


def add_upkeep_options(p: argparse.ArgumentParser) -> None:
    """``--lease``, ``--renew-every`` and the ``--repair-*`` options (keeping files alive)."""
    g = p.add_argument_group("keeping files alive")
    g.add_argument("--lease", type=_lease, metavar="S",
                   help="seconds a share lease lasts; boards delete shares whose lease ran out (default 2678400, "
                   "31 days)")
    g.add_argument("--renew-every", type=_seconds, metavar="S",
                   help="seconds between lease renewal passes, which renew leases with less than half left "
                   "(default: a quarter of the lease, at most 3600; 0: never)")
    g.add_argument("--repair-grace", type=_seconds, metavar="S",
                   help="seconds a node may be unreachable before its shares count as lost and are repaired "
                   "(default 3600)")
    g.add_argument("--repair-every", type=_seconds, metavar="S",
                   help="seconds between runs of the repair scheduler (default 300; 0: never)")
    g.add_argument("--repair-files", type=_count, metavar="M",
                   help="files repaired at most per run of the repair scheduler (default 4)")
    g.add_argument("--repair-rate", type=_rate, metavar="B",
                   help="bytes per second scheduled repairs may send on average (default 0: no limit)")


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """The options ``openheap serve`` and ``python -m openheap.coordinator`` share."""
    p.add_argument("--coap-host", default="127.0.0.1", metavar="ADDR",
                   help="address to receive board registrations on (default 127.0.0.1; 0.0.0.0 for real boards)")
    p.add_argument("--coap-port", type=_port, metavar="PORT",
                   help="UDP port for CoAP (default: the last one used, else 5683 when free, else any free port; "
                   "0: any free port)")
    p.add_argument("--api-port", type=_port, default=0, metavar="PORT",
                   help="TCP port of the HTTP API on 127.0.0.1 (default: any free port, written to api.json)")
    p.add_argument("--grace", type=_seconds, default=None, metavar="S",
                   help="seconds past a node's registration lifetime before it counts as unreachable (default 10)")
    p.add_argument("--verbose", "-v", action="store_true", help="log every registration refresh")
    add_upkeep_options(p)


def main(argv=None) -> int:
    """``python -m openheap.coordinator --home HOME [--detach] [serve options]``."""
    parser = argparse.ArgumentParser(prog="python -m openheap.coordinator")
    parser.add_argument("--home", required=True)
    parser.add_argument("--detach", action="store_true")
    add_serve_options(parser)
    args = parser.parse_args(argv)
    if args.detach:
        return _detached(args)
    try:
        return run_foreground(args)
    except OpenheapError as e:
        print("openheap: error: %s" % e, file=sys.stderr)
        return e.exit_code
