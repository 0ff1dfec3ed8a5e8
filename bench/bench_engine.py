"""Engine benchmarks, each beside a baseline measured in the same run on the same machine.

1. Commit → run start with 1,000 repos tracked: `git commit --allow-empty` into a random
   repo's main, then the time from the commit process's exit to the run's `run.started` event
   (its timestamp, and its arrival at a subscriber). Baseline: the `git commit` itself.
   Also: engine start-up (watch setup) and idle CPU with 1,000 repos watched, against a
   minimal inotify + stat-poll watcher of the same repos.
2. One detection sweep over 1,000 repos (`await engine.sweep()`, what the poll task does each
   interval, with nothing changed) against an `os.stat` loop and a plain read of
   `.git/refs/heads/main` (or packed-refs); the forced sweep (every 30th: re-reads every ref
   file) against the read loop.
3. Pending commits, 1,000 behind on a 50,000-commit history: `Services.pending` against
   `git log --format=... deployed..main`; `Services.status` against `git rev-list --count`.

    .venv/bin/python bench/bench_engine.py [--only latency,sweep,pending] [--commits 100]

Writes bench/results/bench_engine.json; `bench/run_all.py` renders docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import logging
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fixtures
from common import (
    git,
    git_env,
    interleaved,
    percentile,
    print_section,
    row,
    run,
    summary,
    write_results,
)

from core import gitio, lease, runstate
from core.engine import Engine
from core.errors import GitError
from core.feed import Event
from core.services import Services
from core.store.db import Store
from core.workspace import Workspace
from core.workspace import read as read_workspace

Section = dict[str, Any]


def fresh_state(ws: Workspace) -> None:
    """Start from an empty state directory (no runs, no recorded refs)."""
    shutil.rmtree(ws.state_dir, ignore_errors=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


# -- baselines: a minimal watcher of the same repos ---------------------------------------------


class MiniInotify:
    """The least a watcher must do: one inotify watch per refs/heads dir and per git dir."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd: int = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.events = 0

    def add(self, path: str) -> None:
        # IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
        if (
            self._libc.inotify_add_watch(self.fd, os.fsencode(path), 0x008 | 0x080 | 0x100 | 0x200)
            < 0
        ):
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 65536)
            self.events += 1

    def close(self) -> None:
        os.close(self.fd)


def read_main(git_dir: str) -> bytes | None:
    """The baseline ref check: refs/heads/main, else its line in packed-refs."""
    try:
        with open(git_dir + "/refs/heads/main", "rb") as fh:
            return fh.read(40)
    except FileNotFoundError:
        pass
    try:
        with open(git_dir + "/packed-refs", "rb") as fh:
            for line in fh:
                if line.endswith(b" refs/heads/main\n"):
                    return line[:40]
    except FileNotFoundError:
        pass
    return None


def read_all_refs(git_dirs: list[str]) -> int:
    return sum(1 for d in git_dirs if read_main(d) is not None)


def stat_all_refs(git_dirs: list[str]) -> int:
    seen = 0
    for d in git_dirs:
        for name in ("/refs/heads/main", "/packed-refs"):
            try:
                os.stat(d + name)
                seen += 1
            except FileNotFoundError:
                pass
    return seen


def baseline_setup(git_dirs: list[str]) -> float:
    """ms to read every repo's main and put inotify watches on refs/heads and the git dir."""
    start = time.perf_counter()
    read_all_refs(git_dirs)
    notify = MiniInotify()
    for d in git_dirs:
        notify.add(d)
        notify.add(d + "/refs/heads")
    elapsed = (time.perf_counter() - start) * 1000
    notify.close()
    return elapsed


async def baseline_idle_cpu(git_dirs: list[str], seconds: float, interval: float) -> float:
    """% of a core used by a minimal watcher: inotify on the loop plus a stat-poll sweep every
    `interval` (the same safety net the engine keeps)."""
    notify = MiniInotify()
    for d in git_dirs:
        notify.add(d)
        notify.add(d + "/refs/heads")
    loop = asyncio.get_running_loop()
    loop.add_reader(notify.fd, notify.read)

    async def poll() -> None:
        while True:
            await asyncio.sleep(interval)
            stat_all_refs(git_dirs)

    task = asyncio.create_task(poll())
    try:
        await asyncio.sleep(1.0)
        c0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        return (cpu_seconds() - c0) / (time.monotonic() - t0) * 100
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop.remove_reader(notify.fd)
        notify.close()


# -- 1. commit -> run start ----------------------------------------------------------------------


@dataclass
class Sample:
    repo: str
    commit_exit: float = 0.0  # wall clock when `git commit` exited
    commit_ms: float = 0.0
    run_id: int | None = None
    at: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (event ts, arrival)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def after_exit(self, kind: str, arrival: bool = False) -> float | None:
        if kind not in self.at:
            return None
        return (self.at[kind][1 if arrival else 0] - self.commit_exit) * 1000


class Recorder:
    """Follows the engine's events and notes when each sample's events happened and arrived."""

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}

    async def follow(self, engine: Engine) -> None:
        async for event in engine.subscribe():
            self.note(event, time.time())

    def note(self, event: Event, arrival: float) -> None:
        sample = self.samples.get(event.repo or "")
        if sample is None:
            return
        kind = event.kind
        if kind == "run.queued" and sample.run_id is None:
            sample.run_id = event.run_id
        elif kind != "refs" and (event.run_id is None or event.run_id != sample.run_id):
            return
        sample.at.setdefault(kind, (event.ts, arrival))
        if kind == "run.started":
            sample.started.set()
        elif kind == "run.finished":
            sample.finished.set()


class Committer:
    """A helper process that runs `git commit --allow-empty` on request, like a developer in
    another terminal. It times the commit itself, so the exit time is not skewed by this
    process's event loop holding the GIL while the engine reacts (which a thread would be)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--committer",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def commit(self, path: Path, message: str) -> tuple[float, float]:
        """(wall clock when `git commit` exited, its duration in ms)."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout
        self.proc.stdin.write(f"{path}\t{message}\n".encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the committer process stopped")
        exit_at, duration = line.split()
        return float(exit_at), float(duration)

    async def aclose(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            await self.proc.wait()


def committer_main() -> None:
    """The committer process: `path<TAB>message` lines in, `exit_time duration_ms` lines out."""
    for line in sys.stdin:
        path, message = line.rstrip("\n").split("\t", 1)
        start = time.perf_counter()
        run(["git", "-C", path, "commit", "-q", "--allow-empty", "-m", message])
        duration = (time.perf_counter() - start) * 1000
        print(f"{time.time():.6f} {duration:.3f}", flush=True)


async def measure_latency(
    engine: Engine, fx: fixtures.Fixtures, n: int, seed: int, warmup: int = 3
) -> tuple[list[Sample], int]:
    recorder = Recorder()
    follower = asyncio.create_task(recorder.follow(engine))
    committer = Committer()
    await committer.start()
    await asyncio.sleep(0.2)  # let the subscription register
    rng = random.Random(seed)
    chosen = rng.sample(fx.repo_names, n + warmup)  # distinct repos: no run waits for its lane
    samples: list[Sample] = []
    missed = 0
    try:
        for i, name in enumerate(chosen):
            sample = Sample(name)
            recorder.samples[name] = sample
            sample.commit_exit, sample.commit_ms = await committer.commit(
                fx.repo_path(name), f"bench commit {i}"
            )
            try:
                await asyncio.wait_for(sample.started.wait(), 10.0)
            except TimeoutError:
                missed += 1
            if i >= warmup:
                samples.append(sample)
            await asyncio.sleep(rng.uniform(0.05, 0.10))  # spaced: latency, not queueing
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.finished.wait() for s in samples)), 60.0)
    finally:
        await committer.aclose()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    return samples, missed


def latency_section(samples: list[Sample], missed: int) -> Section:
    commit_ms = [s.commit_ms for s in samples]
    base = statistics.median(commit_ms)

    def series(kind: str, arrival: bool = False) -> list[float]:
        return [v for s in samples if (v := s.after_exit(kind, arrival)) is not None]

    def started_series(arrival: bool) -> list[float]:
        # a run that never started counts as the 10 s wait, so p99 cannot hide it
        return [
            v if (v := s.after_exit("run.started", arrival)) is not None else 10_000.0
            for s in samples
        ]

    started = started_series(arrival=False)
    arrived = started_series(arrival=True)
    label = "median `git commit --allow-empty`"
    rows = [
        row(
            "`git commit --allow-empty` duration (the baseline)",
            base,
            "ms",
            stats=summary(commit_ms),
        ),
        row(
            "commit exit → `run.started` (event time), p50",
            statistics.median(started),
            "ms",
            baseline=base,
            baseline_label=label,
            max_ratio=5.0,
            stats=summary(started),
        ),
        row(
            "commit exit → `run.started` (event time), p99",
            percentile(started, 99),
            "ms",
            max_value=250.0,
        ),
        row(
            "commit exit → `run.started` delivered to a subscriber, p50",
            statistics.median(arrived),
            "ms",
            baseline=base,
            baseline_label=label,
            max_ratio=5.0,
            stats=summary(arrived),
        ),
        row(
            "commit exit → `run.started` delivered to a subscriber, p99",
            percentile(arrived, 99),
            "ms",
            max_value=250.0,
        ),
    ]
    for kind, what in (
        ("refs", "ref change recorded (`refs` event)"),
        ("run.queued", "run queued (`run.queued`)"),
        ("run.planned", "pipeline read, plan recorded (`run.planned`)"),
        ("stage.started", "checkout made, stage started (`stage.started`)"),
    ):
        values = series(kind)
        if values:
            rows.append(
                row(
                    f"breakdown: commit exit → {what}, p50",
                    statistics.median(values),
                    "ms",
                    baseline=base,
                    baseline_label=label,
                    stats=summary(values),
                )
            )
    step_started = series("step.started")
    if step_started:
        rows.append(
            row(
                "commit exit → step process started (`step.started`), p50 (T1)",
                statistics.median(step_started),
                "ms",
                baseline=base,
                baseline_label=label,
                max_ratio=3.0,
                target="≤ 3× baseline (T1)",
                stats=summary(step_started),
            )
        )
        rows.append(
            row(
                "commit exit → step process started (`step.started`), p99 (T1)",
                percentile(step_started, 99),
                "ms",
                max_value=100.0,
                target="≤ 100 ms (T1)",
            )
        )
    durations = [
        (s.at["run.finished"][0] - s.at["run.started"][0]) * 1000
        for s in samples
        if "run.finished" in s.at and "run.started" in s.at
    ]
    if durations:
        rows.append(
            row(
                "run duration (`run.started` → `run.finished`, one `true` step), p50",
                statistics.median(durations),
                "ms",
                stats=summary(durations),
            )
        )
    notes = [
        f"{len(samples)} commits by a separate process (which times its own `git commit`), "
        "each into a different random repo of the 1,000, "
        "50–100 ms apart (randomised), the next commit only after the previous run started; "
        "the engine also executes every run (one `true` step) while later commits land.",
        "git moves the ref a millisecond or two before `git commit` exits, so the engine "
        "can react before the exit: that is why some times are negative.",
    ]
    if missed:
        notes.append(f"{missed} commit(s) saw no `run.started` within 10 s.")
    return {
        "id": "latency",
        "title": "Commit → run start, 1,000 repos tracked",
        "rows": rows,
        "notes": notes,
    }


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name (Linux /proc)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                name = names.get(int(tid), f"tid {tid}")
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


async def measure_idle(seconds: float) -> tuple[float, dict[str, float]]:
    """(% of a core used by the whole process, % by each thread) over `seconds` of quiet."""
    await asyncio.sleep(2.0)  # let start-up work settle
    before = thread_cpu()
    c0, t0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    total = (cpu_seconds() - c0) / elapsed * 100
    after = thread_cpu()
    by_thread = {name: (after[name] - before.get(name, 0.0)) / elapsed * 100 for name in after}
    return total, by_thread


@dataclass
class StartTiming:
    total_ms: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    git_calls: collections.Counter[str] = field(default_factory=collections.Counter)
    store_calls: collections.Counter[str] = field(default_factory=collections.Counter)

    def counts_text(self) -> str:
        git_text = (
            ", ".join(f"`git {k}` × {v}" for k, v in self.git_calls.most_common()) or "no git"
        )
        store_text = ", ".join(f"`{k}` × {v}" for k, v in self.store_calls.most_common())
        return f"{git_text}; store transactions {store_text or 'none counted'}"


async def timed_start(engine: Engine) -> StartTiming:
    """`await engine.start()`, timing its phases by wrapping the engine's own methods and
    counting the git commands and ref-saving transactions it runs on the way."""
    timing = StartTiming()

    def wrap_async(obj: Any, attr: str, label: str) -> None:
        original = getattr(obj, attr)

        async def timed(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*a, **kw)
            finally:
                timing.phases[label] = (time.perf_counter() - start) * 1000

        setattr(obj, attr, timed)

    def wrap_sync(obj: Any, attr: str, label: str) -> None:
        original = getattr(obj, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                timing.phases[label] = (time.perf_counter() - start) * 1000

        setattr(obj, attr, timed)

    wrap_async(engine.db, "open", "open the store")
    wrap_async(engine, "_recover", "recovery (`_recover`)")
    wrap_sync(
        engine,
        "_remove_stale_checkouts",
        "recovery: stale checkouts and worktree prune (`_remove_stale_checkouts`, thread)",
    )
    wrap_async(engine.feed, "start", "event feed start")
    wrap_async(engine, "_scan_all", "initial scan of every repo (`_scan_all`)")
    wrap_sync(engine, "_read_all", "initial scan: read every repo's refs (`_read_all`, thread)")
    wrap_sync(engine, "_start_inotify", "inotify setup (`_start_inotify`)")
    real_git, real_save_many, real_acquire = gitio.git, runstate.save_refs_many, lease.acquire

    def timed_acquire(*a: Any, **kw: Any) -> None:
        start = time.perf_counter()
        try:
            real_acquire(*a, **kw)
        finally:
            timing.phases["take the lease (`lease.acquire`, store thread)"] = (
                time.perf_counter() - start
            ) * 1000

    def counting_git(repo: Path | None, *args: str, **kw: Any) -> str:
        timing.git_calls[args[0] if args else "?"] += 1
        return real_git(repo, *args, **kw)

    def counting_save_many(store: Store, changes: dict[str, Any]) -> None:
        timing.store_calls[f"save_refs_many ({len(changes)} repos)"] += 1
        real_save_many(store, changes)

    gitio.git = counting_git
    runstate.save_refs_many = counting_save_many  # save_refs goes through it too
    lease.acquire = timed_acquire
    try:
        start = time.perf_counter()
        await engine.start()
        timing.total_ms = (time.perf_counter() - start) * 1000
    finally:
        gitio.git = real_git
        runstate.save_refs_many = real_save_many
        lease.acquire = real_acquire
    return timing


# -- 2. detection sweep ---------------------------------------------------------------------------


def one_pass_refs(common: str) -> tuple[dict[str, str], list[str], tuple[int, ...]]:
    """What-if for the engine's `_read`: a repo's branches, stamp paths and stamp in one pass
    over string paths (no pathlib, no separate os.walk; one scandir of refs/heads serves both
    the branches and the sub-directories to stamp). Same results as `_read` on the fixtures."""
    packed, heads = common + "/packed-refs", common + "/refs/heads"
    branches: dict[str, str] = {}
    try:
        with open(packed, "rb") as fh:
            stamp = [os.fstat(fh.fileno()).st_mtime_ns]
            for raw in fh:
                if raw[:1] in (b"#", b"^"):
                    continue
                parts = raw.rstrip(b"\n").split(b" ", 1)
                if len(parts) == 2 and parts[1].startswith(b"refs/heads/"):
                    branches[parts[1][11:].decode("utf-8", "surrogateescape")] = parts[0].decode(
                        "ascii", "replace"
                    )
    except FileNotFoundError:
        stamp = [0]
    paths = [packed, heads]
    stack = [(heads, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            if directory == heads:
                stamp.append(0)
            continue
        with entries:
            if directory == heads:
                stamp.append(os.stat(heads).st_mtime_ns)
            for entry in entries:
                name = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, name + "/"))
                    paths.append(entry.path)
                    stamp.append(entry.stat(follow_symlinks=False).st_mtime_ns)
                elif not entry.name.endswith(".lock"):
                    try:
                        with open(entry.path, "rb") as fh:
                            value = fh.read(128).strip().decode("ascii", "replace")
                    except (FileNotFoundError, IsADirectoryError):
                        continue
                    if gitio.SHA.match(value):
                        branches[name] = value
    return ({n: sha for n, sha in branches.items() if gitio.SHA.match(sha)}, paths, tuple(stamp))


async def measure_sweep(engine: Engine, git_dirs: list[str], reps: int) -> Section:
    async def timed(fn: Callable[[], Any], is_async: bool) -> float:
        start = time.perf_counter()
        if is_async:
            await fn()
        else:
            fn()
        return (time.perf_counter() - start) * 1000

    states = [st for st in engine._repos.values() if st.common_dir is not None]
    commons = [str(st.common_dir) for st in states]
    for st, common in zip(states, commons, strict=True):  # the what-if reads what _read reads
        assert st.common_dir is not None
        assert one_pass_refs(common)[0] == gitio.read_branches(st.common_dir), common
    contenders: list[tuple[Callable[[], Any], bool]] = [
        (lambda: engine.sweep(force=False), True),
        (lambda: engine.sweep(force=True), True),
        (lambda: read_all_refs(git_dirs), False),
        (lambda: stat_all_refs(git_dirs), False),
        (lambda: [engine._read(st) for st in states], False),
        (lambda: [one_pass_refs(c) for c in commons], False),
    ]
    times: list[list[float]] = [[] for _ in contenders]
    for i in range(reps + 2):
        order = list(range(len(contenders)))
        if i % 2:
            order.reverse()
        for which in order:
            fn, is_async = contenders[which]
            elapsed = await timed(fn, is_async)
            if i >= 2:  # two warm-up rounds
                times[which].append(elapsed)
        await asyncio.sleep(0.05)
    sweeps, forced, reads, stats_, reads_now, one_pass = times
    n = len(engine._repos)
    read_base = statistics.median(reads)
    stat_base = statistics.median(stats_)
    sweep = statistics.median(sweeps)
    forced_ms = statistics.median(forced)
    read_label = "read refs/heads/main or packed-refs × 1,000"
    stat_label = "os.stat loose ref + packed-refs × 1,000"
    rows = [
        row(
            "poll sweep (`await engine.sweep()`, nothing changed) against a stat-only loop (T2)",
            sweep,
            "ms",
            baseline=stat_base,
            baseline_label=stat_label,
            max_ratio=1.5,
            target="≤ 1.5× baseline (T2)",
            stats=summary(sweeps),
            baseline_stats=summary(stats_),
        ),
        row(
            "same poll sweep against reading every ref",
            sweep,
            "ms",
            baseline=read_base,
            baseline_label=read_label,
            max_ratio=2.0,
            stats=summary(sweeps),
            baseline_stats=summary(reads),
        ),
        row(
            "forced sweep (`await engine.sweep(force=True)`, every 30th: re-reads every repo's "
            "refs) against reading every ref (T2: ref check ≤ 2× a raw read)",
            forced_ms,
            "ms",
            baseline=read_base,
            baseline_label=read_label,
            max_ratio=2.0,
            target="≤ 2× baseline (T2)",
            stats=summary(forced),
            baseline_stats=summary(reads),
        ),
        row(
            "breakdown: the forced sweep's reading part, `engine._read(state)` × 1,000",
            statistics.median(reads_now),
            "ms",
            baseline=read_base,
            baseline_label=read_label,
            stats=summary(reads_now),
        ),
        row(
            "what-if: the same reads in one pass over string paths (proposed `_read`)",
            statistics.median(one_pass),
            "ms",
            baseline=read_base,
            baseline_label=read_label,
            stats=summary(one_pass),
        ),
        row(
            "per repo: poll sweep",
            sweep / n * 1000,
            "µs",
            baseline=stat_base / n * 1000,
            baseline_label="two os.stat per repo",
        ),
        row(
            "per repo: forced sweep",
            forced_ms / n * 1000,
            "µs",
            baseline=read_base / n * 1000,
            baseline_label="ref file read per repo",
        ),
    ]
    return {
        "id": "sweep",
        "title": "Detection sweep over 1,000 repos",
        "rows": rows,
        "notes": [
            f"{reps} sweeps of each, interleaved (order reversed every other round), "
            "medians, after 2 warm-up rounds; warm page cache. Runs inside the live "
            "engine of benchmark 1 (its own poll task keeps running). The engine's poll "
            "sweep stats `packed-refs` and the `refs/heads` directory (plus any "
            "sub-directories) of each repo and reads refs only where a stamp moved."
        ],
    }


# -- 1 + 2 together: they share one running engine ----------------------------------------------


async def engine_benchmarks(fx: fixtures.Fixtures, args: argparse.Namespace) -> list[Section]:
    ws = read_workspace(fx.many_ws)
    git_dirs = [str(fx.repo_path(n) / ".git") for n in fx.repo_names]
    sections: list[Section] = []
    want = set(args.only)

    setup_base = statistics.median([baseline_setup(git_dirs) for _ in range(3)])
    # the engine's safety-net sweep interval when inotify works (core/engine.py `_poll`)
    sweep_every = max(10 * ws.settings.poll_interval, 5.0)
    idle_base = await baseline_idle_cpu(git_dirs, args.idle_seconds, sweep_every)

    fresh_state(ws)
    engine = Engine(ws)
    cold = await timed_start(engine)
    await engine.aclose()

    engine = Engine(ws)
    warm = await timed_start(engine)
    try:
        idle, by_thread = await measure_idle(args.idle_seconds)
        setup_label = "read 1,000 refs + 2,000 inotify watches (minimal watcher)"
        rows = [
            row(
                "engine start, empty state (`await Engine(ws).start()`)",
                cold.total_ms,
                "ms",
                baseline=setup_base,
                baseline_label=setup_label,
                max_value=500.0,
                target="≤ 500 ms (T2)",
            ),
            row(
                "engine start, state already recorded (restart)",
                warm.total_ms,
                "ms",
                baseline=setup_base,
                baseline_label=setup_label,
                max_value=500.0,
                target="≤ 500 ms (T2)",
            ),
        ]
        for label, timing in (("empty state", cold), ("restart", warm)):
            for phase, ms in timing.phases.items():
                rows.append(row(f"start-up breakdown ({label}): {phase}", ms, "ms"))
        rows.append(
            row(
                f"idle engine CPU over {args.idle_seconds:g} s",
                idle,
                "% of a core",
                baseline=idle_base,
                baseline_label=f"minimal watcher: inotify + stat sweep every "
                f"{sweep_every:g} s (the engine's interval)",
                max_value=1.0,
                target="≤ 1% of a core (T2)",
            )
        )
        for thread, pct in sorted(by_thread.items(), key=lambda kv: -kv[1]):
            if pct >= 0.05:
                rows.append(row(f"idle CPU breakdown: thread {thread}", pct, "% of a core"))
        sections.append(
            {
                "id": "watch",
                "title": "Watching 1,000 repos: start-up and idle CPU",
                "rows": rows,
                "notes": [
                    "Start-up includes taking the lease, recovery, recording every repo's "
                    "branches and setting up inotify; the baseline is the floor for the last "
                    "two. Phases are timed by wrapping the engine's own methods. Git and "
                    f"store calls during the empty-state start: {cold.counts_text()}; "
                    f"restart: {warm.counts_text()}.",
                    "Idle CPU is this process (all threads) by getrusage, measured 2 s after "
                    "start with no commits; per-thread figures from /proc/self/task.",
                ],
            }
        )
        if "latency" in want:
            samples, missed = await measure_latency(engine, fx, args.commits, args.seed)
            sections.insert(0, latency_section(samples, missed))
        if "sweep" in want:
            sections.append(await measure_sweep(engine, git_dirs, args.reps))
    finally:
        await engine.aclose()
    return sections


# -- 3. pending commits -----------------------------------------------------------------------------


def record_deployment(store: Store, env: str, sha: str) -> None:
    """Make `sha` the deployed commit of (history, env) through the engine's own transitions.

    The plan is the big repo's whole pipeline (check, deploy-dev, deploy-prod) with only the
    `env` stage selected, so `Services.status` still sees both environments as deploy targets
    (it skips environments the latest main run's plan does not deploy to)."""
    run_id = runstate.queue_run(
        store,
        repo="history",
        branch="main",
        ref="refs/heads/main",
        sha=sha,
        on_main=True,
        trigger="manual",
        actor="bench",
    )
    plan = [("check", None, False, [("check", "true")])]
    plan += [(f"deploy-{e}", e, e == env, [("deploy", "true")]) for e in ("dev", "prod")]
    stages = runstate.create_plan(store, run_id, "bench", plan)
    runstate.claim_run(store, run_id, "bench")
    runstate.record_deployment(store, next(s["id"] for s in stages if s["environment"] == env))
    runstate.finish_run(store, run_id, "succeeded")


def git_without_polling(
    repo: Path | None,
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> str:
    """A what-if `gitio.git`: the same command, but the timeout is a timer that kills git
    instead of `subprocess.run(timeout=...)`, whose final wait polls `waitpid` with sleeps of
    1, 2, 4... ms (about 1 ms lost on every call here)."""
    argv = ["git", "-c", "protocol.ext.allow=never", "-c", "core.fsmonitor=false"]
    if repo is not None:
        argv += ["-C", str(repo)]
    argv += list(args)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **gitio.GIT_ENV, **(env or {})},
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        out, err = proc.communicate(input)
    finally:
        timer.cancel()
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]} failed in {repo}: {err.decode(errors='replace')}")
    return out.decode("utf-8", "surrogateescape")


@contextlib.contextmanager
def patched_git() -> Iterator[None]:
    real = gitio.git
    gitio.git = git_without_polling
    try:
        yield
    finally:
        gitio.git = real


def bench_pending(fx: fixtures.Fixtures, reps: int) -> Section:
    ws = read_workspace(fx.big_ws)
    fresh_state(ws)
    repo = str(fx.big_repo)
    main = git(fx.big_repo, "rev-parse", "main").strip()
    prod_sha = git(fx.big_repo, "rev-parse", "main~1000").strip()
    dev_sha = git(fx.big_repo, "rev-parse", "main~100").strip()
    fmt = "--format=%H%x1f%an%x1f%ae%x1f%ct%x1f%s"
    rows = []
    with Store(ws.db_path, session="bench").open() as store:
        record_deployment(store, "prod", prod_sha)
        services = Services(ws, store)
        got = services.pending("history", "prod", limit=None)
        assert len(got) == 1000, f"expected 1,000 pending commits, got {len(got)}"

        def git_log(*extra: str, env: dict[str, str] | None = None) -> list[list[str]]:
            out = run(
                ["git", "-C", repo, "log", fmt, *extra, f"{prod_sha}..{main}"], env=env
            ).stdout
            return [line.split("\x1f") for line in out.decode().splitlines()]

        def count(rng: str) -> int:
            return int(run(["git", "-C", repo, "rev-list", "--count", rng]).stdout)

        mine, base = interleaved(
            lambda: services.pending("history", "prod", limit=None), git_log, reps
        )
        rows.append(
            row(
                "`Services.pending(limit=None)`, 1,000 pending",
                statistics.median(mine),
                "ms",
                baseline=statistics.median(base),
                baseline_label="`git log --format=%H…%s deployed..main` + split (GIT_FLUSH=0)",
                max_ratio=1.5,
                stats=summary(mine),
                baseline_stats=summary(base),
            )
        )
        flushing = {k: v for k, v in git_env().items() if k != "GIT_FLUSH"}  # git's default
        slow, base = interleaved(lambda: git_log(env=flushing), git_log, reps)
        rows.append(
            row(
                "why core sets GIT_FLUSH=0: `git log` as above with git's default "
                "per-record flushing to a pipe",
                statistics.median(slow),
                "ms",
                baseline=statistics.median(base),
                baseline_label="same `git log` with GIT_FLUSH=0",
                stats=summary(slow),
                baseline_stats=summary(base),
            )
        )
        mine, base = interleaved(
            lambda: services.pending("history", "prod"), lambda: git_log("--max-count=300"), reps
        )
        rows.append(
            row(
                "`Services.pending()` first page (300 of 1,000)",
                statistics.median(mine),
                "ms",
                baseline=statistics.median(base),
                baseline_label="same `git log` with `--max-count=300`",
                max_ratio=1.5,
                stats=summary(mine),
                baseline_stats=summary(base),
            )
        )

        # status(): Services may cache (base, head) -> count; a fresh Services per call
        # measures the first look (a new commit, a new console), a reused one the refresh
        def status_cold() -> dict[str, Any]:
            return Services(ws, store).status()

        # prod 1,000 behind, dev never deployed (its pending range is all 50,000 commits)
        status_reps = max(5, reps // 2)
        both_full = (f"{prod_sha}..{main}", main)
        mine, base = interleaved(status_cold, lambda: [count(r) for r in both_full], status_reps)
        rows.append(
            row(
                "`Services.status()`: prod 1,000 behind, dev never deployed (50,000)",
                statistics.median(mine),
                "ms",
                baseline=statistics.median(base),
                baseline_label="`git rev-list --count` of both ranges",
                max_ratio=1.2,
                target="≤ 1.2× baseline (T3)",
                stats=summary(mine),
                baseline_stats=summary(base),
            )
        )
        record_deployment(store, "dev", dev_sha)
        status = status_cold()["repos"][0]["environments"]
        assert status["prod"]["pending"] == 1000 and status["dev"]["pending"] == 100, status
        both = (f"{prod_sha}..{main}", f"{dev_sha}..{main}")
        mine, base = interleaved(status_cold, lambda: [count(r) for r in both], reps)
        rows.append(
            row(
                "`Services.status()`: prod 1,000 behind, dev 100 behind",
                statistics.median(mine),
                "ms",
                baseline=statistics.median(base),
                baseline_label="`git rev-list --count` of both ranges",
                max_ratio=1.2,
                target="≤ 1.2× baseline (T3)",
                stats=summary(mine),
                baseline_stats=summary(base),
            )
        )
        with patched_git():
            mine, base = interleaved(status_cold, lambda: [count(r) for r in both], reps)
        rows.append(
            row(
                "what-if: the same `status()` with core's git calls not polling for "
                "git's exit (proposed `gitio.git` fix)",
                statistics.median(mine),
                "ms",
                baseline=statistics.median(base),
                baseline_label="as above",
                stats=summary(mine),
                baseline_stats=summary(base),
            )
        )
        services.status()
        mine, base = interleaved(services.status, lambda: [count(r) for r in both], reps)
        rows.append(
            row(
                "`Services.status()` again on the same Services (refresh, nothing new)",
                statistics.median(mine),
                "ms",
                baseline=statistics.median(base),
                baseline_label="`git rev-list --count` of both ranges",
                max_ratio=1.2,
                target="≤ 1.2× baseline (T3)",
                stats=summary(mine),
                baseline_stats=summary(base),
            )
        )
    return {
        "id": "pending",
        "title": "Pending commits on a 50,000-commit history",
        "rows": rows,
        "notes": [
            f"{reps} interleaved calls each (status with dev never deployed: "
            f"{max(5, reps // 2)}), medians, after 2 warm-up calls; no commit-graph. "
            "Deployments recorded through core.runstate (queue_run, create_plan, "
            "claim_run, record_deployment). `status()` rows use a new `Services` per "
            "call (nothing cached) unless they say otherwise. Baseline git runs with "
            "GIT_FLUSH=0 (fully buffered output, as core's own git calls now do) and "
            "without the `-c` options core adds."
        ],
    }


# -- main ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Engine benchmarks with same-run baselines.")
    parser.add_argument("--root", type=Path, default=fixtures.DEFAULT_ROOT)
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=["latency", "sweep", "pending"],
        help="comma-separated subset of latency,sweep,pending",
    )
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    if sys.argv[1:] == ["--committer"]:
        committer_main()
        return
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    load_before = list(os.getloadavg())
    fx = fixtures.build(args.root)
    sections: list[Section] = []
    if {"latency", "sweep"} & set(args.only):
        sections += asyncio.run(engine_benchmarks(fx, args))
    if "pending" in args.only:
        sections.append(bench_pending(fx, args.reps))
    for section in sections:
        print_section(section)
    everything = {"latency", "sweep", "pending"} <= set(args.only)
    # a partial run must not replace the full results that docs/BENCHMARKS.md is made from
    name = "bench_engine" if everything else "bench_engine-" + "-".join(args.only)
    path = write_results(name, sections, started, load_before)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
