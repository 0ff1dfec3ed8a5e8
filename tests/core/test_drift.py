"""Drift, for real: real repos deployed by a real engine into real directories, real command
scripts, and a real asyncssh server on 127.0.0.1 serving a directory over SFTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from core import approvals, drift, sshclient, workspace
from core.api.session import ClientSession
from core.engine import Engine
from core.errors import ConfigError, InvalidRequest
from core.pipeline import parse
from core.services import Actor, Services
from core.workspace import Workspace
from tests.conftest import commit, make_workspace
from tests.core.helpers import query, wait_for, wait_run_done

ROOT = Path(__file__).parents[2]
SITE = {
    "site/index.html": "<h1>hello</h1>\n",
    "site/app.conf": "workers = 4\nport = 8080\n",
    "site/sub/deep.txt": "deep\n",
    "site/run.sh": "#!/bin/sh\necho hi\n",
}


def pipeline(live: Path, drift_yaml: str = "", gate: bool = False) -> str:
    spec = (
        drift_yaml
        or f"""\
drift:
  prod:
    files: site
    live: {live}
"""
    )
    return f"""\
stages:
  - name: build
    steps:
      - run: test -f site/index.html
  - name: deploy-prod
    environment: prod
    steps:
      - run: rm -rf "$LIVE" && mkdir -p "$LIVE" && cp -R site/. "$LIVE"/
env:
  LIVE: {live}
{spec}"""


def drift_ws(tmp_path: Path, drift_yaml: str = "", extra: str = "") -> tuple[Workspace, Path, Path]:
    live = tmp_path / "live"
    ws = make_workspace(
        tmp_path / "ws", {"web": pipeline(live, drift_yaml)}, ("dev", "prod"), extra
    )
    return ws, ws.repo_dir(ws.repo("web")), live


def ship(repo: Path, files: dict[str, str] | None = None) -> str:
    """Commit the site (with an executable script) to main: the running engine deploys it."""
    for rel, text in (files or SITE).items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    os.chmod(repo / "site/run.sh", 0o755)
    return commit(repo, "ship the site")


async def deployed(engine: Engine, repo: Path, name: str = "files:site") -> str:
    """Ship, wait until it is deployed and the check right after the deploy is recorded."""
    sha = ship(repo)
    await wait_for(
        engine,
        "SELECT id FROM runs WHERE status = 'succeeded' AND commit_sha = ?",
        (sha,),
        timeout=30,
    )
    await wait_for(
        engine, "SELECT * FROM drift WHERE target = ? AND commit_sha = ?", (name, sha), timeout=30
    )
    return sha


async def finding(
    ws: Workspace, engine: Engine, name: str = "files:site"
) -> tuple[str, dict[str, Any]]:
    checker = drift.DriftChecker(ws, engine.db)
    targets = await checker.targets("web", "prod", name)
    [(_, found)] = await checker.check(targets, "test")
    return found.state, {"summary": found.summary, **found.detail}


# -- the pipeline's drift: section --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("prod: {files: site}", "drift.prod", 'missing required key "live"'),
        (
            "prod: {files: site, live: /x, command: make}",
            "drift.prod",
            "exactly one of files: or command:",
        ),
        ("prod: {command: make, parse: chef}", "drift.prod.parse", "unknown parser 'chef'"),
        (
            "prod: {files: site, live: /x, host: 'root@-oProxyCommand=x'}",
            "drift.prod.host",
            "is not user@host",
        ),
        (
            "prod: {files: site, live: srv, host: deploy@web1}",
            "drift.prod.live",
            "absolute path on the host",
        ),
        ("prod: {files: ../etc, live: /x}", "drift.prod.files", "outside the repo"),
        ("prod: [{command: a}, {command: b}]", "drift.prod[1]", "used twice"),
        ("staging: {command: make}", "drift.staging", "no environment named 'staging'"),
        ("prod: {files: site, live: /x, every: soon}", "drift.prod.every", "not a duration"),
        ("prod: {command: make, live: /x}", "drift.prod.live", "applies to files: targets only"),
    ],
)
def test_drift_spec_errors_name_the_field(text: str, field: str, problem: str) -> None:
    doc = "stages:\n  - name: a\n    steps: [echo]\ndrift:\n  " + text.replace("\n", "\n  ") + "\n"
    with pytest.raises(ConfigError) as info:
        parse(doc, "p.yml", ("dev", "prod"))
    assert info.value.field == field and problem in info.value.problem, str(info.value)
    assert info.value.line == 5 or info.value.line == 4


def test_drift_specs_parse() -> None:
    p = parse(
        "stages:\n  - name: a\n    steps: [echo]\ndrift:\n  prod:\n    - files: site/\n      live: /srv/www\n"
        "      every: 2m\n    - name: infra\n      command: [terraform, plan, -detailed-exitcode]\n"
        "      parse: terraform\n      timeout: 90s\n",
        "p.yml",
        ("prod",),
    )
    files, infra = p.drift["prod"]
    assert (files.name, files.kind, files.path, files.live, files.every) == (
        "files:site",
        "files",
        "site",
        "/srv/www",
        120,
    )
    assert (infra.kind, infra.argv, infra.parse, infra.timeout) == (
        "command",
        ("terraform", "plan", "-detailed-exitcode"),
        "terraform",
        90,
    )


# -- files on this machine ----------------------------------------------------------------------


async def test_deploy_then_in_sync_then_every_kind_of_change_is_found(tmp_path: Path) -> None:
    ws, repo, live = drift_ws(tmp_path)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
        rows = await query(engine, "SELECT * FROM drift WHERE target = 'files:site'")
        assert rows[0]["state"] == "in_sync", rows[0]["summary"]
        (live / "app.conf").write_text("workers = 64\nport = 8080\n")  # changed
        (live / "sub" / "deep.txt").unlink()  # removed
        (live / "extra.txt").write_text("someone was here\n")  # added
        (live / ".gitignore").write_text("*.log\n")  # added, and hides...
        (live / "debug.log").write_text("...nothing: ignored files are drift too\n")
        os.symlink("/etc/passwd", live / "passwd")  # a link out of the tree
        os.chmod(live / "run.sh", 0o644)  # mode
        state, detail = await finding(ws, engine)
        assert state == "drifted"
        assert detail["changed"] == ["app.conf", "run.sh"]
        assert detail["removed"] == ["sub/deep.txt"]
        assert sorted(detail["added"]) == [".gitignore", "debug.log", "extra.txt", "passwd"]
        assert "-workers = 4\n+workers = 64" in detail["diff"]
        assert "mode differs" in detail["diff"]
        root_line = Path("/etc/passwd").read_text().splitlines()[0]
        assert root_line not in json.dumps(detail), "the link was followed out of the live tree"
        audit = await query(engine, "SELECT action, subject FROM audit WHERE action LIKE 'drift.%'")
        assert [a["action"] for a in audit] == ["drift.detected"]
        # a link inside the desired tree swapped for one pointing out: compared as a link
        (live / "index.html").unlink()
        os.symlink("/etc/passwd", live / "index.html")
        state, detail = await finding(ws, engine)
        assert (
            "index.html" in detail["changed"] and "symbolic link to /etc/passwd" in detail["diff"]
        )
        assert root_line not in json.dumps(detail)


async def test_missing_or_vanished_live_directory_is_unknown_never_in_sync(tmp_path: Path) -> None:
    ws, repo, live = drift_ws(tmp_path)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
        shutil.rmtree(live)
        state, detail = await finding(ws, engine)
        assert state == "unknown" and "does not exist" in detail["summary"]
        live.write_text("a file, not a directory")
        state, _ = await finding(ws, engine)
        assert state == "unknown"


async def test_many_files_and_a_warm_index(tmp_path: Path) -> None:
    ws, repo, live = drift_ws(tmp_path)
    files = {f"site/many/{i // 100}/f{i}.txt": f"{i}\n" for i in range(2000)}
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
        rows = await query(engine, "SELECT * FROM drift WHERE target = 'files:site'")
        assert rows[0]["state"] == "in_sync", rows[0]["summary"]
        (live / "many/7/f777.txt").write_text("tampered\n")
        started = time.perf_counter()
        state, detail = await finding(ws, engine)
        took = time.perf_counter() - started
        assert state == "drifted" and detail["changed"] == ["many/7/f777.txt"], detail
        assert took < 5, took  # generous: the benchmark measures it properly


# -- acknowledge and reconcile ---------------------------------------------------------------------


async def test_acknowledge_until_it_changes_or_expires_and_reconcile_puts_it_back(
    tmp_path: Path,
) -> None:
    ws, repo, live = drift_ws(tmp_path)
    actor = Actor.local(ws)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
        (live / "app.conf").write_text("hand edit\n")
        assert (await finding(ws, engine))[0] == "drifted"
        store = engine.db.store
        with pytest.raises(InvalidRequest, match="needs a reason"):
            await engine.db.call(
                drift.acknowledge, store, "web", "prod", None, " ", 3600, actor.name
            )
        assert await engine.db.call(
            drift.acknowledge, store, "web", "prod", None, "incident 42", 3600, actor.name
        ) == ["files:site"]
        [item] = [
            i for i in await engine.db.call(drift.listing, store) if i["target"] == "files:site"
        ]
        assert item["acknowledged"]["reason"] == "incident 42"
        later = [
            i
            for i in await engine.db.call(drift.listing, store, time.time() + 7200)
            if i["target"] == "files:site"
        ]
        assert later[0]["acknowledged"] is None, "an expired acknowledgement still hides the drift"
        (live / "app.conf").write_text("another hand edit\n")
        await finding(ws, engine)
        [item] = [
            i for i in await engine.db.call(drift.listing, store) if i["target"] == "files:site"
        ]
        assert item["state"] == "drifted" and item["acknowledged"] is None, (
            "a changed drift stays acknowledged"
        )

        session = ClientSession(ws, actor, embed_engine=False)
        await session.start()
        try:
            run_id = await session.drift_reconcile("web", "prod")
            with pytest.raises(InvalidRequest, match="already reconciles"):
                await session.drift_reconcile("web", "prod")
        finally:
            await session.aclose()
        run = await wait_run_done(engine, run_id, timeout=30)
        assert (
            run["status"] == "succeeded"
            and run["trigger"] == "reconcile"
            and run["environment"] == "prod"
        )
        await wait_for(
            engine,
            "SELECT * FROM drift WHERE target = 'files:site' AND state = 'in_sync'",
            timeout=20,
        )
        assert (live / "app.conf").read_text() == SITE["site/app.conf"]
        actions = [a["action"] for a in await query(engine, "SELECT action FROM audit ORDER BY id")]
        assert actions.count("drift.acknowledge") == 1 and "drift.resolved" in actions
        trig = await query(
            engine, "SELECT detail FROM audit WHERE action = 'run.trigger' ORDER BY id DESC LIMIT 1"
        )
        assert json.loads(trig[0]["detail"])["trigger"] == "reconcile"


async def test_reconcile_of_a_gated_environment_waits_for_approval(tmp_path: Path) -> None:
    me = workspace.current_os_user()
    people = f"""\
policies:
  prod:
    approvals: 1
operators:
  - name: alice
    roles: [operator, approver]
    os_users: [{me}]
  - name: bob
    roles: [approver]
"""
    ws, repo, live = drift_ws(tmp_path, extra=people)
    alice = Actor.local(ws, "alice")

    async def approve_as_bob() -> int:
        [change] = await wait_for(
            engine, "SELECT * FROM change_requests WHERE status = 'open'", timeout=30
        )
        verdict = await engine.db.call(
            approvals.decide, engine.db.store, ws, change["id"], "bob", "approve", "ok"
        )
        assert verdict.ok, verdict.message
        return int(change["run_id"])

    async with Engine(ws) as engine:
        ship(repo)
        await wait_run_done(engine, await approve_as_bob(), timeout=30)
        await wait_for(
            engine,
            "SELECT * FROM drift WHERE target = 'files:site' AND state = 'in_sync'",
            timeout=30,
        )
        (live / "index.html").write_text("defaced\n")
        assert (await finding(ws, engine))[0] == "drifted"
        run_id = await engine.db.call(Services(ws, engine.db.store).reconcile, "web", "prod", alice)
        await wait_for(
            engine, "SELECT * FROM runs WHERE id = ? AND status = 'waiting'", (run_id,), timeout=30
        )
        assert (live / "index.html").read_text() == "defaced\n", "reconciled without approval"
        assert await approve_as_bob() == run_id
        assert (await wait_run_done(engine, run_id, timeout=30))["status"] == "succeeded"
        assert (live / "index.html").read_text() == SITE["site/index.html"]
        stages = await query(
            engine, "SELECT name, status FROM stages WHERE run_id = ? ORDER BY idx", (run_id,)
        )
        assert [(s["name"], s["status"]) for s in stages] == [
            ("build", "succeeded"),
            ("deploy-prod", "succeeded"),
        ]


# -- revision -----------------------------------------------------------------------------------


async def test_revision_drift_is_main_ahead_of_deployed(tmp_path: Path) -> None:
    ws, repo, live = drift_ws(tmp_path)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
        rows = await wait_for(
            engine, "SELECT * FROM drift WHERE target = 'revision' AND environment = 'prod'"
        )
        assert rows[0]["state"] == "in_sync"
        (repo / ".ahead/pipeline.yml").write_text(
            (repo / ".ahead/pipeline.yml").read_text().replace("test -f", "false && test -f")
        )
        commit(repo, "a change that fails to build")
        await wait_for(engine, "SELECT * FROM runs WHERE status = 'failed'", timeout=30)
        state, detail = await finding(ws, engine, "revision")
        assert (
            state == "drifted"
            and detail["pending"] == 1
            and "1 commit on main not deployed" in detail["summary"]
        )


# -- commands ------------------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


TF_DRIFT = """\
Terraform will perform the following actions:

  # aws_security_group.web will be updated in-place
  ~ resource "aws_security_group" "web" {
  # aws_instance.extra must be replaced
Plan: 1 to add, 1 to change, 1 to destroy.
"""


async def test_command_targets_exit_code_protocol_and_terraform_summary(tmp_path: Path) -> None:
    state_file = tmp_path / "exit"
    tf = tmp_path / "tf.txt"
    tf.write_text(TF_DRIFT)
    check = script(
        tmp_path, f'cat "{tf}"; echo "commit $AHEAD_COMMIT"; exit "$(cat "{state_file}")"\n'
    )
    spec = f"drift:\n  prod:\n    name: infra\n    command: [{check}]\n    parse: terraform\n    timeout: 2s\n"
    ws, repo, live = drift_ws(tmp_path, spec)
    state_file.write_text("0")
    async with Engine(ws) as engine:
        await deployed(engine, repo, "infra")
        state_file.write_text("2")
        state, detail = await finding(ws, engine, "infra")
        assert state == "drifted" and detail["summary"] == "1 to add, 1 to change, 1 to destroy"
        assert "aws_security_group.web will be updated in-place" in detail["items"]
        assert (
            "commit " + (await query(engine, "SELECT commit_sha FROM deployments"))[0]["commit_sha"]
            in detail["output"]
        )
        state_file.write_text("1")
        assert (await finding(ws, engine, "infra"))[0] == "unknown"
        state_file.write_text("0")
        assert (await finding(ws, engine, "infra"))[0] == "in_sync"
        # a hung command: unknown after its timeout, and its process is gone
        pidfile = tmp_path / "pid"
        Path(check).write_text(f'#!/bin/sh\necho $$ > "{pidfile}"\nexec sleep 60\n')
        started = time.monotonic()
        state, detail = await finding(ws, engine, "infra")
        assert state == "unknown" and "timed out" in detail["summary"], detail
        assert time.monotonic() - started < 10
        pid = int(pidfile.read_text())
        await asyncio.sleep(0.2)
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def test_ansible_recap_is_read() -> None:
    out = (
        "TASK [nginx : config] ****\nchanged: [web1]\nTASK [nginx : service] ****\nok: [web1]\n"
        "PLAY RECAP ****\nweb1 : ok=5 changed=1 unreachable=0 failed=0 skipped=0\n"
    )
    found = drift.interpret("ansible", 0, out)
    assert found.state == "drifted" and found.detail["items"] == ["nginx : config"]
    assert drift.interpret("ansible", 0, out.replace("changed=1", "changed=0")).state == "in_sync"
    assert (
        drift.interpret("ansible", 4, out.replace("unreachable=0", "unreachable=1")).state
        == "unknown"
    )
    assert drift.interpret("ansible", 0, "no recap").state == "unknown"


# -- over SSH -------------------------------------------------------------------------------------


class Files(asyncssh.SFTPServer):
    """Real files; refuses to open anything named secret*, and removes the served tree when a
    file named vanish is opened (a target that disappears mid-check)."""

    root: Path

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        name = os.path.basename(path.decode())
        if name.startswith("secret"):
            raise asyncssh.SFTPPermissionDenied("permission denied")
        if name == "vanish":
            shutil.rmtree(self.root)
        return super().open(path, pflags, attrs)


class Host:
    def __init__(self, state_dir: Path, root: Path) -> None:
        self.state_dir = state_dir
        self.root = root
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.server: asyncssh.SSHAcceptor | None = None
        self.port = 0

    async def start(self, key: asyncssh.SSHKey | None = None) -> None:
        client = sshclient.client_key(self.state_dir)
        root = self.root

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, k: asyncssh.SSHKey) -> bool:
                return username == "deploy" and k.public_data == client.public_data

        class Sftp(Files):
            pass

        Sftp.root = root
        self.server = await asyncssh.create_server(
            Server,
            "127.0.0.1",
            self.port,
            server_host_keys=[key or self.key],
            sftp_factory=Sftp,
            allow_scp=False,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[tuple[Workspace, Host, Path]]:
    remote = tmp_path / "remote-www"
    state_dir = tmp_path / "ws" / ".ahead"
    server = Host(state_dir, remote)
    await server.start()
    spec = f"""\
drift:
  prod:
    name: www
    files: site
    live: {remote}
    host: deploy@127.0.0.1:{server.port}
"""
    ws, repo, live = drift_ws(tmp_path, spec)
    # the deploy writes the live tree on "the host" (the same machine here)
    text = (repo / ".ahead/pipeline.yml").read_text().replace(f"LIVE: {live}", f"LIVE: {remote}")
    commit(repo, "deploy to the host", files={".ahead/pipeline.yml": text})
    try:
        yield ws, server, remote
    finally:
        await server.stop()


def cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_ssh_target_trust_check_drift_denied_and_vanishing(
    host: tuple[Workspace, Host, Path],
) -> None:
    ws, server, remote = host
    async with Engine(ws) as engine:
        await deployed(engine, ws.repo_dir(ws.repo("web")), "www")
        rows = await query(engine, "SELECT * FROM drift WHERE target = 'www'")
        assert rows[0]["state"] == "unknown" and "not trusted" in rows[0]["summary"]
        done = await asyncio.to_thread(
            cli, ws, "drift", "trust", "web", "prod", "--fingerprint", "SHA256:nope"
        )
        assert done.returncode == 1 and "not trusted" in done.stderr
        done = await asyncio.to_thread(cli, ws, "drift", "trust", "web", "prod", "--yes")
        assert done.returncode == 0, done.stderr
        assert sshclient.fingerprint(server.key) in done.stdout and "ssh-ed25519 " in done.stdout
        # one trust flow for runners and drift hosts: the same audit action (runner trust: runner/NAME)
        audit = await query(engine, "SELECT action, subject FROM audit WHERE action LIKE '%trust%'")
        assert [(a["action"], a["subject"]) for a in audit] == [("host.trust", "drift/web/prod")]
        state, detail = await finding(ws, engine, "www")
        assert state == "in_sync", detail
        assert detail["live"] == f"deploy@127.0.0.1:{server.port}:{remote}"
        (remote / "app.conf").write_text("workers = 1\n")
        (remote / "added.txt").write_text("x\n")
        os.symlink("/etc/shadow", remote / "shadow")
        state, detail = await finding(ws, engine, "www")
        assert state == "drifted" and detail["changed"] == ["app.conf"], detail
        assert (
            sorted(detail["added"]) == ["added.txt", "shadow"] and "+workers = 1" in detail["diff"]
        )
        # unchanged files are not fetched again: only the listing crosses the wire
        mirror = next((ws.state_dir / "drift").glob("*www*")) / "mirror"
        before = (mirror / "index.html").stat().st_ino
        await finding(ws, engine, "www")
        assert (mirror / "index.html").stat().st_ino == before
        # a file the host will not let us read is unknown, never "removed"
        (remote / "added.txt").unlink()
        (remote / "shadow").unlink()
        (remote / "app.conf").write_text(SITE["site/app.conf"])
        (remote / "secret.key").write_text("k\n")
        state, detail = await finding(ws, engine, "www")
        assert state == "unknown" and detail["unreadable"] == ["secret.key"], detail
        (remote / "secret.key").unlink()
        (remote / "vanish").write_text("x\n")
        state, detail = await finding(ws, engine, "www")
        assert state == "unknown" and "disappeared" in detail["summary"], detail


async def test_ssh_target_with_a_changed_host_key_is_refused(
    host: tuple[Workspace, Host, Path],
) -> None:
    ws, server, remote = host
    address = sshclient.parse_address(f"deploy@127.0.0.1:{server.port}")
    assert address is not None
    sshclient.trust(ws.state_dir, address, server.key)
    async with Engine(ws) as engine:
        await deployed(engine, ws.repo_dir(ws.repo("web")), "www")
        await wait_for(
            engine, "SELECT * FROM drift WHERE target = 'www' AND state = 'in_sync'", timeout=30
        )
        await server.stop()
        await server.start(asyncssh.generate_private_key("ssh-ed25519"))  # same port, another key
        state, detail = await finding(ws, engine, "www")
        assert state == "unknown" and "HOST KEY CHANGED" in detail["summary"], detail


# -- the CLI ---------------------------------------------------------------------------------------


async def test_cli_exit_codes_show_ack(tmp_path: Path) -> None:
    ws, repo, live = drift_ws(tmp_path)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
    done = await asyncio.to_thread(cli, ws, "drift", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {i["target"] for i in json.loads(done.stdout)["drift"]} >= {"revision", "files:site"}
    (live / "app.conf").write_text("edited by hand\n")
    done = await asyncio.to_thread(cli, ws, "drift", "check", "web", "prod")
    assert done.returncode == 1 and "drifted" in done.stdout, done.stdout + done.stderr
    done = await asyncio.to_thread(
        cli, ws, "drift", "show", "web", "prod", "--target", "files:site"
    )
    assert "~ app.conf" in done.stdout and "+edited by hand" in done.stdout
    done = await asyncio.to_thread(
        cli, ws, "drift", "ack", "web", "prod", "--reason", "known", "--for", "2h"
    )
    assert done.returncode == 0 and "files:site" in done.stdout, done.stderr
    done = await asyncio.to_thread(cli, ws, "drift")
    assert done.returncode == 0 and "ack" in done.stdout, done.stdout
    shutil.rmtree(live)
    done = await asyncio.to_thread(cli, ws, "drift", "check")
    assert done.returncode == 2 and "unknown" in done.stdout
    done = await asyncio.to_thread(cli, ws, "drift", "ack", "web", "prod")
    assert done.returncode == 2 and "--reason" in done.stderr
    assert workspace.read(ws.file).settings.drift_interval == 300


# -- found in review --------------------------------------------------------------------------------


async def test_drift_commands_get_no_secret_and_print_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROD_TOKEN_SOURCE", "s3cr3t-drift-value")
    check = script(
        tmp_path, 'echo "token=$PROD_TOKEN_SOURCE"; echo "again=s3cr3t-drift-value"; exit 2\n'
    )
    spec = f"drift:\n  prod:\n    name: infra\n    command: [{check}]\n"
    ws, repo, live = drift_ws(tmp_path, spec, extra="secrets:\n  TOKEN: {env: PROD_TOKEN_SOURCE}\n")
    async with Engine(ws) as engine:
        await deployed(engine, repo, "infra")
        state, detail = await finding(ws, engine, "infra")
        assert state == "drifted" and "token=\n" in detail["output"] + "\n", detail["output"]
        assert "again=***" in detail["output"]
        stored = await query(engine, "SELECT detail FROM drift_checks")
        assert not any("s3cr3t-drift-value" in r["detail"] for r in stored)


async def test_a_check_waiting_for_another_process_does_not_block_the_loop(tmp_path: Path) -> None:
    import fcntl

    ws, repo, live = drift_ws(tmp_path)
    async with Engine(ws) as engine:
        await deployed(engine, repo)
        [target] = await drift.DriftChecker(ws, engine.db).targets("web", "prod", "files:site")
        lock = ws.state_dir / "drift" / target.key / "lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process checking the same target would
        checking = asyncio.ensure_future(finding(ws, engine))
        started = time.monotonic()
        await asyncio.sleep(0.5)  # the loop keeps running while the check waits
        assert time.monotonic() - started < 0.7 and not checking.done()
        os.close(fd)
        assert (await checking)[0] == "in_sync"


async def test_a_reconcile_overtaken_by_a_newer_deploy_is_skipped_not_rolled_back(
    tmp_path: Path,
) -> None:
    me = workspace.current_os_user()
    people = (
        f"policies:\n  prod:\n    approvals: 1\noperators:\n  - name: alice\n    roles: [operator, approver]\n"
        f"    os_users: [{me}]\n  - name: bob\n    roles: [approver]\n"
    )
    ws, repo, live = drift_ws(tmp_path, extra=people)
    async with Engine(ws) as engine:
        first = ship(repo)

        async def approve() -> int:
            for _ in range(100):  # a request voided by the move is opened again by the engine
                [change] = await wait_for(
                    engine, "SELECT * FROM change_requests WHERE status = 'open'", timeout=30
                )
                verdict = await engine.db.call(
                    approvals.decide, engine.db.store, ws, change["id"], "bob", "approve", ""
                )
                if verdict.ok:
                    return int(change["run_id"])
                assert verdict.status == "voided", verdict.message
                await asyncio.sleep(0.1)
            raise AssertionError("no request to approve")

        await wait_run_done(engine, await approve(), timeout=30)
        run_id = await engine.db.call(
            Services(ws, engine.db.store).reconcile, "web", "prod", Actor.local(ws, "alice")
        )
        await wait_for(
            engine, "SELECT * FROM runs WHERE id = ? AND status = 'waiting'", (run_id,), timeout=30
        )
        newer = commit(
            repo, "a newer release"
        )  # deployed meanwhile (as a run of another lane would)
        await engine.db.call(_record_deploy, engine.db.store, newer)
        await approve()
        run = await wait_run_done(engine, run_id, timeout=30)
        assert run["status"] == "skipped" and "would roll it back" in (run["error"] or ""), dict(
            run
        )
        last = await query(engine, "SELECT commit_sha FROM deployments ORDER BY id DESC LIMIT 1")
        assert last[0]["commit_sha"] == newer != first


def _record_deploy(store: Any, sha: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO deployments (repo, environment, commit_sha, run_id, stage_id, deployed_at) "
            "VALUES ('web', 'prod', ?, 1, 1, ?)",
            (sha, time.time()),
        )


def test_history_keeps_100_checks_per_target(tmp_path: Path) -> None:
    from core.store.db import Store

    with Store(tmp_path / "s.db") as store:
        targets = [
            drift.Target("r", "prod", None, "a" * 40),
            drift.Target("r", "dev", None, "a" * 40),
        ]
        for i in range(130):
            for t in targets:
                drift.record(
                    store, t, drift.Finding("in_sync", f"#{i}"), "test", time.time(), time.time()
                )
        counts = store.query(
            "SELECT environment, COUNT(*) AS n FROM drift_checks GROUP BY environment"
        )
        assert {r["environment"]: r["n"] for r in counts} == {
            "prod": drift.KEEP_CHECKS,
            "dev": drift.KEEP_CHECKS,
        }


async def test_viewers_may_not_check_and_only_admins_trust(tmp_path: Path) -> None:
    me = workspace.current_os_user()
    ws, repo, live = drift_ws(
        tmp_path, extra=f"operators:\n  - name: vic\n    roles: [viewer]\n    os_users: [{me}]\n"
    )
    done = await asyncio.to_thread(cli, ws, "drift", "check")
    assert done.returncode == 3 and "may not check drift" in done.stderr, done.stderr
    done = await asyncio.to_thread(cli, ws, "drift", "trust", "web", "prod", "--yes")
    assert done.returncode == 3 and "admin" in done.stderr, done.stderr


async def test_a_path_that_is_not_a_directory_at_the_deployed_commit_is_unknown(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    spec = f"drift:\n  prod:\n    - files: nosuchdir\n      live: {live}\n    - files: README\n      live: {live}\n"
    ws, repo, _ = drift_ws(tmp_path, spec)
    async with Engine(ws) as engine:
        await deployed(engine, repo, "files:nosuchdir")
        for name in ("files:nosuchdir", "files:README"):
            state, detail = await finding(ws, engine, name)
            assert state == "unknown" and "is not a directory" in detail["summary"], detail
