"""``openheap up``, ``openheap down``, ``openheap nodes``: the grid as a whole.

::

    openheap up [--nodes N] [--board NAME] [--fs-size BYTES] [--wait S] [--lease S] [--repair-grace S] ...
    openheap down
    openheap nodes [--json] [--remove NAME]
    openheap status [--json]

``up`` starts the home's coordinator in the background (unless it runs
already), then N virtual boards configured to register with it
(``"coordinator": "127.0.0.1:<CoAP port>"`` in each board's config), waits
until they have registered, and prints the grid. ``down`` stops the boards
and the coordinator. ``nodes`` lists what the coordinator knows. ``status``
shows the coordinator, lease renewal and the repair scheduler.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time

__all__ = ["register", "start_boards", "COORDINATOR_KEY"]

COORDINATOR_KEY = "coordinator"  # board config key: "host:port" of the coordinator's CoAP endpoint
WAIT_DEFAULT = 20.0


def _nodes(text: str) -> int:
    from .sim import _nodes as sim_nodes

    return sim_nodes(text)


def _size(text: str) -> int:
    from .sim import _size as sim_size

    return sim_size(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds, not %r" % text) from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be from 0 to 3600 seconds, not %r" % text)
    return value


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _bytes(n) -> str:
    if not isinstance(n, int):
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def _ago(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    if s < 120:
        return "%d s ago" % s
    if s < 7200:
        return "%d min ago" % (s // 60)
    if s < 172800:
        return "%d h ago" % (s // 3600)
    return "%d days ago" % (s // 86400)


def nodes_table(nodes: list[dict]) -> str:
    rows = [["NAME", "BOARD", "ADDRESS", "STATE", "SHARES", "FREE", "LAST SEEN", "ZONE"]]
    for n in nodes:
        rows.append([str(n.get("name")), str(n.get("board")), str(n.get("address")), str(n.get("state")),
                     str(n.get("shares")), _bytes(n.get("free")), _ago(n.get("last_seen_ago")), n.get("zone") or "-"])
    return _table(rows)


# -- boards configured for the coordinator


def start_boards(fleet, n: int, board: str, fs_size: int | None, coordinator: str, timeout: float | None = None):
    """``fleet.up(n, ...)`` with every one of the n boards configured with
    ``"coordinator": coordinator``; returns ``(boards, restarted names)``.

    Uses ``Fleet.up(..., extra_config=...)`` when the fleet has it; otherwise
    writes the key into the config of existing boards before starting them,
    and restarts boards that ``up`` created (or that were running with
    another value) once the key is written.
    """
    extra = {COORDINATOR_KEY: coordinator}
    kwargs = {"board": board, "fs_size": fs_size}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if "extra_config" in inspect.signature(fleet.up).parameters:
        before = {b.name: b for b in fleet.ls()}
        boards = fleet.up(n, extra_config=extra, **kwargs)
        return boards, [b.name for b in boards if b.name not in before or before[b.name].pid != b.pid]
    stale = []  # running boards that must restart to read the new value
    for info in fleet.ls()[:n]:
        if _set_config(fleet, info.name, extra) and info.state in ("starting", "running"):
            stale.append(info.name)
    if stale:
        fleet.down(stale)
    before = {b.name for b in fleet.ls() if b.state == "running"}
    boards = fleet.up(n, **kwargs)
    created = [b.name for b in boards if _set_config(fleet, b.name, extra)]
    if created:  # new boards started without the key: start them again with it
        fleet.down(created)
        boards = fleet.up(n, **kwargs)
    return boards, [b.name for b in boards if b.name not in before or b.name in created]


def _set_config(fleet, name: str, extra: dict) -> bool:
    """Merge ``extra`` into board ``name``'s config.json; True if it changed."""
    from ..errors import SimError

    path = fleet.board_dir(name) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SimError("cannot read the config of board %s (%s); remove it with 'openheap sim rm %s'"
                       % (name, e, name)) from None
    if all(cfg.get(k) == v for k, v in extra.items()):
        return False
    cfg.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=1) + "\n")
    tmp.replace(path)
    return True


def _board_address(info: dict) -> str:
    """The coordinator's CoAP address as a virtual board on 127.0.0.1 reaches it."""
    host = info.get("coap_host") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = "[%s]" % host
    return "%s:%d" % (host, info["coap_port"])


def wait_registered(client, boards, restarted: list[str], since: float, timeout: float) -> tuple[list[dict], list[str]]:
    """Poll the registry until every board registered; return (nodes, names missing).

    A board this call (re)started must have registered after ``since``; one
    that kept running counts once the registry has it registered.
    """
    names = [b.name for b in boards]
    deadline = time.monotonic() + timeout
    while True:
        nodes = client.nodes()
        by_name = {n["name"]: n for n in nodes}
        missing = []
        for name in names:
            n = by_name.get(name)
            fresh = n is not None and n["state"] == "registered"
            if fresh and name in restarted:
                fresh = n["last_seen_ago"] <= time.time() - since + 0.5
            if not fresh:
                missing.append(name)
        if not missing or time.monotonic() >= deadline:
            return nodes, missing
        time.sleep(0.2)


def cmd_up(args) -> int:
    from ..coordinator.client import CoordinatorClient, read_api_info
    from ..coordinator.daemon import UPKEEP_OPTIONS, start_background, stop
    from ..sim import resolve_home
    from ..sim.fleet import Fleet

    home = resolve_home(args.home)
    info = read_api_info(home)
    started_now = info is None
    upkeep = {key: getattr(args, key, None) for key in UPKEEP_OPTIONS}
    if started_now:
        info = start_background(home, coap_port=args.coap_port, upkeep=upkeep)
        print("coordinator started (pid %d): CoAP on %s, API on %s" % (info["pid"], info["coap"], info["api"]))
    else:
        print("coordinator already running (pid %d): CoAP on %s, API on %s" % (info["pid"], info["coap"], info["api"]))
        given = ["--" + k.replace("_", "-") for k, v in upkeep.items() if v is not None]
        if given:
            print("openheap: warning: %s only take%s effect when the coordinator starts; run 'openheap down' "
                  "first" % (", ".join(given), "s" if len(given) == 1 else ""), file=sys.stderr)
    fleet = Fleet(home)
    since = time.time()
    try:
        boards, restarted = start_boards(fleet, args.nodes, args.board, args.fs_size, _board_address(info))
    except BaseException:
        if started_now:
            stop(home)
        raise
    client = CoordinatorClient(home)
    nodes, missing = wait_registered(client, boards, restarted, since, args.wait)
    names = {b.name for b in boards}
    shown = [n for n in nodes if n["name"] in names]
    print("%d virtual board%s running, %d registered with the coordinator" % (
        len(boards), "" if len(boards) == 1 else "s", len(boards) - len(missing)))
    if shown:
        print(nodes_table(shown))
    if missing:
        print("openheap: warning: board%s %s did not register with the coordinator within %g s (does their "
              "firmware support registration yet? see %s)" % (
                  "" if len(missing) == 1 else "s", ", ".join(missing), args.wait,
                  fleet.board_dir(missing[0]) / "board.log"), file=sys.stderr)
    return 0


def cmd_down(args) -> int:
    from ..coordinator.daemon import stop
    from ..sim import resolve_home
    from ..sim.fleet import Fleet

    home = resolve_home(args.home)
    stopped = Fleet(home).down()
    for name in stopped:
        print("%s stopped" % name)
    if not stopped:
        print("no virtual boards were running")
    pid = stop(home)
    print("coordinator (pid %d) stopped" % pid if pid else "no coordinator was running")
    return 0


def cmd_nodes(args) -> int:
    from ..coordinator.client import CoordinatorClient

    client = CoordinatorClient(args.home)
    if args.remove:
        for name in args.remove:
            client.remove_node(name)
            print("%s removed from the registry" % name)
        return 0
    nodes = client.nodes()
    if args.json:
        print(json.dumps(nodes, indent=2))
        return 0
    if not nodes:
        print("no nodes have registered with the coordinator yet")
        return 0
    print(nodes_table(nodes))
    return 0


def _when(text) -> str:
    return text.replace("T", " ").replace("Z", " UTC") if isinstance(text, str) else "never"


def status_text(status: dict, upkeep: dict | None) -> str:
    """``openheap status`` as lines of text."""
    nodes = status.get("nodes", {})
    lines = ["coordinator %s (pid %s), up %s s: CoAP on %s, API on %s" % (
        status.get("version"), status.get("pid"), status.get("uptime"), status.get("coap"), status.get("api")),
        "nodes: %d registered, %d unreachable; files in the catalog: %d" % (
            nodes.get("registered", 0), nodes.get("unreachable", 0), status.get("files", 0))]
    if upkeep is None:
        lines.append("no lease renewal or repair scheduler (this coordinator stores no files)")
        return "\n".join(lines)
    cfg, le, rp = upkeep["config"], upkeep["leases"], upkeep["repair"]
    lines.append("leases: %d s, renewed every %s; last pass %s: %d renewed, %d failed; next %s" % (
        cfg["lease"], "%g s" % cfg["renew_every"] if cfg["renew_every"] else "(never)", _when(le["last_run"]),
        le["renewed"], le["failed"], _when(le["next_run"]) if cfg["renew_every"] else "never"))
    lines.append("repair: every %s after %g s unreachable, at most %d file%s per run%s; last run %s; next %s" % (
        "%g s" % cfg["repair_every"] if cfg["repair_every"] else "(never)", cfg["repair_grace"],
        cfg["repair_files"], "" if cfg["repair_files"] == 1 else "s",
        ", %g bytes/s" % cfg["repair_rate"] if cfg["repair_rate"] else "", _when(rp["last_run"]),
        _when(rp["next_run"]) if cfg["repair_every"] else "never"))
    by_class = upkeep.get("nodes", {})
    if by_class.get("waiting"):
        lines.append("  unreachable, within the grace period: %s" % ", ".join(by_class["waiting"]))
    if by_class.get("lost"):
        lines.append("  unreachable for longer (shares counted as lost): %s" % ", ".join(by_class["lost"]))
    for w in rp.get("waiting", []):
        lines.append("  waiting: %s (%d of %d shares reachable) until %s" % (
            w.get("name") or w["cap"][:40], w["live"], w["n"], _when(w.get("due"))))
    if rp.get("queued"):
        lines.append("  %d more file%s due for repair" % (rp["queued"], "" if rp["queued"] == 1 else "s"))
    for r in rp.get("history", [])[-10:]:
        what = ", ".join("share %s to %s" % kv for kv in r.get("rebuilt", {}).items()) or r.get("note") or "nothing"
        lines.append("  %s repaired %s: %s%s" % (_when(r.get("at")), r.get("name") or r["cap"][:40], what,
                                                 " (%s)" % r["error"] if r.get("error") else ""))
    return "\n".join(lines)


def cmd_status(args) -> int:
    from ..coordinator.client import CoordinatorClient

    client = CoordinatorClient(args.home)
    status = client.status()
    try:
        upkeep = client.upkeep()
    except Exception as e:  # a coordinator without a file service answers 501
        if getattr(e, "http_status", None) != 501:
            raise
        upkeep = None
    if args.json:
        print(json.dumps({"status": status, "upkeep": upkeep}, indent=2))
    else:
        print(status_text(status, upkeep))
    return 0


def register(subparsers, common) -> None:
    """Add ``up``, ``down``, ``nodes`` and ``status`` to the ``openheap`` parser."""
    from ..coordinator.daemon import _port, add_upkeep_options

    p = subparsers.add_parser(
        "up",
        parents=[common],
        help="start the coordinator and N virtual boards",
        description="Start this home's coordinator in the background (unless it runs), then N virtual boards "
        "that register with it, wait for their registrations, and show the grid. Boards keep their names, "
        "ports and flash images across 'down' and 'up'.",
    )
    p.add_argument("--nodes", "-n", type=_nodes, default=3, metavar="N", help="number of virtual boards (default 3)")
    p.add_argument("--board", default="virtual", metavar="NAME", help="board definition for new boards (default: virtual)")
    p.add_argument("--fs-size", type=_size, metavar="BYTES", help="filesystem size of new boards, e.g. 2MiB")
    p.add_argument("--coap-port", type=_port, metavar="PORT",
                   help="coordinator UDP port if it is started now (default: last used, else 5683 if free)")
    p.add_argument("--wait", type=_seconds, default=WAIT_DEFAULT, metavar="S",
                   help="seconds to wait for the boards to register (default %g)" % WAIT_DEFAULT)
    add_upkeep_options(p)
    p.set_defaults(func=cmd_up)

    p = subparsers.add_parser("down", parents=[common], help="stop the virtual boards and the coordinator",
                              description="Stop every virtual board of this home, then its coordinator. "
                              "Flash images and the registry are kept.")
    p.set_defaults(func=cmd_down)

    p = subparsers.add_parser("nodes", parents=[common], help="list the nodes registered with the coordinator",
                              description="List the nodes the coordinator knows: registered, or unreachable when "
                              "they stopped refreshing their registration.")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--remove", action="append", metavar="NAME",
                   help="forget a node (and the share locations recorded on it); may be repeated")
    p.set_defaults(func=cmd_nodes)

    p = subparsers.add_parser("status", parents=[common], help="the coordinator, lease renewal and repair scheduler",
                              description="Show the running coordinator, its lease renewal passes and its repair "
                              "scheduler: nodes within the grace period or lost, files waiting or due for repair, "
                              "and the last repairs.")
    p.add_argument("--json", action="store_true", help="print JSON: {\"status\": ..., \"upkeep\": ...}")
    p.set_defaults(func=cmd_status)
