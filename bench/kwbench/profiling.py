"""py-spy around the worker and replay, and a summary of its raw (collapsed-stack) output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

from kwbench.kafka import ROOT

PY_SPY = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")


def available() -> bool:
    """py-spy is installed (`pip install py-spy` into .venv)."""
    return Path(PY_SPY).exists()


def attach(pid: int, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start sampling a running process; stop it with `detach` to have the profile written."""
    return subprocess.Popen(
        [
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def detach(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT: py-spy writes its output and exits."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wrap(out: Path, rate: int = 200) -> list[str]:
    """Prefix for a command to run it under py-spy."""
    return [PY_SPY, "record", "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking", "--"]


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)": keep function and file, drop the line.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def _package(frame: str) -> str:
    path = frame.rsplit(" (", 1)[-1].rstrip(")")
    top = path.split("/", 1)[0] if "/" in path else path
    return top.removesuffix(".py")


def summarise(raw: Path, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and by inclusive share of samples."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return {"self": [], "inclusive": [], "packages": []}
    return {
        "packages": [(name, 100.0 * n / total) for name, n in packages.most_common()],
        "self": [(name, 100.0 * n / total) for name, n in self_time.most_common(top)],
        "inclusive": [(name, 100.0 * n / total) for name, n in inclusive.most_common(top)],
    }


def render(title: str, summary: dict[str, list[tuple[str, float]]]) -> str:
    """The summary as text."""
    lines = [f"== {title}", "-- self % by package"]
    lines += [f"{pct:6.1f}  {name}" for name, pct in summary["packages"]]
    lines.append("-- self %")
    lines += [f"{pct:6.1f}  {name}" for name, pct in summary["self"]]
    lines.append("-- inclusive %")
    lines += [f"{pct:6.1f}  {name}" for name, pct in summary["inclusive"]]
    return "\n".join(lines) + "\n"
