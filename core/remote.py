"""Steps on remote runners: a stage with `runner: NAME` runs its steps on a host over SSH.

One `RemoteSteps` per run. For each stage on a remote runner it opens (once per run and runner)
an SSH connection through core.sshclient (host key pinned, the engine's own key), and gives the
stage a fresh directory on the runner holding the code at the run's commit: `git archive` of the
commit streamed over stdin into `mktemp -d` under the runner's `workdir`. The directory is
removed when the next stage starts or the run ends.

Every command string sent over SSH is `shlex.join` of constant scripts (below) and values that
are ours (a directory we created, a number). The step's argv and environment (commit metadata
included) travel over stdin as data: one line per item with every byte outside a small safe
set written as an octal escape, decoded by `printf %b`, never evaluated by a shell.

On the runner the step runs in its own session (`setsid`, so its own process group) with stdin
from /dev/null; its stdout and stderr stream back line by line into the same log sink as local
steps (core.runner.follow + LineBatcher). The wrapper reports the group id on the channel's
stderr. Cancel and timeout send SIGTERM to the remote group over a second channel, wait the
grace period, then SIGKILL. The wrapper also watches its stdin: when the connection dies, sshd
closes it and the wrapper ends the group (TERM, grace, KILL), so nothing outlives the engine
there. A connection lost mid-step marks the step `interrupted`, never succeeded.

Artifacts declared by a step on a remote stage are fetched back after the step succeeds into
the local checkout (the engine then keeps them as for local steps, and later stages see them).
asyncssh is imported only when a remote step runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from core import gitio
from core.aio import wait_at_most
from core.errors import CoreError, NotFound
from core.runner import LineBatcher, LogSink, StepResult, follow, result_of
from core.secrets import Masker
from core.text import one_line
from core.text import size as text_size
from core.workspace import Runner, Workspace

if TYPE_CHECKING:
    import asyncssh

    from core.pipeline import Pipeline, Stage, Step

# Makes a fresh directory under the runner's workdir ($1; "~/..." is the user's home), unpacks
# the tar stream from stdin into it and prints its path.
SETUP = r"""set -eu
base=$1
case $base in "~") base=$HOME ;; "~/"*) base=$HOME/${base#"~/"} ;; esac
mkdir -p -- "$base"
dir=$(mktemp -d "$base/run.XXXXXXXX")
tar -xf - -C "$dir" || { rm -rf -- "$dir"; exit 1; }
printf '%s\n' "$dir"
"""

# Runs one step in directory $1 (grace period $2 seconds). stdin: lines "E NAME VALUE" (export),
# "A - VALUE" (append to argv), then "G -" (go; a request cut short runs nothing); values
# octal-escaped for printf %b. Afterwards stdin stays open: its end (the connection is gone)
# stops the step's process group.
STEP = r"""dir=$1 grace=$2 go=0
shift 2
while IFS=' ' read -r kind name value; do
  case $kind in
    E) v=$(printf '%b' "$value"; printf x); export "$name=${v%x}" ;;
    A) v=$(printf '%b' "$value"; printf x); set -- "$@" "${v%x}" ;;
    G) go=1; break ;;
    *) echo "[ahead] bad request from the engine"; exit 125 ;;
  esac
done
[ "$go" = 1 ] || { echo "[ahead] incomplete request from the engine"; exit 125; }
command -v setsid >/dev/null 2>&1 || { echo "[ahead] the runner has no setsid (util-linux)"; exit 125; }
cd -- "$dir" || exit 125
exec 3<&0
setsid -- "$@" </dev/null 2>&1 3<&- &
pid=$!
printf 'pid %s\n' "$pid" >&2
( cat <&3 >/dev/null 2>&1; kill -s TERM -- "-$pid"; sleep "$grace"; kill -s KILL -- "-$pid"
) </dev/null >/dev/null 2>&1 &
watch=$!
exec 3<&-
wait "$pid"
code=$?
kill -s KILL -- "-$pid" 2>/dev/null
kill "$watch" 2>/dev/null
exit "$code"
"""

# Sends signal $1 to process group $2.
KILL = r"""kill -s "$1" -- "-$2" 2>/dev/null; exit 0"""

# Prints file $2 of directory $1 (a step's artifact).
FETCH = r"""cd -- "$1" && test -f "$2" && exec cat -- "$2" """

FETCH_CHUNK = 1024 * 1024

# Removes a directory SETUP made.
CLEANUP = r"""case $1 in */run.*) rm -rf -- "$1" ;; esac"""

SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=+@%,-")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OPS_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0


class RemoteError(CoreError):
    """Something on the runner went wrong before the step could start."""


def wants(ws: Workspace, runner: str | None) -> bool:
    """Whether a stage with this `runner:` runs here (False) or on a remote runner (True).

    A name the workspace does not know goes remote, where it fails the step with a clear error.
    """
    if runner is None:
        return False
    return not any(r.name == runner and r.kind == "local" for r in ws.runners)


def escape(value: str) -> str:
    """A value as one line of printf %b input: safe bytes as is, every other byte `\\0ooo`."""
    data = value.replace("\x00", "").encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b in SAFE else f"\\0{b:03o}" for b in data)


def request(argv: list[str], env: dict[str, str]) -> bytes:
    """What the STEP wrapper reads from stdin: the environment, the argv, then go."""
    lines = []
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"E {name} {escape(value)}")
    lines += [f"A - {escape(arg)}" for arg in argv]
    lines.append("G -")
    return ("\n".join(lines) + "\n").encode("ascii")


def remote_env(env: dict[str, str], declared: set[str], runner: str) -> dict[str, str]:
    """The step's environment for the runner: what the pipeline declares and the engine's AHEAD_
    variables, not the engine's own process environment (the runner has its own) nor local paths."""
    kept = {k: v for k, v in env.items() if k in declared or k.startswith("AHEAD_")}
    kept.pop("AHEAD_WORKSPACE", None)
    kept["AHEAD_RUNNER"] = runner
    return kept


def exit_code(process: asyncssh.SSHClientProcess[bytes]) -> int | None:
    """The remote exit status; a signal as a negative number like local steps; None if unknown."""
    if process.exit_status is not None and process.exit_status >= 0:
        return process.exit_status
    if process.exit_signal is not None:
        name = process.exit_signal[0]
        with contextlib.suppress(KeyError):
            return -int(signal.Signals["SIG" + name])
        return -1
    return None


class RemoteSteps:
    """The remote side of one run (see the module docstring). `aclose()` never raises."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._dirs: dict[str, tuple[str, str]] = {}  # runner -> (stage, directory on the runner)
        self._lost: list[tuple[Runner, str]] = []  # directories behind a lost connection

    def wants(self, runner: str | None) -> bool:
        return wants(self.ws, runner)

    async def run(
        self,
        run: dict[str, Any],
        pipeline: Pipeline,
        stage: Stage,
        step: Step,
        checkout: Path,
        env: dict[str, str],
        sink: LogSink,
        timeout: float,
        cancel: asyncio.Event,
        grace: float,
        on_start: Callable[[int], Awaitable[None]],
        masker: Masker | None = None,
    ) -> StepResult:
        """Run `step` of `stage` on its runner; output goes to `sink` like a local step's, with the
        secrets of `masker` masked."""
        assert stage.runner is not None
        batcher = LineBatcher(sink, masker)
        try:
            runner = self.ws.runner(stage.runner)
            if runner.ssh is None:
                raise NotFound(f"runner {runner.name!r} is not a remote runner")
            repo_dir = self.ws.repo_dir(self.ws.repo(run["repo"]))
            conn = await self._connect(runner)
            directory = await self._stage_dir(runner, conn, stage.name, repo_dir, run["commit_sha"])
        except CoreError as exc:
            batcher.note(f"[ahead] runner {stage.runner}: {exc}")
            await batcher.close()
            return StepResult("failed", None, str(exc))
        declared = {*pipeline.env, *stage.env, *step.env, *stage.secrets, *step.secrets}
        body = request(list(step.argv), remote_env(env, declared, runner.name))
        result = await self._step(
            runner, conn, directory, body, batcher, timeout, cancel, grace, on_start
        )
        if result.status == "succeeded" and step.artifacts:
            problem = await self._fetch_artifacts(conn, directory, step.artifacts, checkout)
            if problem:
                await sink([(10**9 - 1, time.time(), f"[ahead] {problem}")])
                result = StepResult("failed", result.exit_code, problem)
        return result

    async def _step(
        self,
        runner: Runner,
        conn: asyncssh.SSHClientConnection,
        directory: str,
        body: bytes,
        batcher: LineBatcher,
        timeout: float,
        cancel: asyncio.Event,
        grace: float,
        on_start: Callable[[int], Awaitable[None]],
    ) -> StepResult:
        import asyncssh

        command = shlex.join(["sh", "-c", STEP, "ahead-step", directory, str(max(int(grace), 0))])
        try:
            process = await conn.create_process(command, encoding=None)
            process.stdin.write(body)
        except (OSError, asyncssh.Error) as exc:
            self._forget(runner)
            batcher.note(
                f"[ahead] runner {runner.name}: lost the connection before the step started: {exc}"
            )
            await batcher.close()
            return StepResult("interrupted", None, f"lost the connection to runner {runner.name}")
        pgid = await self._read_pid(process, batcher)
        await on_start(pgid or 0)
        notes = asyncio.ensure_future(self._notes(process, batcher, runner.name))
        lost = False

        async def read(size: int) -> bytes:
            nonlocal lost
            try:
                data: bytes = await process.stdout.read(size)
                return data
            except (OSError, asyncssh.Error):
                lost = True
                return b""

        async def stop() -> None:
            if pgid is None:  # no group yet: ending stdin makes the wrapper stop it
                with contextlib.suppress(OSError, asyncssh.Error):
                    process.stdin.write_eof()
                return
            await self._signal(conn, "TERM", pgid)
            await wait_at_most(process.wait_closed(), grace)
            if process.exit_status is None and process.exit_signal is None:
                await self._signal(conn, "KILL", pgid)

        outcome: str | None = None
        try:
            outcome = await follow(read, batcher, cancel, timeout, grace, stop)
            await wait_at_most(process.wait_closed(), OPS_TIMEOUT)
        finally:
            if process.exit_status is None and process.exit_signal is None and pgid is not None:
                await wait_at_most(asyncio.shield(self._signal(conn, "KILL", pgid)), 5)
            process.close()
            notes.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await notes
            await batcher.close()
        code = exit_code(process)
        if code is None and outcome != "cancelled" or lost:
            self._forget(runner)
            batcher.note(
                f"[ahead] lost the connection to runner {runner.name} ({runner.ssh}) "
                "during the step; its process group is stopped when the runner notices"
            )
            await batcher.close()
            return StepResult("interrupted", None, f"lost the connection to runner {runner.name}")
        return result_of(outcome, code, timeout)

    async def _read_pid(
        self, process: asyncssh.SSHClientProcess[bytes], batcher: LineBatcher
    ) -> int | None:
        """The step's process group id, from the wrapper's first control line on stderr."""
        import asyncssh

        async def pid() -> int | None:
            while True:
                line = await process.stderr.readline()
                if not line:
                    return None
                text = line.decode("utf-8", "replace").rstrip("\n")
                if re.fullmatch(r"pid [1-9][0-9]{0,9}", text):
                    return int(text[4:])
                batcher.note(f"[runner] {text}")

        try:
            return await wait_at_most(pid(), OPS_TIMEOUT)
        except (OSError, asyncssh.Error):
            return None

    async def _notes(
        self, process: asyncssh.SSHClientProcess[bytes], batcher: LineBatcher, name: str
    ) -> None:
        """Anything else the runner writes on the control channel goes to the log, marked."""
        while line := await process.stderr.readline():
            batcher.note(f"[runner {name}] {line.decode('utf-8', 'replace').rstrip()}")

    async def _signal(self, conn: asyncssh.SSHClientConnection, sig: str, pgid: int) -> None:
        """Signal the remote process group over a channel of its own."""
        import asyncssh

        with contextlib.suppress(OSError, asyncssh.Error):
            await wait_at_most(
                conn.run(shlex.join(["sh", "-c", KILL, "ahead-kill", sig, str(pgid)]), check=False),
                OPS_TIMEOUT,
            )

    async def _connect(self, runner: Runner) -> asyncssh.SSHClientConnection:
        from core import sshclient

        assert runner.ssh is not None
        conn = self._conns.get(runner.name)
        if conn is None or conn.is_closed():
            conn = await sshclient.connect(self.ws.state_dir, runner.ssh, CONNECT_TIMEOUT)
            self._conns[runner.name] = conn
        return conn

    def _forget(self, runner: Runner) -> None:
        conn = self._conns.pop(runner.name, None)
        current = self._dirs.pop(runner.name, None)
        if current is not None:
            self._lost.append((runner, current[1]))
        if conn is not None:
            conn.abort()

    async def _stage_dir(
        self,
        runner: Runner,
        conn: asyncssh.SSHClientConnection,
        stage: str,
        repo_dir: Path,
        sha: str,
    ) -> str:
        """The stage's directory on the runner, made (with the code) at its first step."""
        current = self._dirs.get(runner.name)
        if current is not None and current[0] == stage:
            return current[1]
        if current is not None:
            await self._remove(conn, current[1])
            del self._dirs[runner.name]
        directory = await self._upload(conn, runner, repo_dir, sha)
        self._dirs[runner.name] = (stage, directory)
        return directory

    async def _upload(
        self, conn: asyncssh.SSHClientConnection, runner: Runner, repo_dir: Path, sha: str
    ) -> str:
        """`git archive` of the commit, unpacked into a fresh directory on the runner."""
        import asyncssh

        argv, env = gitio.archive_command(repo_dir, sha)
        git = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert git.stdout is not None and git.stderr is not None
        try:
            async with asyncio.timeout(600):
                process = await conn.create_process(
                    shlex.join(["sh", "-c", SETUP, "ahead-setup", runner.workdir]), encoding=None
                )
                while chunk := await git.stdout.read(65536):
                    process.stdin.write(chunk)
                    await process.stdin.drain()
                process.stdin.write_eof()
                done = await process.wait(check=False)
                git_error = await git.stderr.read()
                await git.wait()
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise RemoteError(f"cannot send the code to {runner.ssh}: {exc}") from None
        finally:
            if git.returncode is None:
                git.kill()
                await git.wait()
        if git.returncode != 0:
            raise RemoteError(f"git archive failed: {git_error.decode('utf-8', 'replace').strip()}")
        out = as_bytes(done.stdout).decode("utf-8", "replace").strip()
        if done.exit_status != 0 or not out.startswith("/") or "\n" in out:
            problem = as_bytes(done.stderr).decode("utf-8", "replace").strip() or out
            raise RemoteError(
                f"cannot prepare a directory under {runner.workdir} on {runner.ssh}: "
                f"{problem[-500:] or f'exit status {done.exit_status}'}"
            )
        return out

    async def _remove(self, conn: asyncssh.SSHClientConnection, directory: str) -> None:
        import asyncssh

        with contextlib.suppress(OSError, asyncssh.Error):
            await wait_at_most(
                conn.run(
                    shlex.join(["sh", "-c", CLEANUP, "ahead-cleanup", directory]), check=False
                ),
                OPS_TIMEOUT,
            )

    async def _fetch_artifacts(
        self,
        conn: asyncssh.SSHClientConnection,
        directory: str,
        artifacts: tuple[str, ...],
        checkout: Path,
    ) -> str | None:
        """Copy each artifact from the runner into the local checkout; a problem, or None."""
        import asyncssh

        cap = self.ws.settings.artifact_max_bytes
        for rel in artifacts:
            try:
                target = local_target(checkout, rel)
                async with asyncio.timeout(600):
                    problem = await self._fetch_one(conn, directory, rel, target, cap)
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                return f"artifact {rel!r}: cannot fetch it from the runner: {exc}"
            except ValueError as exc:
                return f"artifact {rel!r}: {exc}"
            if problem:
                return problem
        return None

    async def _fetch_one(
        self, conn: asyncssh.SSHClientConnection, directory: str, rel: str, target: Path, cap: int
    ) -> str | None:
        """Stream one artifact from the runner into `target` in chunks, stopping past `cap`."""
        process = await conn.create_process(
            shlex.join(["sh", "-c", FETCH, "ahead-fetch", directory, rel]), encoding=None
        )
        try:
            out = await asyncio.to_thread(open_new, target)
            total = 0
            try:
                while chunk := await process.stdout.read(FETCH_CHUNK):
                    total += len(chunk)
                    if total > cap:
                        out.close()
                        await asyncio.to_thread(target.unlink, missing_ok=True)
                        return (
                            f"artifact {one_line(rel)} is over the {text_size(cap)} cap "
                            "(settings.artifact_max_bytes)"
                        )
                    await asyncio.to_thread(out.write, chunk)
            finally:
                out.close()
            done = await process.wait()
        finally:
            process.close()
        if done.exit_status != 0:
            return f"artifact {rel!r} was not produced on the runner"
        return None

    async def aclose(self) -> None:
        """Remove the run's directories on the runners (reconnecting once where the connection
        was lost) and close the connections."""
        for name, (_stage, directory) in list(self._dirs.items()):
            conn = self._conns.get(name)
            if conn is not None and not conn.is_closed():
                await self._remove(conn, directory)
        self._dirs.clear()
        for runner, directory in self._lost:
            with contextlib.suppress(CoreError):
                await self._remove(await self._connect(runner), directory)
        self._lost.clear()
        for conn in self._conns.values():
            conn.close()
            with contextlib.suppress(Exception):
                await wait_at_most(conn.wait_closed(), 5)
        self._conns.clear()


def as_bytes(data: bytes | str | None) -> bytes:
    return data.encode() if isinstance(data, str) else data or b""


def local_target(checkout: Path, rel: str) -> Path:
    """Where a fetched artifact goes in the checkout, refusing any symlink on the way (a repo
    could point one outside the checkout).

    Raises:
        ValueError: the path leaves the checkout or crosses a symlink.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or rel.startswith("/"):
        raise ValueError("is outside the checkout")
    here = checkout
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            raise ValueError(f"{here.relative_to(checkout)} in the checkout is not a directory")
    return checkout.joinpath(*parts)


def open_new(target: Path) -> BinaryIO:
    """(worker thread) `target` opened for writing, never through a symlink."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if target.is_symlink():
            target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")
