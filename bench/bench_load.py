"""Load: 20 pipelines a minute for 10 minutes while several consoles follow the logs.

    .venv/bin/python bench/bench_load.py [--minutes 10] [--rate 20] [--consoles 3]

A fresh workspace of 5 repos (three stages: build prints 2,000 lines, test 20 lines over a
second, deploy-dev 500 lines) under `--root`/load-ws; `ahead engine` in its own process; a
commit lands on one repo's main every 60/rate seconds (round robin), so the engine sees real
pushes; `--consoles` console processes (bench/load_console.py: the real AheadApp headless on a
client ClientSession) follow the newest run's log and press `f` every 50-100 ms. Measured:
pipelines started per minute, runs that did not succeed, any SQLITE_BUSY / "database is
locked" reaching the engine, a console or a trigger, the largest WAL file seen (sampled every
250 ms), console key latency (p50/p99) under load against the same consoles idle just before,
queue delay, and PRAGMA integrity_check plus the audit chain at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fixtures
from common import BENCH_DIR, git, git_env, percentile, print_section, row, summary, write_results

from core.store.db import Store

PYTHON = sys.executable
PIPELINE = """\
stages:
  - name: build
    steps:
      - run: 'seq 1 2000 | sed "s/^/compiling unit /"; sleep 0.5'
  - name: test
    steps:
      - run: 'for i in $(seq 1 20); do echo "test $i ok"; sleep 0.05; done'
  - name: deploy-dev
    environment: dev
    steps:
      - run: 'seq 1 500 | sed "s/^/deployed line /"'
"""
OPENING = 2.0  # key presses this soon after a console opened a run screen are counted apart
BUSY_WORDS = (
    "database is locked",
    "sqlite_busy",
    "database table is locked",
    "cannot write to the store",
)


def make_workspace(root: Path, repos: int) -> Path:
    ws = root / "load-ws"
    shutil.rmtree(ws, ignore_errors=True)
    lines = ["repos:"]
    for i in range(repos):
        repo = ws / "repos" / f"svc{i}"
        (repo / ".ahead").mkdir(parents=True)
        (repo / ".ahead" / "pipeline.yml").write_text(PIPELINE)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "initial")
        lines += [f"  - name: svc{i}", f"    path: repos/svc{i}"]
    lines += [
        "environments: [dev, prod]",
        "settings:",
        "  max_parallel_runs: 4",
        "  poll_interval: 1",
    ]
    (ws / "ahead.yml").write_text("\n".join(lines) + "\n")
    return ws


class WalSampler(threading.Thread):
    """The WAL file's size every 250 ms (missing file: 0)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.sizes: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                self.sizes.append(self.path.stat().st_size)
            except OSError:
                self.sizes.append(0)


def wait_lease(db: Path, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            with Store(db, session="bench") as store:
                if store.query_one("SELECT 1 FROM lease WHERE pid = ?", (pid,)):
                    return
        time.sleep(0.1)
    raise RuntimeError("the engine never took the lease")


def wait_runs_done(db: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with Store(db, session="bench") as store:
        while time.monotonic() < deadline:
            if not store.query(
                "SELECT 1 FROM runs WHERE status IN ('queued', 'running', 'waiting')"
            ):
                return
            time.sleep(0.5)


def push(ws: Path, repo: str, n: int) -> str | None:
    """A commit on main (what a developer's push does to a local repo); error text or None."""
    try:
        path = ws / "repos" / repo
        (path / "version.txt").write_text(f"{n}\n")
        git(path, "add", "version.txt")
        git(path, "commit", "-q", "-m", f"bump {n}")
    except RuntimeError as exc:
        return str(exc)
    return None


def ms_stats(values: list[float]) -> dict[str, float] | None:
    return summary(values) if values else None


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    ws = make_workspace(args.root, args.repos)
    db = ws / ".ahead" / "state.db"
    out_dir = ws / "bench-out"
    out_dir.mkdir()
    env = {**git_env(), "PYTHONPATH": str(BENCH_DIR.parent)}
    engine_log = (out_dir / "engine.log").open("w")
    engine = subprocess.Popen(
        [PYTHON, "-m", "core.cli", "--workspace", str(ws), "engine"],
        stdout=engine_log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=BENCH_DIR.parent,
    )
    wal = WalSampler(db.with_name("state.db-wal"))
    consoles: list[subprocess.Popen[bytes]] = []
    push_errors: list[str] = []
    try:
        wait_lease(db, engine.pid)
        wal.start()
        warm = push(ws, "svc0", 0)  # a first run, so the consoles have a log to follow
        if warm:
            push_errors.append(warm)
        wait_runs_done(db, 60)
        load_seconds = args.minutes * 60
        for i in range(args.consoles):
            consoles.append(
                subprocess.Popen(
                    [
                        PYTHON,
                        str(BENCH_DIR / "load_console.py"),
                        "--workspace",
                        str(ws),
                        "--seconds",
                        str(args.idle + load_seconds + 10),
                        "--out",
                        str(out_dir / f"console{i}.json"),
                        "--seed",
                        str(args.seed + i),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(out_dir / f"console{i}.log").open("w"),
                    cwd=BENCH_DIR.parent,
                )
            )
        time.sleep(5 + args.idle)  # consoles start, then measure idle
        idle_end = time.time() - 0.5
        idle_start = idle_end - args.idle + 0.5
        load_start = time.time()
        interval = 60.0 / args.rate
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < load_seconds:
            n += 1
            problem = push(ws, f"svc{n % args.repos}", n)
            if problem:
                push_errors.append(problem)
            next_at = t0 + n * interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        load_end = time.time()
        wait_runs_done(db, 180)
        for proc in consoles:
            proc.wait(timeout=args.idle + load_seconds + 120)
    finally:
        wal.stop.set()
        for proc in consoles:
            if proc.poll() is None:
                proc.kill()
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.kill()
        engine_log.close()
    import json

    results = [json.loads(p.read_text()) for p in sorted(out_dir.glob("console*.json"))]
    texts = [(out_dir / "engine.log").read_text(errors="replace")]
    texts += [p.read_text(errors="replace") for p in out_dir.glob("console*.log")]
    texts += ["\n".join(r["errors"]) for r in results] + push_errors
    busy = sum(t.lower().count(w) for t in texts for w in BUSY_WORDS)
    with Store(db, session="bench") as store:
        runs = store.query(
            "SELECT * FROM runs WHERE created_at >= ? AND created_at <= ?",
            (load_start, load_end + 1),
        )
        integrity = store.query_one("PRAGMA integrity_check")["integrity_check"]
        audit_ok = store.verify_audit()[0]
        lines = store.query_one("SELECT COUNT(*) AS n FROM log_lines")["n"]
    samples = [s for r in results for s in r["samples"]]
    settled = [s for s in samples if s[2] >= OPENING]  # not while a run screen is opening
    under = [s[1] for s in settled if load_start <= s[0] <= load_end]
    idle = [s[1] for s in settled if idle_start <= s[0] <= idle_end]
    opening = [s[1] for s in samples if s[2] < OPENING and load_start <= s[0] <= load_end]
    return {
        "runs": runs,
        "busy": busy,
        "integrity": integrity,
        "audit_ok": audit_ok,
        "log_lines": lines,
        "wal_max": max(wal.sizes, default=0),
        "wal_last": wal.sizes[-1] if wal.sizes else 0,
        "under": under,
        "idle": idle,
        "opening": opening,
        "console_errors": sum(len(r["errors"]) for r in results),
        "followed": [r["runs_followed"] for r in results],
        "push_errors": len(push_errors),
        "load_minutes": (load_end - load_start) / 60,
        "engine_exit": engine.returncode,
    }


def section(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    runs = r["runs"]
    started = [x for x in runs if x["started_at"]]
    per_minute = len(runs) / r["load_minutes"]
    not_ok = [x for x in runs if x["status"] != "succeeded"]
    delays = [x["started_at"] - x["created_at"] for x in started]
    durations = [x["finished_at"] - x["started_at"] for x in started if x["finished_at"]]
    under = [v for v in r["under"] if v is not None]
    opening = [v for v in r["opening"] if v is not None]
    idle = [v for v in r["idle"] if v is not None]
    lost = sum(1 for v in r["under"] + r["opening"] if v is None)
    p99 = percentile(under, 99) if under else float("inf")
    idle_p99 = percentile(idle, 99) if idle else None
    rows = [
        row(
            "pipelines queued per minute (commits on main)",
            per_minute,
            "/min",
            min_value=args.rate * 0.95,
        ),
        row("runs not succeeded", len(not_ok), "runs", max_value=0),
        row(
            "SQLITE_BUSY / database locked reaching the engine, a console or a push",
            r["busy"],
            "errors",
            max_value=0,
        ),
        row(
            "largest WAL file seen (sampled every 250 ms)",
            r["wal_max"] / 2**20,
            "MiB",
            max_value=64,
        ),
        row(
            "console key latency p99 under load (f on a live run log)",
            p99,
            "ms",
            baseline=idle_p99,
            baseline_label="same consoles, idle",
            max_value=100,
            stats=ms_stats(under),
            baseline_stats=ms_stats(idle),
        ),
        row(
            "console key latency median under load",
            percentile(under, 50) if under else float("inf"),
            "ms",
            baseline=percentile(idle, 50) if idle else None,
            baseline_label="idle",
        ),
        row(
            f"console key latency p99 in the first {OPENING:g} s after opening a run screen",
            percentile(opening, 99) if opening else 0.0,
            "ms",
            stats=ms_stats(opening),
        ),
        row("key presses with no frame within 3 s", lost, "keys", max_value=0),
        row(
            "queue delay p99 (created → started)",
            percentile(delays, 99) if delays else 0.0,
            "s",
            stats=ms_stats(delays),
        ),
        row(
            "run duration median",
            percentile(durations, 50) if durations else 0.0,
            "s",
            stats=ms_stats(durations),
        ),
        row(
            "integrity_check ok and audit chain verifies after the load",
            float(r["integrity"] == "ok" and r["audit_ok"]),
            "bool",
            min_value=1,
        ),
    ]
    notes = [
        f"{args.minutes:g} min of load at {args.rate:g} pipelines/min over {args.repos} repos, "
        f"{args.consoles} console processes following the newest run's log "
        f"(runs followed per console: {r['followed']}); {len(runs)} runs, {r['log_lines']:,} log lines "
        f"stored; the WAL ended at {r['wal_last'] / 2**20:.1f} MiB.",
        f"Key samples: {len(under)} under load while following, {len(opening)} while a run screen was "
        f"opening (it reads and draws the run's log), {len(idle)} idle ({args.idle:g} s before the load); "
        f"console errors: {r['console_errors']}; engine exit code {r['engine_exit']}.",
    ]
    return {
        "title": f"Load: {args.rate:g} pipelines/min for {args.minutes:g} min with {args.consoles} consoles",
        "rows": rows,
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Sustained load with consoles following logs.")
    parser.add_argument("--root", type=Path, default=fixtures.DEFAULT_ROOT)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="pipelines per minute")
    parser.add_argument("--consoles", type=int, default=3)
    parser.add_argument("--repos", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle key timing first")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    load_before = list(os.getloadavg())
    args.root.mkdir(parents=True, exist_ok=True)
    result = run_load(args)
    sec = section(args, result)
    print_section(sec)
    name = "bench_load" if args.minutes >= 10 else f"bench_load-{args.minutes:g}min"
    path = write_results(name, [sec], started, load_before)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
