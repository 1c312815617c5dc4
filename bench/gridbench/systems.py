"""The two systems under test, driven only through their CLI and HTTP API:
an openheap grid (``Openheap``) and a Tahoe-LAFS grid (``Tahoe``), plus the
timed CLI process (``Cli``) and the HTTP transfers they use."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from .common import HAPPY, MIB, NODES, OPENHEAP, ROOT, TAHOE, K, N, log, sh


class Cli:
    """One CLI process, timed; its peak RSS from wait4's rusage."""

    def __init__(self, cmd: list[str], env=None, timeout: float = 600):
        self.cmd, self.env, self.timeout = [str(c) for c in cmd], env, timeout
        self.p = None

    def run(self) -> dict:
        t0 = time.perf_counter()
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=self.env, start_new_session=True)
        out, err = [], []
        tout = threading.Thread(target=lambda: out.append(self.p.stdout.read()), daemon=True)
        terr = threading.Thread(target=lambda: err.append(self.p.stderr.read()), daemon=True)
        tout.start()
        terr.start()
        deadline = time.monotonic() + self.timeout
        status = ru = None
        try:
            while True:
                pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("%s took longer than %d s" % (" ".join(self.cmd[:3]), self.timeout))
                time.sleep(0.005)
        finally:
            if status is None:
                self.kill()
        dt = time.perf_counter() - t0
        self.p.returncode = os.waitstatus_to_exitcode(status)
        tout.join(5)
        terr.join(5)
        return {"seconds": dt, "rc": self.p.returncode, "maxrss_kb": ru.ru_maxrss,
                "stdout": (out[0] if out else b"").decode(errors="replace"),
                "stderr": (err[0] if err else b"").decode(errors="replace")}

    def kill(self):
        if self.p is not None and self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
            self.p.wait()


def http_upload(method: str, port: int, url: str, path: Path, headers: dict, timeout: float) -> tuple[int, bytes]:
    size = path.stat().st_size
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=1 << 16)
    try:
        with open(path, "rb") as f:
            c.request(method, url, body=f, headers={"Content-Length": str(size), **headers})
            r = c.getresponse()
            return r.status, r.read()
    finally:
        c.close()


def http_download(port: int, url: str, out: Path, headers: dict, timeout: float) -> tuple[int, str, int]:
    """GET to a file; (status, sha256, bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", url, headers=headers)
        r = c.getresponse()
        if r.status != 200:
            return r.status, r.read()[:300].decode(errors="replace"), 0
        h = hashlib.sha256()
        n = 0
        with open(out, "wb") as f:
            while chunk := r.read(1 << 16):
                h.update(chunk)
                f.write(chunk)
                n += len(chunk)
        return r.status, h.hexdigest(), n
    finally:
        c.close()


class Openheap:
    name = "openheap"

    def __init__(self, tmp: Path, max_size: int, files_per_board: float):
        self.home = tmp / "ohhome"
        self.boards = tmp / "boards"
        self.env = dict(os.environ, OPENHEAP_BOARDS=str(self.boards))
        self.env.pop("OPENHEAP_HOME", None)
        share = -(-max_size // K)
        # a share is the ciphertext / k plus hash trees (~0.4 % for big files)
        self.max_share = max(MIB, -(-(int(share * 1.02) + MIB) // 4096) * 4096)
        fs = int(files_per_board * share * 1.15) + 8 * MIB
        self.fs_size = -(-fs // 4096) * 4096
        self.pid = self.api_port = self.token = None
        self.up_out = ""
        self.note = ""

    def cmd(self, *args) -> list[str]:
        return [str(OPENHEAP), "--home", str(self.home), *args]

    def start(self):
        shutil.copytree(ROOT / "boards", self.boards)
        vpath = self.boards / "virtual.json"
        v = json.loads(vpath.read_text())
        if v["max_share"] < self.max_share:
            self.note = "virtual board max_share raised from %d to %d bytes (copy of boards/ via OPENHEAP_BOARDS); " % (
                v["max_share"], self.max_share)
            v["max_share"] = self.max_share
        self.note += "boards' filesystem %d bytes (--fs-size)" % self.fs_size
        vpath.write_text(json.dumps(v, indent=2) + "\n")
        r = Cli(self.cmd("up", "--nodes", str(NODES), "--board", "virtual", "--fs-size", str(self.fs_size), "--wait", "60"),
                env=self.env, timeout=180).run()
        self.up_out = r["stdout"] + r["stderr"]
        if r["rc"]:
            raise RuntimeError("openheap up failed (%d): %s" % (r["rc"], self.up_out.strip()[-800:]))
        info = json.loads((self.home / "coordinator" / "api.json").read_text())
        self.pid, self.api_port = int(info["pid"]), int(info["api_port"])
        self.token = (self.home / "coordinator" / "token").read_text().strip()
        deadline = time.monotonic() + 60
        while True:  # every board registered with room for a share
            r = Cli(self.cmd("nodes"), env=self.env, timeout=60).run()
            reg = r["stdout"].count(" registered ")
            if reg >= NODES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("only %d of %d boards registered:\n%s" % (reg, NODES, r["stdout"]))
            time.sleep(1)

    def stop(self):
        try:
            r = Cli(self.cmd("down"), env=self.env, timeout=90).run()
            if r["rc"]:
                log("openheap down failed:", (r["stderr"] or r["stdout"]).strip()[:300])
        except Exception as e:
            log("openheap down:", e)

    def cli_put(self, path: Path) -> dict:
        r = Cli(self.cmd("put", path, "-k", str(K), "-n", str(N), "--happy", str(HAPPY)), env=self.env,
                timeout=self.timeout(path)).run()
        lines = r["stdout"].strip().splitlines()
        r["cap"] = lines[-1].strip() if r["rc"] == 0 and lines else None
        return r

    def cli_get(self, cap: str, out: Path, size: int) -> dict:
        return Cli(self.cmd("get", cap, "-o", out), env=self.env, timeout=self.timeout(size)).run()

    def api_put(self, path: Path) -> dict:
        q = urllib.parse.urlencode({"k": K, "n": N, "happy": HAPPY, "name": path.name})
        t = time.perf_counter()
        st, body = http_upload("POST", self.api_port, "/v1/files?" + q, path,
                               {"Authorization": "Bearer " + self.token, "Content-Type": "application/octet-stream",
                                "Accept": "application/json"}, self.timeout(path))
        r = {"seconds": time.perf_counter() - t, "rc": 0 if st in (200, 201) else st, "stderr": body[:300].decode(errors="replace")}
        r["cap"] = json.loads(body)["cap"] if r["rc"] == 0 else None
        return r

    def api_get(self, cap: str, out: Path, size: int) -> dict:
        t = time.perf_counter()
        st, digest, n = http_download(self.api_port, "/v1/files/" + urllib.parse.quote(cap, safe=":"), out,
                                      {"Authorization": "Bearer " + self.token,
                                       "Accept": "application/octet-stream, application/json"}, self.timeout(size))
        return {"seconds": time.perf_counter() - t, "rc": 0 if st == 200 else st, "sha256": digest, "bytes": n,
                "stderr": "" if st == 200 else digest}

    @staticmethod
    def timeout(x) -> float:
        size = x.stat().st_size if isinstance(x, Path) else x
        return max(300.0, size / 20e3)  # at least 20 kB/s

    def version(self) -> str:
        try:
            v = sh([str(OPENHEAP), "--version"]).strip()
        except Exception:
            v = "openheap ?"
        try:
            rev = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
            dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip()
            v += " (git %s%s)" % (rev, " + uncommitted changes" if dirty else "")
        except Exception:
            pass
        return v


class Tahoe:
    name = "tahoe"

    def __init__(self, tmp: Path):
        self.dir = tmp / "tahoe"
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        self.web_port = None
        self.pid = None
        self.client = self.dir / "client"

    def _create(self, args_list):
        ps = [subprocess.Popen([str(TAHOE), *a], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True) for a in args_list]
        for p, a in zip(ps, args_list):
            out = p.communicate(timeout=120)[0]
            if p.returncode:
                raise RuntimeError("tahoe %s failed: %s" % (a[0], out.decode(errors="replace")[-500:]))

    def _run(self, d: Path):
        lf = open(self.dir / (d.name + ".log"), "ab")
        self.logs.append(lf)
        # stdin stays an open pipe: 'tahoe run' exits when its stdin closes,
        # so the nodes also go if this process dies.
        self.procs.append(subprocess.Popen([str(TAHOE), "run", str(d)], stdin=subprocess.PIPE, stdout=lf, stderr=lf,
                                           start_new_session=True))

    def start(self):
        self.dir.mkdir(parents=True)
        ports = free_tcp_ports(NODES + 2)
        ip, self.web_port = ports[0], ports[1]
        intro = self.dir / "introducer"
        self._create([["create-introducer", "--listen=tcp", "--port=tcp:%d:interface=127.0.0.1" % ip,
                       "--location=tcp:127.0.0.1:%d" % ip, str(intro)]])
        self._run(intro)
        furl_path = intro / "private" / "introducer.furl"
        deadline = time.monotonic() + 60
        while not furl_path.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("the Tahoe introducer did not start; see %s" % (self.dir / "introducer.log"))
            time.sleep(0.2)
        furl = furl_path.read_text().strip()
        enc = ["--shares-needed=%d" % K, "--shares-happy=%d" % HAPPY, "--shares-total=%d" % N]
        nodes = [["create-node", "--listen=tcp", "--port=tcp:%d:interface=127.0.0.1" % p, "--location=tcp:127.0.0.1:%d" % p,
                  "--introducer=" + furl, "--nickname=s%02d" % i, "--webport=none", *enc, str(self.dir / ("s%02d" % i))]
                 for i, p in enumerate(ports[2:], 1)]
        nodes.append(["create-client", "--introducer=" + furl, "--nickname=client",
                      "--webport=tcp:%d:interface=127.0.0.1" % self.web_port, *enc, str(self.client)])
        self._create(nodes)
        for i in range(1, NODES + 1):
            self._run(self.dir / ("s%02d" % i))
        self._run(self.client)
        deadline = time.monotonic() + 120
        connected = 0
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=5)
                c.request("GET", "/?t=json")
                data = json.loads(c.getresponse().read())
                c.close()
                connected = sum(1 for s in data.get("servers", []) if s.get("connection_status") == "connected")
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if connected >= NODES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Tahoe client sees %d of %d storage servers; logs in %s" % (connected, NODES, self.dir))
            time.sleep(0.5)
        self.pid = int((self.client / "running.process").read_text().split()[0])

    def stop(self):
        for p in self.procs:
            try:
                p.stdin.close()  # 'tahoe run' stops when its stdin closes
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(3)
                except (OSError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    p.wait()
        for lf in self.logs:
            lf.close()

    def cli_put(self, path: Path) -> dict:
        r = Cli([TAHOE, "-d", self.client, "put", path], timeout=Openheap.timeout(path)).run()
        lines = r["stdout"].strip().splitlines()
        r["cap"] = lines[-1].strip() if r["rc"] == 0 and lines else None
        return r

    def cli_get(self, cap: str, out: Path, size: int) -> dict:
        return Cli([TAHOE, "-d", self.client, "get", cap, out], timeout=Openheap.timeout(size)).run()

    def api_put(self, path: Path) -> dict:
        t = time.perf_counter()
        st, body = http_upload("PUT", self.web_port, "/uri", path, {}, Openheap.timeout(path))
        r = {"seconds": time.perf_counter() - t, "rc": 0 if st in (200, 201) else st, "stderr": body[:300].decode(errors="replace")}
        r["cap"] = body.decode().strip() if r["rc"] == 0 else None
        return r

    def api_get(self, cap: str, out: Path, size: int) -> dict:
        t = time.perf_counter()
        st, digest, n = http_download(self.web_port, "/uri/" + urllib.parse.quote(cap, safe=":"), out, {}, Openheap.timeout(size))
        return {"seconds": time.perf_counter() - t, "rc": 0 if st == 200 else st, "sha256": digest, "bytes": n,
                "stderr": "" if st == 200 else digest}

    @staticmethod
    def version() -> str:
        try:
            return sh([str(TAHOE), "--version"]).strip().splitlines()[0]
        except Exception:
            return "tahoe-lafs ?"


def free_tcp_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
