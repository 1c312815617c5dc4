"""The supervisor of one virtual board: ``python -m openheap.sim.supervisor DIR``.

One small supervisor process runs per virtual board. It reads the board's
``launch.json`` (the command and environment :mod:`openheap.sim.fleet`
wrote), starts the MicroPython process, copies its standard output to
``board.log`` while watching for the readiness line::

    openheap node <name> listening on <host>:<port>

and records the board's state atomically in ``state.json``:

``starting``  the board process runs but has not printed the line yet
``running``   the board serves
``stopped``   the board was stopped on purpose (SIGTERM to the supervisor)
              or exited with status 0
``crashed``   the board exited with another status, was killed by a signal,
              or kept resetting; ``reason`` says which

Exit status 3 of the board means watchdog / ``machine.reset()``: the
supervisor starts it again (``restarts`` counts this). Any other exit or a
signal leaves the board down, and the supervisor exits. SIGTERM (or SIGINT)
to the supervisor stops the board: SIGTERM first, SIGKILL after
``STOP_TIMEOUT`` seconds.

A board that resets before it ever prints the readiness line
``MAX_BOOT_FAILURES`` times in a row, or more than ``MAX_RESTARTS`` times in
``RESTART_WINDOW`` seconds, is given up as ``crashed`` so a broken firmware
does not spin forever.

``--detach`` forks once more so the supervisor is not a child of the process
that started it (no zombies in a long-lived caller such as a test run).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["READY_RE", "STATE_FILE", "LAUNCH_FILE", "LOG_FILE", "read_state", "write_state", "main"]

READY_RE = re.compile(rb"openheap node (\S+) listening on (\S+):(\d+)")
RESET_STATUS = 3
STATE_FILE = "state.json"
LAUNCH_FILE = "launch.json"
LOG_FILE = "board.log"
STOP_TIMEOUT = 5.0
MAX_BOOT_FAILURES = 3
MAX_RESTARTS = 10
RESTART_WINDOW = 60.0


def read_state(board_dir: Path) -> dict:
    """Return the board's recorded state (``{}`` if there is none or it is unreadable)."""
    try:
        data = json.loads((Path(board_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(board_dir: Path, state: dict) -> None:
    """Replace the state file atomically (write a temporary file, rename)."""
    path = Path(board_dir) / STATE_FILE
    tmp = path.with_name("%s.tmp%d.%d" % (STATE_FILE, os.getpid(), threading.get_ident()))
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _write(data: bytes) -> None:
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError:
        pass  # the log is gone (disk full, deleted folder): keep supervising


def _set_pdeathsig():  # runs in the board's child process before exec
    """Ask Linux to SIGTERM the board if the supervisor dies (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Supervisor:
    """Runs one board process and keeps ``state.json`` up to date."""

    def __init__(self, board_dir: Path):
        self.dir = Path(board_dir).resolve()
        launch = json.loads((self.dir / LAUNCH_FILE).read_text())
        self.argv = launch["argv"]
        self.env = dict(os.environ, **launch.get("env", {}))
        self.launch_id = launch.get("launch_id")
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.ready = False
        self.lock = threading.Lock()
        self.state = {
            "state": "starting",
            "pid": None,
            "supervisor_pid": os.getpid(),
            "restarts": 0,
            "launch_id": self.launch_id,
            "reason": None,
            "since": time.time(),
        }

    def log(self, msg: str) -> None:
        """Write a supervisor line to board.log (our stdout).

        Unbuffered ``os.write`` so that a signal handler may log safely.
        """
        line = "[supervisor %s] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), msg)
        _write(line.encode("utf-8", "replace"))

    def record(self, **changes) -> None:
        """Update and persist the state."""
        with self.lock:
            self.state.update(changes)
            self.state["since"] = time.time()
            write_state(self.dir, self.state)

    def on_signal(self, signum, _frame) -> None:
        """SIGTERM/SIGINT: stop the board, SIGKILL it if it lingers."""
        if self.stopping:
            return
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.log("stopping board pid %d" % proc.pid)
            try:
                proc.terminate()
            except OSError:
                pass

            def escalate():
                if proc.poll() is None:
                    self.log("board pid %d ignored SIGTERM; killing it" % proc.pid)
                    try:
                        proc.kill()
                    except OSError:
                        pass

            timer = threading.Timer(STOP_TIMEOUT, escalate)
            timer.daemon = True
            timer.start()

    def run_once(self) -> int:
        """Start the board, pump its output until it exits; return its status."""
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=str(self.dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,  # inherits ours: board.log
            preexec_fn=_set_pdeathsig,
        )
        self.record(state="starting", pid=self.proc.pid, reason=None)
        self.log("started board pid %d: %s" % (self.proc.pid, " ".join(self.argv)))
        if self.stopping:  # a signal arrived while we were starting it
            self.proc.terminate()
        self.ready = False
        for line in iter(self.proc.stdout.readline, b""):
            _write(line)
            if not self.ready and READY_RE.search(line):
                self.ready = True
                self.record(state="running")
        self.proc.stdout.close()
        return self.proc.wait()

    def run(self) -> int:
        """Run (and restart) the board until it is down for good."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        boot_failures = 0
        restarts_at: list[float] = []
        while True:
            try:
                status = self.run_once()
            except OSError as e:
                self.log("cannot start the board: %s" % e)
                self.record(state="crashed", pid=None, reason="cannot start: %s" % e)
                return 1
            if self.stopping:
                self.log("board stopped (status %d)" % status)
                self.record(state="stopped", pid=None, reason="stopped", exit_status=status)
                return 0
            if status == RESET_STATUS:
                now = time.time()
                boot_failures = 0 if self.ready else boot_failures + 1
                restarts_at = [t for t in restarts_at if now - t < RESTART_WINDOW] + [now]
                if boot_failures >= MAX_BOOT_FAILURES or len(restarts_at) > MAX_RESTARTS:
                    why = (
                        "reset %d times before it served" % boot_failures
                        if boot_failures >= MAX_BOOT_FAILURES
                        else "reset more than %d times in %d s" % (MAX_RESTARTS, RESTART_WINDOW)
                    )
                    self.log("giving up: the board %s" % why)
                    self.record(state="crashed", pid=None, reason=why, exit_status=status)
                    return 1
                self.log("board reset (exit status 3); restarting")
                self.record(state="starting", pid=None, restarts=self.state["restarts"] + 1)
                if not self.ready:
                    time.sleep(0.5)  # do not spin on a board that cannot boot
                if self.stopping:
                    self.record(state="stopped", pid=None, reason="stopped")
                    return 0
                continue
            if status == 0:
                state, why = "stopped", "exited with status 0"
            elif status < 0:
                name = signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
                state, why = "crashed", "killed by %s" % name
            else:
                state, why = "crashed", "exited with status %d" % status
            self.log("board %s; leaving it down" % why)
            self.record(state=state, pid=None, reason=why, exit_status=status)
            return 0


def main(argv=None) -> int:
    """Entry point: ``python -m openheap.sim.supervisor [--detach] BOARD_DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    detach = "--detach" in args
    if detach:
        args.remove("--detach")
    if len(args) != 1:
        print("usage: python -m openheap.sim.supervisor [--detach] BOARD_DIR", file=sys.stderr)
        return 2
    if detach and os.fork() > 0:
        os._exit(0)  # the caller reaps us at once; the child lives on under init
    try:
        sup = Supervisor(Path(args[0]))
    except (OSError, ValueError, KeyError) as e:
        print("openheap supervisor: cannot read %s: %s" % (Path(args[0]) / LAUNCH_FILE, e), file=sys.stderr)
        return 2
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
