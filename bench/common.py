"""Shared helpers for the benchmarks: timing statistics, machine facts, result files.

Every benchmark row carries its own same-run baseline, so the numbers mean something on any
machine: `row()` computes the ratio and checks it against the target. Results are plain JSON in
bench/results/, which `run_all.py` turns into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
Row = dict[str, Any]

GIT_BASE_ENV = {
    # git flushes after every record when stdout is a pipe unless told otherwise; fully
    # buffered output is the honest floor for a baseline (about 2x faster for `git log`)
    "GIT_FLUSH": "0",
    "GIT_AUTHOR_NAME": "Bench Author",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench Author",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


def git_env(**overrides: str) -> dict[str, str]:
    """The environment for git commands the benchmarks run themselves (fixed identity, no
    user or system config, buffered output), so results do not depend on who runs them."""
    return {**os.environ, **GIT_BASE_ENV, **overrides}


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    cwd: Path | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a fixed argv (never a shell) and capture its output."""
    done = subprocess.run(
        list(argv), input=input, cwd=cwd, capture_output=True, env=env or git_env(), check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return run(["git", "-C", str(repo), *args], input=input).stdout.decode()


# -- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the second largest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "p99": percentile(values, 99),
        "n": len(values),
    }


def time_calls(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Wall time of `fn()` in ms, `repeat` times after `warmup` unrecorded calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def interleaved(
    a: Callable[[], Any], b: Callable[[], Any], repeat: int, warmup: int = 2
) -> tuple[list[float], list[float]]:
    """Time `a` and `b` alternately (ms), so machine noise lands on both alike."""
    for _ in range(warmup):
        a()
        b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(repeat):
        order = (a, b) if i % 2 == 0 else (b, a)
        for fn in order:
            start = time.perf_counter()
            fn()
            (ta if fn is a else tb).append((time.perf_counter() - start) * 1000)
    return ta, tb


# -- result rows ---------------------------------------------------------------------------------


def row(
    measurement: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_label: str = "",
    max_ratio: float | None = None,
    max_value: float | None = None,
    min_ratio: float | None = None,
    min_value: float | None = None,
    target: str = "",
    stats: dict[str, float] | None = None,
    baseline_stats: dict[str, float] | None = None,
) -> Row:
    """One table row. The target is a ratio to the baseline (`max_ratio`, or `min_ratio` for
    rates, where more is better), an absolute bound (`max_value`, `min_value`), both, or
    neither (informational, pass is None)."""
    ratio = value / baseline if baseline else None
    checks: list[bool] = []
    if max_ratio is not None and ratio is not None:
        checks.append(ratio <= max_ratio)
    if min_ratio is not None and ratio is not None:
        checks.append(ratio >= min_ratio)
    if max_value is not None:
        checks.append(value <= max_value)
    if min_value is not None:
        checks.append(value >= min_value)
    if not target:
        parts = []
        if max_ratio is not None:
            parts.append(f"≤ {max_ratio:g}× baseline")
        if min_ratio is not None:
            parts.append(f"≥ {min_ratio:g}× baseline")
        if max_value is not None:
            parts.append(f"≤ {max_value:g} {unit}")
        if min_value is not None:
            parts.append(f"≥ {min_value:g} {unit}")
        target = " and ".join(parts)
    return {
        "measurement": measurement,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_label": baseline_label,
        "ratio": ratio,
        "target": target,
        "pass": all(checks) if checks else None,
        "stats": stats,
        "baseline_stats": baseline_stats,
    }


# -- machine and results -----------------------------------------------------------------------------


def git_version() -> str:
    return run(["git", "--version"]).stdout.decode().strip().removeprefix("git version ")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "git": git_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "system": platform.system(),
        "loadavg": list(os.getloadavg()),
    }


def source_version() -> str:
    """The project's commit, with `+changes` when the work tree differs from it (what was
    measured)."""
    root = BENCH_DIR.parent
    head = run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], check=False)
    if head.returncode != 0:
        return "unknown"
    dirty = run(
        [
            "git",
            "-C",
            str(root),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "core",
            "tui",
            "themes",
        ],
        check=False,
    ).stdout.strip()
    return head.stdout.decode().strip() + (" +changes in core/tui/themes" if dirty else "")


def write_results(
    name: str,
    sections: list[dict[str, Any]],
    started: float,
    load_before: list[float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write bench/results/<name>.json and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data = {
        "script": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "source": source_version(),
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "argv": sys.argv[1:],
        "sections": sections,
        **(extra or {}),
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def print_section(section: dict[str, Any]) -> None:
    print(f"\n== {section['title']}")
    for r in section["rows"]:
        base = f"{r['baseline']:.3g}" if r["baseline"] is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        verdict = {True: "PASS", False: "FAIL", None: "info"}[r["pass"]]
        print(
            f"  {r['measurement']}: {r['value']:.4g} {r['unit']} (baseline {base}, {ratio}) "
            f"target {r['target'] or '-'} -> {verdict}"
        )
    for note in section.get("notes", []):
        print(f"  note: {note}")
