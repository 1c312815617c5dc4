"""Create, start, list, stop and remove virtual boards.

Each board lives in ``<home>/sim/<name>/``:

``config.json``  the node's configuration (keys in docs/ARCHITECTURE.md)
``fs.img``       its littlefs2 flash image (kept across restarts)
``launch.json``  the exact command and environment the supervisor runs
``state.json``   pids and state, written atomically by the supervisor
``board.log``    the board's output and the supervisor's notes

A board keeps its name, UDP port and image for its whole life, so after
``down`` and ``up`` it comes back at the same address with the same files.

Python API::

    fleet = Fleet(home)
    boards = fleet.up(3)          # -> [BoardInfo, ...], all running
    fleet.ls(); fleet.kill("node02"); fleet.down(); fleet.remove("node01")
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import boards as boards_mod
from ..errors import ConfigError, SimError, UsageError
from ..proc import pid_alive
from . import resolve_home
from .image import MIN_FS_SIZE, create_image
from .supervisor import LAUNCH_FILE, LOG_FILE, read_state, write_state
from .vboard import build_romfs

__all__ = ["Fleet", "BoardInfo", "micropython_binary", "UP_TIMEOUT", "DOWN_TIMEOUT"]

UP_TIMEOUT = 20.0
DOWN_TIMEOUT = 10.0
HOST = "127.0.0.1"
STATUS_PERIOD = 5  # seconds between Observe notifications of /i
DEDUP = 16  # entries in the node's CON de-duplication cache
LOG_ROTATE = 1 << 20  # board.log is moved to board.log.1 past this size at start
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_AUTO_NAME_RE = re.compile(r"node(\d+)")


@dataclass
class BoardInfo:
    """What ``sim ls`` shows about one virtual board."""

    name: str
    host: str
    port: int
    board: str  # board definition name
    pid: int | None  # the MicroPython process, None when down
    state: str  # starting, running, stopped, crashed
    image: str  # path of fs.img
    restarts: int  # watchdog restarts since the last `up`
    supervisor_pid: int | None
    reason: str | None = None  # why it is down, if it is
    log: str = ""  # path of board.log

    @property
    def address(self) -> str:
        """``host:port``."""
        return "%s:%d" % (self.host, self.port)

    @property
    def uri(self) -> str:
        """Base CoAP URI of the node, e.g. ``coap://127.0.0.1:40123``."""
        return "coap://%s" % self.address

    def to_json(self) -> dict:
        """A JSON-ready dict (what ``sim ls --json`` prints)."""
        return asdict(self)


def micropython_binary() -> str:
    """Path of the MicroPython unix port: next to this Python, else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("micropython")
    if found:
        return found
    raise SimError("the MicroPython unix port ('micropython') is not installed; run tools/setup.sh")


def sim_heap(bdef) -> int:
    """The MicroPython heap (bytes) a virtual board of definition ``bdef`` gets.

    The ``virtual`` board (chip ``unix``) gets exactly its budget: 64 KiB.
    A simulated 32-bit board (ESP32, ESP8266, RP2040) gets twice its budget:
    the unix port is 64-bit, and every object header, pointer and table slot
    takes twice the bytes it does on the chip, so the same firmware needs
    about twice the heap there (measured: resident firmware 26 KB at start on
    x64, where .mpy code of 20 KB sits in ROMFS).
    """
    return bdef.heap_budget if bdef.chip == "unix" else 2 * bdef.heap_budget


# -- process helpers


def _alive(pid, *markers: str) -> bool:
    """True if ``pid`` is one of ours, runs, and its command line has every marker."""
    return pid_alive(pid, *markers, foreign=False)


def _signal(pid, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def board_host(number: int) -> str:
    """The loopback address of virtual board number ``number`` (1-based).

    Every board gets an address of its own (127.0.1.1, 127.0.1.2, ...), as
    boards on a LAN do: a grid of boards that all share 127.0.0.1 confuses
    clients that attribute ICMP errors by host (aiocoap fails every request
    to a host when one port of it is unreachable).
    """
    n = number - 1
    return "127.0.%d.%d" % (1 + n // 254, 1 + n % 254)


def _free_udp_port(host: str, used: set) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if (host, port) not in used:
            return port
    raise SimError("could not find a free UDP port on %s" % host)


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _last_words(log: Path) -> str:
    """The last line the board itself wrote to its log (for error messages)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        line = line.strip()
        if line and not line.startswith("[supervisor"):
            return line[:200]
    return ""


class Fleet:
    """The virtual boards of one openheap home."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = resolve_home(home)
        self.root = self.home / "sim"
        self._lock_depth = 0
        self._lock_file = None

    # -- bookkeeping

    @contextmanager
    def _locked(self):
        """Serialise changes to the fleet between processes (re-entrant)."""
        if self._lock_depth == 0:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                self._lock_file = open(self.root / ".lock", "w")
            except OSError as e:
                raise SimError("cannot use the openheap home %s: %s" % (self.home, e.strerror or e)) from None
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                self._lock_file.close()
                self._lock_file = None

    def board_dir(self, name: str) -> Path:
        """The folder of board ``name`` (which may not exist)."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise UsageError("%r is not a valid board name (letters, digits, '_', '.', '-')" % (name,))
        return self.root / name

    def names(self) -> list[str]:
        """Names of the existing boards, in natural order (node2 before node10)."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if (p / "config.json").is_file() and _NAME_RE.fullmatch(p.name)]
        return sorted(found, key=_natural)

    def _existing_dir(self, name: str) -> Path:
        path = self.board_dir(name)
        if not (path / "config.json").is_file():
            known = ", ".join(self.names()) or "none"
            raise SimError("there is no virtual board named '%s' in %s (boards: %s)" % (name, self.root, known))
        return path

    def _config(self, path: Path) -> dict:
        cfg_path = path / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
            if not isinstance(cfg, dict):
                raise ValueError("not a JSON object")
            cfg["port"] = int(cfg["port"])
            cfg["host"] = str(cfg["host"])
            cfg["board"] = str(cfg["board"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                "board config %s is broken (%s); fix it or remove the board with 'openheap sim rm %s'"
                % (cfg_path, e, path.name)
            ) from None
        return cfg

    def _processes(self, path: Path, st: dict) -> tuple[int | None, int | None]:
        """(supervisor pid, board pid) of a board, each None unless alive and ours."""
        sup = st.get("supervisor_pid")
        sup = sup if _alive(sup, "openheap.sim.supervisor", str(path)) else None
        pid = st.get("pid")
        pid = pid if _alive(pid, str(path / "config.json")) else None
        return sup, pid

    def _info(self, name: str) -> BoardInfo:
        path = self.root / name
        cfg = self._config(path)
        st = read_state(path)
        sup, pid = self._processes(path, st)
        state = st.get("state") or "stopped"
        reason = st.get("reason")
        if state in ("starting", "running"):
            if self._launching(st):
                pass  # `up` is spawning its supervisor right now
            elif pid is None and sup is None:
                state, reason = "crashed", "its supervisor died"
            elif pid is None:
                state = "starting"  # the supervisor is restarting it or noting its exit
        return BoardInfo(
            name=name,
            host=cfg["host"],
            port=cfg["port"],
            board=cfg["board"],
            pid=pid,
            state=state,
            image=str(cfg.get("image") or path / "fs.img"),
            restarts=int(st.get("restarts") or 0),
            supervisor_pid=sup,
            reason=reason if state in ("stopped", "crashed") else None,
            log=str(path / LOG_FILE),
        )

    @staticmethod
    def _launching(st: dict) -> bool:
        """True while ``up`` has spawned a supervisor that has not written its state yet."""
        return (
            st.get("state") == "starting"
            and st.get("supervisor_pid") is None
            and time.time() - float(st.get("since") or 0) < UP_TIMEOUT
        )

    def info(self, name: str) -> BoardInfo:
        """Return the BoardInfo of one board; SimError if there is no such board."""
        self._existing_dir(name)
        return self._info(name)

    def ls(self) -> list[BoardInfo]:
        """Every board of this home, running or not."""
        return [self._info(n) for n in self.names()]

    # -- up

    def up(self, n: int, board: str = "virtual", fs_size: int | None = None, timeout: float = UP_TIMEOUT,
           extra_config: dict | None = None) -> list[BoardInfo]:
        """Make the first ``n`` boards run, creating missing ones; return them.

        New boards are of board definition ``board`` with a filesystem of
        ``fs_size`` bytes (default: the board's ``fs_size``); existing boards
        keep theirs. Builds the firmware bundle first, then waits up to
        ``timeout`` seconds for every board to serve. Raises SimError naming
        the board and its log if one does not come up.

        ``extra_config`` keys (e.g. ``coordinator``) are merged into the
        config of each of the n boards before it starts; a running board whose
        config changes is restarted.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError("the number of boards must be at least 1, not %r" % (n,))
        bdef = boards_mod.get_board(board)
        if fs_size is not None:
            if isinstance(fs_size, bool) or not isinstance(fs_size, int) or fs_size < MIN_FS_SIZE:
                raise UsageError("the filesystem size must be at least %d bytes, not %r" % (MIN_FS_SIZE, fs_size))
            if fs_size % bdef.fs_block_size:
                raise UsageError(
                    "the filesystem size must be a multiple of the block size %d, not %d" % (bdef.fs_block_size, fs_size)
                )
        from ..firmware import build_bundle

        binary = micropython_binary()
        with self._locked():
            bundle = build_bundle(self._sim_arch())
            names = self.names()[:n]
            used = {(c.get("host", HOST), c["port"]) for c in (self._config(self.root / x) for x in self.names())}
            taken = set(self.names())
            number = 0
            while len(names) < n:
                number += 1
                name = "node%02d" % number
                if name in taken:
                    continue
                host = board_host(number)
                port = _free_udp_port(host, used)
                used.add((host, port))
                self._create(name, bdef, fs_size or bdef.fs_size, host, port, extra_config)
                names.append(name)
            names.sort(key=_natural)  # a gap (node02 removed) is filled in place
            if extra_config:
                self._reconfigure(names, extra_config)
            started = {}
            for name in names:
                info = self._info(name)
                if info.supervisor_pid is not None:
                    continue  # already running (or restarting) under its supervisor
                started[name] = self._start(name, binary, bundle)
            self._wait_up(names, started, timeout)
            return [self._info(x) for x in names]

    @staticmethod
    def _sim_arch() -> str:
        """mpy arch of bundles for virtual boards (any simulated board type)."""
        return boards_mod.get_board("virtual").mpy_arch

    def _reconfigure(self, names: list[str], extra: dict) -> None:
        """Merge ``extra`` into each board's config; restart running boards it changes."""
        changed = []
        for name in names:
            path = self.root / name
            cfg = self._config(path)
            if any(cfg.get(k) != v for k, v in extra.items()):
                cfg.update(extra)
                _write_json(path / "config.json", cfg)
                changed.append(name)
        running = [x for x in changed if self._info(x).supervisor_pid is not None]
        if running:
            self._stop(running, DOWN_TIMEOUT)

    def _create(self, name: str, bdef, fs_size: int, host: str, port: int, extra: dict | None = None) -> None:
        path = self.board_dir(name)
        try:
            path.mkdir(parents=True)
            cfg = {
                "name": name,
                "board": bdef.name,
                "host": host,
                "port": port,
                "image": str(path / "fs.img"),
                "block_size": bdef.fs_block_size,
                "fs_size": fs_size,
                "szx": bdef.block_szx,
                "max_share": bdef.max_share,
                "max_shares": bdef.max_shares,
                "tasks": bdef.tasks,
                "code_cache": bdef.code_cache,
                "status_period": STATUS_PERIOD,
                "dedup": DEDUP,
            }
            cfg.update(extra or {})
            create_image(path / "fs.img", fs_size, bdef.fs_block_size)
            _write_json(path / "config.json", cfg)  # last: a board exists once it has a config
        except BaseException as e:
            shutil.rmtree(path, ignore_errors=True)
            if isinstance(e, OSError):
                raise SimError("cannot create board %s in %s: %s" % (name, path, e.strerror or e)) from None
            raise

    def _start(self, name: str, binary: str, bundle: Path) -> str:
        """Spawn the supervisor of one board; return the launch id to wait for."""
        path = self.root / name
        cfg = self._config(path)
        bdef = boards_mod.get_board(cfg["board"])
        image = path / "fs.img"
        if str(image) != cfg.get("image"):  # the home was moved: follow it
            cfg["image"] = str(image)
            _write_json(path / "config.json", cfg)
        if not image.is_file():
            create_image(image, int(cfg.get("fs_size") or bdef.fs_size), int(cfg.get("block_size") or 4096))
        # The firmware goes into the board's ROMFS "flash", executed in place
        # by the MicroPython unix port (see openheap.sim.vboard).
        romfs = build_romfs(bundle, bundle.parent / (bundle.name + ".romfs"))
        if cfg.get("romfs") != str(romfs) or cfg.get("heap") != sim_heap(bdef):
            cfg["romfs"] = str(romfs)
            cfg["heap"] = sim_heap(bdef)
            _write_json(path / "config.json", cfg)
        launch_id = uuid.uuid4().hex
        launch = {
            "argv": [sys.executable, "-m", "openheap.sim.vboard", "-X", "heapsize=%d" % sim_heap(bdef),
                     str(path / "config.json")],
            "env": {},
            "launch_id": launch_id,
            "micropython": binary,
        }
        _write_json(path / LAUNCH_FILE, launch)
        # Placeholder until the supervisor writes its own state (with launch_id).
        write_state(path, {"state": "starting", "pid": None, "supervisor_pid": None, "restarts": 0, "since": time.time()})
        log_path = path / LOG_FILE
        try:
            if log_path.is_file() and log_path.stat().st_size > LOG_ROTATE:
                os.replace(log_path, path / (LOG_FILE + ".1"))
            log = open(log_path, "ab")
        except OSError as e:
            raise SimError("cannot open %s: %s" % (log_path, e.strerror or e)) from None
        env = dict(os.environ)
        host_dir = str(Path(__file__).resolve().parents[2])  # so the supervisor imports this openheap
        env["PYTHONPATH"] = os.pathsep.join(p for p in (host_dir, env.get("PYTHONPATH")) if p)
        with log:
            status = subprocess.Popen(
                [sys.executable, "-m", "openheap.sim.supervisor", "--detach", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(path),
                env=env,
                start_new_session=True,
            ).wait()
        if status != 0:
            raise SimError("the supervisor of board %s failed to start; see %s" % (name, log_path))
        return launch_id

    def _wait_up(self, names: list[str], started: dict[str, str], timeout: float) -> None:
        """Wait until every board in ``names`` serves.

        If one fails or the time runs out, the boards this call started are
        stopped again (all or nothing) and SimError names the first failure.
        """
        deadline = time.monotonic() + timeout
        pending = list(names)
        failure = None
        while pending and failure is None:
            for name in list(pending):
                st = read_state(self.root / name)
                if name in started and st.get("launch_id") != started[name]:
                    continue  # the supervisor has not written its first state yet
                info = self._info(name)
                if info.state == "running" and info.pid is not None:
                    pending.remove(name)
                elif info.state in ("stopped", "crashed"):
                    failure = (name, "failed to start (%s)" % (info.reason or info.state))
                    break
            else:
                if pending and time.monotonic() > deadline:
                    failure = (pending[0], "did not come up within %g s" % timeout)
                elif pending:
                    time.sleep(0.05)
        if failure is not None:
            self._stop(list(started), DOWN_TIMEOUT)
            self._fail(*failure)

    def _fail(self, name: str, what: str):
        log = self.root / name / LOG_FILE
        last = _last_words(log)
        raise SimError("board %s %s%s; see %s" % (name, what, ": %s" % last if last else "", log))

    # -- down, kill, remove

    def down(self, names: list[str] | None = None, timeout: float = DOWN_TIMEOUT) -> list[str]:
        """Stop the given boards (default: all) and keep their images.

        SIGTERM to each supervisor, which stops its board; after ``timeout``
        seconds whatever still runs gets SIGKILL. Returns the names of the
        boards that were running.
        """
        if names is None and not self.root.is_dir():
            return []  # nothing was ever created here
        with self._locked():
            if names is None:
                names = self.names()
            else:
                for name in names:
                    self._existing_dir(name)
            return self._stop(names, timeout)

    def _stop(self, names: list[str], timeout: float) -> list[str]:
        running = {}
        for name in names:
            path = self.root / name
            st = read_state(path)
            launching = time.monotonic() + 5.0
            while self._launching(st) and time.monotonic() < launching:
                time.sleep(0.02)  # a supervisor being spawned: wait until it says who it is
                st = read_state(path)
            sup, pid = self._processes(path, st)
            if sup is None and pid is None:
                continue
            running[name] = (sup, pid)
            _signal(sup or pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running and time.monotonic() < deadline:
            if all(self._processes(self.root / n, read_state(self.root / n)) == (None, None) for n in running):
                break
            time.sleep(0.05)
        for name, (sup, pid) in running.items():
            path = self.root / name
            left = self._processes(path, read_state(path))
            for p in (left[0], left[1]):
                if p is not None:
                    _signal(p, signal.SIGKILL)
            st = read_state(path)
            if left != (None, None) or st.get("state") in ("starting", "running"):
                st.update(state="stopped", pid=None, supervisor_pid=None, reason="stopped")
                write_state(path, st)
        return list(running)

    def kill(self, name: str, timeout: float = 5.0) -> None:
        """SIGKILL the board's MicroPython process only (a crash, for tests).

        The supervisor sees the signal and leaves the board down; returns once
        that is recorded.
        """
        path = self._existing_dir(name)
        sup, pid = self._processes(path, read_state(path))
        if pid is None:
            raise SimError("board %s is not running; start it with 'openheap sim up'" % name)
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = read_state(path)
            if st.get("state") in ("stopped", "crashed") or not _alive(sup, "openheap.sim.supervisor"):
                return
            time.sleep(0.02)

    def remove(self, name: str) -> None:
        """Stop board ``name`` if it runs and delete it with its image."""
        with self._locked():
            path = self._existing_dir(name)
            self._stop([name], DOWN_TIMEOUT)
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                raise SimError("could not delete %s completely; remove it by hand" % path)

    def remove_all(self) -> list[str]:
        """Remove every board; return their names."""
        with self._locked():
            names = self.names()
            for name in names:
                self.remove(name)
            return names


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp%d" % os.getpid())
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
