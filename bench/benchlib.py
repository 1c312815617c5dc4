"""What the benchmarks in bench/ share (imported as ``benchlib``: a script's
own folder is on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path


def cpu_model(default: str = "") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``default`` if none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def append_results(path, text: str, header: str) -> Path:
    """Append a benchmark's section ``text`` to ``path`` (bench/RESULTS.md),
    after ``header`` when the file is new or empty; returns the path."""
    path = Path(path)
    head = "" if path.exists() and path.stat().st_size else header
    with open(path, "a") as f:
        f.write(head + "\n" + text)
    return path
