"""`ahead` with timing probes: the real entry point (`tui.launch.main`), instrumented.

    python bench/console_probe.py --workspace DIR     # what `.venv/bin/ahead --workspace DIR` does

Reports, as text lines on the file descriptor named by $AHEAD_BENCH_PROBE_FD (monotonic clock,
the same on every process of the machine):

    mark NAME T          a start-up milestone (imports done, app mounted, first frame, session
                         started, overview read from the store, pending counts read, ...)
    w T N                `Log.write_lines` wrote N lines (the run screen's log pane)
    k T                  the run screen's follow action ran (the `f` key reached it)
    f T                  the first frame displayed after that (written to the terminal)

Only wraps methods (timing, then the original); nothing the console does changes.

With $AHEAD_BENCH_SAMPLE=FILE it also samples every thread's stack every 2 ms (a poor man's
wall-clock profiler, to see where a slow case spends its time) and writes the busiest
functions per thread to FILE when the console exits:

    AHEAD_BENCH_SAMPLE=/tmp/samples.txt python bench/console_probe.py --workspace DIR
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

STARTED = time.monotonic()
_FD = int(os.environ["AHEAD_BENCH_PROBE_FD"]) if os.environ.get("AHEAD_BENCH_PROBE_FD") else None
_seen: set[str] = set()


def report(text: str) -> None:
    if _FD is not None:
        os.write(_FD, text.encode())


def mark(name: str, once: bool = True) -> None:
    if once and name in _seen:
        return
    _seen.add(name)
    report(f"mark {name} {time.monotonic():.6f}\n")


def around(owner: Any, attr: str, before: str | None = None, after: str | None = None) -> None:
    """Mark `before` when owner.attr is called and `after` when it returns (sync or async)."""
    import inspect

    original: Callable[..., Any] = getattr(owner, attr)
    if inspect.iscoroutinefunction(original):

        @wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                mark(before)
            result = await original(*args, **kwargs)
            if after:
                mark(after)
            return result

        setattr(owner, attr, async_wrapper)
    else:

        @wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                mark(before)
            result = original(*args, **kwargs)
            if after:
                mark(after)
            return result

        setattr(owner, attr, wrapper)


def start_sampler(path: str, every: float = 0.002) -> None:
    """Count, per thread, the functions on the stack (inclusive) and on top (exclusive)."""
    import atexit
    import collections
    import threading

    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    exclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    samples: collections.Counter[str] = collections.Counter()

    def where(code: Any) -> str:
        return f"{Path(code.co_filename).name}:{code.co_name}"

    def sample() -> None:
        me = threading.get_ident()
        while True:
            time.sleep(every)
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = f"{names.get(ident, '?')} ({ident})"
                samples[thread] += 1
                exclusive[thread][where(frame.f_code)] += 1
                seen = set()
                while frame is not None:
                    key = where(frame.f_code)
                    if key not in seen:
                        seen.add(key)
                        inclusive[thread][key] += 1
                    frame = frame.f_back

    def dump() -> None:
        with open(path, "w") as out:
            for thread, total in samples.most_common():
                out.write(f"== {thread}: {total} samples\n-- exclusive\n")
                for key, n in exclusive[thread].most_common(25):
                    out.write(f"{100 * n / total:6.1f}%  {key}\n")
                out.write("-- inclusive\n")
                for key, n in inclusive[thread].most_common(40):
                    out.write(f"{100 * n / total:6.1f}%  {key}\n")

    atexit.register(dump)
    threading.Thread(target=sample, name="bench-sampler", daemon=True).start()


def install() -> None:
    if os.environ.get("AHEAD_BENCH_SWITCH_INTERVAL"):  # a what-if knob for diagnosis
        sys.setswitchinterval(float(os.environ["AHEAD_BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("AHEAD_BENCH_SAMPLE"):
        start_sampler(os.environ["AHEAD_BENCH_SAMPLE"])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    mark("probe started")
    from textual.app import App
    from textual.widgets import Log

    import tui.launch
    from core.api.session import ClientSession
    from core.engine import Engine
    from tui.app import AheadApp
    from tui.screens.overview import OverviewScreen

    mark("imports done")
    around(AheadApp, "on_mount", before="app mounting")
    around(ClientSession, "start", before="session start", after="session started")
    around(Engine, "start", before="engine start", after="engine started")
    around(OverviewScreen, "_rebuild", after="overview table built")

    overview = ClientSession.overview

    @wraps(overview)
    async def timed_overview(
        self: ClientSession, only: list[str] | None = None, pending: bool = True
    ) -> Any:
        result = await overview(self, only, pending)
        mark("overview read (store)" if not pending else "pending counts read")
        return result

    ClientSession.overview = timed_overview  # type: ignore[method-assign]

    display = App._display
    action_pending = [False]

    def timed_display(self: App[Any], screen: Any, renderable: Any) -> None:
        display(self, screen, renderable)
        if renderable is not None:
            mark("first frame")
            if action_pending[0]:
                action_pending[0] = False
                report(f"f {time.monotonic():.6f}\n")

    App._display = timed_display  # type: ignore[method-assign]

    write_lines = Log.write_lines

    def counted_write_lines(self: Log, lines: Any, scroll_end: bool | None = None) -> Log:
        lines = list(lines)
        result = write_lines(self, lines, scroll_end)
        report(f"w {time.monotonic():.6f} {len(lines)}\n")
        return result

    Log.write_lines = counted_write_lines  # type: ignore[method-assign]
    from tui.screens.run import RunScreen

    follow = RunScreen.action_follow

    def timed_follow(self: RunScreen) -> None:
        report(f"k {time.monotonic():.6f}\n")
        follow(self)
        action_pending[0] = True

    RunScreen.action_follow = timed_follow  # type: ignore[method-assign]
    sys.exit(tui.launch.main(sys.argv[1:]))


if __name__ == "__main__":
    install()
