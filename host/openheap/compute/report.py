"""What a job did: the summary printed at the end of ``openheap run``.

Counts tasks (answered, raised, failed, from the cache), every retry with its
board and reason, speculative duplicates, replica disagreements, boards that
stopped answering and came back, per-board figures, and the bytes on the
wire: CoAP messages as UDP payloads, and at the IP level (each datagram plus
28 bytes of IPv4 and UDP headers), counted by the task channels.
"""

from __future__ import annotations

import time

__all__ = ["Summary", "IP_UDP"]

IP_UDP = 28  # IPv4 (20, no options) + UDP (8) header bytes per datagram


class Summary:
    """Figures of one scheduler run (see the module docstring)."""

    def __init__(self, boards=()):
        self.tasks = self.ok = self.errors = self.failed = self.cached = 0
        self.speculative = self.spec_won = self.late = self.busy = self.mem_again = self.followed = 0
        self.batches = 0  # requests that carried several tasks (TK_MORE)
        self.shipped: set = set()  # tasks whose data was sent with them (--over)
        self.retries: list[tuple[object, str, str, bool]] = []  # (task index, board, why, tried again)
        self.disagreements: list[dict] = []
        self.events: list[tuple[float, str, str]] = []  # (seconds since start, board, what)
        self.per_board: dict[str, dict] = {b: {} for b in boards}
        self.refresh = None  # set by the scheduler: brings per_board up to date
        self.other_wire: dict[str, dict] = {}  # traffic outside the task channels (e.g. reading a file)
        self.started = time.monotonic()
        self.ended: float | None = None
        self.extra: dict = {}

    # -- recording
    def retry(self, index, board: str, why: str, again: bool = True) -> None:
        """A board failed a task (``again``: it goes to another board now)."""
        self.retries.append((index, board, why, again))

    @property
    def retried(self) -> int:
        """Attempts that failed and were tried again."""
        return sum(1 for r in self.retries if r[3])

    def disagree(self, index, by_board: dict, accepted_key, answers: dict) -> None:
        accepted = answers.get(accepted_key) if accepted_key is not None else None
        dissent = sorted(b for b, ans in by_board.items() if accepted is None or ans != accepted)
        self.disagreements.append({"task": index, "accepted": _plain(accepted),
                                   "boards": {b: _plain(a) for b, a in sorted(by_board.items())},
                                   "dissent": dissent})

    def board_event(self, board: str, what: str) -> None:
        self.events.append((time.monotonic() - self.started, board, what))

    def board_figures(self, board: str, counters, uploads: int, upload_bytes: int, done: int, raised: int,
                      failed: int, lost: int, busy_s: float, restarts: int) -> None:
        """Set one board's figures (its channel's counters are totals so far)."""
        sent, received, bsent, breceived = counters
        self.per_board[board] = {
            "done": done, "raised": raised, "failed": failed, "lost": lost, "busy_s": round(busy_s, 3),
            "restarts": restarts, "datagrams_sent": sent, "datagrams_received": received,
            "payload_sent": bsent, "payload_received": breceived, "code_uploads": uploads,
            "code_bytes": upload_bytes}

    def add_wire(self, label: str, counters) -> None:
        """Count traffic of other channels (``(sent, received, bytes sent,
        bytes received)``) in the wire totals, under ``label``."""
        sent, received, bsent, breceived = counters
        d = self.other_wire.setdefault(label, {"datagrams_sent": 0, "datagrams_received": 0, "payload_sent": 0,
                                               "payload_received": 0})
        d["datagrams_sent"] += sent
        d["datagrams_received"] += received
        d["payload_sent"] += bsent
        d["payload_received"] += breceived

    def _sum(self, key: str) -> int:
        if self.refresh is not None:
            self.refresh()
        return sum(d.get(key, 0) for d in list(self.per_board.values()) + list(self.other_wire.values()))

    datagrams_sent = property(lambda self: self._sum("datagrams_sent"))
    datagrams_received = property(lambda self: self._sum("datagrams_received"))
    payload_sent = property(lambda self: self._sum("payload_sent"))
    payload_received = property(lambda self: self._sum("payload_received"))
    uploads = property(lambda self: self._sum("code_uploads"))
    upload_bytes = property(lambda self: self._sum("code_bytes"))

    # -- figures
    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def wire_bytes(self) -> int:
        """IP-level bytes: UDP payloads plus 28 per datagram, both directions."""
        return self.payload_sent + self.payload_received + IP_UDP * (self.datagrams_sent + self.datagrams_received)

    @property
    def coap_bytes(self) -> int:
        """CoAP message bytes (UDP payloads), both directions."""
        return self.payload_sent + self.payload_received

    def to_json(self) -> dict:
        """Everything, JSON-ready."""
        if self.refresh is not None:
            self.refresh()
        return {
            "tasks": self.tasks, "ok": self.ok, "raised": self.errors, "failed": self.failed,
            "cached": self.cached, "seconds": round(self.seconds, 3),
            "retries": [{"task": i, "board": b, "why": w, "retried": a} for i, b, w, a in self.retries],
            "speculative": self.speculative, "speculative_won": self.spec_won, "busy_answers": self.busy,
            "followed": self.followed, "batches": self.batches,
            "shipped": len(self.shipped), "disagreements": self.disagreements,
            "events": [{"at": round(t, 3), "board": b, "what": w} for t, b, w in self.events],
            "boards": self.per_board, "other_wire": self.other_wire,
            "wire": {"datagrams": self.datagrams_sent + self.datagrams_received, "coap_bytes": self.coap_bytes,
                     "ip_bytes": self.wire_bytes, "code_uploads": self.uploads, "code_bytes": self.upload_bytes},
            **self.extra,
        }

    def text(self, max_lines: int = 20) -> str:
        """The human summary (several lines)."""
        if self.refresh is not None:
            self.refresh()
        ran = self.tasks - self.cached
        lines = ["%d task%s in %.2f s: %d ok, %d raised, %d failed; %d from the results cache, %d run on boards"
                 % (self.tasks, "" if self.tasks == 1 else "s", self.seconds, self.ok, self.errors, self.failed,
                    self.cached, ran)]
        if self.retries:
            lines.append("boards failed %d attempt%s, %d retried on another board:" % (
                len(self.retries), "" if len(self.retries) == 1 else "s", self.retried))
            for i, b, w, again in self.retries[:max_lines]:
                lines.append("  task %s on %s: %s; %s" % (i, b, w, "retried" if again else "not retried (retries used up)"))
            if len(self.retries) > max_lines:
                lines.append("  ... and %d more" % (len(self.retries) - max_lines))
        else:
            lines.append("no board failed a task")
        over = self.extra.get("over")
        if over:
            lines.append("ranges: %d, %d computed where the data is, %d shipped (%d bytes read from boards to "
                         "ship them)%s" % (over["ranges"], over["ranges"] - over["shipped"], over["shipped"],
                                           over["fetched_bytes"], "; %d tried again on their board after a "
                                           "MemoryError" % self.mem_again if self.mem_again else ""))
        if self.batches:
            lines.append("%d request%s carried several tasks (batches of quick tasks)" % (
                self.batches, "" if self.batches == 1 else "s"))
        if self.speculative:
            lines.append("speculative duplicates: %d (%d answered first)" % (self.speculative, self.spec_won))
        if self.disagreements:
            boards: dict[str, int] = {}
            for d in self.disagreements:
                for b in d["dissent"]:
                    boards[b] = boards.get(b, 0) + 1
            lines.append("replicas disagreed on %d task%s; outvoted: %s" % (
                len(self.disagreements), "" if len(self.disagreements) == 1 else "s",
                ", ".join("%s (%d)" % kv for kv in sorted(boards.items())) or "none"))
            for d in self.disagreements[:min(5, max_lines)]:
                lines.append("  task %s: %s -> accepted %s" % (
                    d["task"], ", ".join("%s=%s" % (b, _text(v)) for b, v in d["boards"].items()),
                    _text(d["accepted"]) if d["accepted"] is not None else "none (no quorum)"))
        for t, b, w in self.events[:max_lines]:
            lines.append("%s %s (at %.1f s)" % (b, w, t))
        if self.per_board:
            parts = []
            for name, d in sorted(self.per_board.items()):
                parts.append("%s %d" % (name, d.get("done", 0) + d.get("raised", 0)) +
                             (" (%d failed)" % d["failed"] if d.get("failed") else ""))
            lines.append("per board: " + ", ".join(parts))
        per = ran and (self.coap_bytes / ran)
        lines.append("wire: %d datagrams, %d bytes of CoAP messages, %d bytes at the IP level%s; code sent %d "
                     "time%s (%d bytes)" % (self.datagrams_sent + self.datagrams_received, self.coap_bytes,
                                            self.wire_bytes, " (%.1f CoAP bytes per task run)" % per if ran else "",
                                            self.uploads, "" if self.uploads == 1 else "s", self.upload_bytes))
        return "\n".join(lines)


def _plain(answer):
    if answer is None:
        return None
    kind, value = answer
    return {"value": value} if kind == "ok" else {"error": list(value)}


def _text(v) -> str:
    if v is None:
        return "none"
    s = repr(v["value"]) if "value" in v else "%s: %s" % tuple(v["error"])
    return s if len(s) <= 40 else s[:37] + "..."
