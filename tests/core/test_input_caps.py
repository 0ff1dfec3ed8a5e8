"""Inputs with a size cap are refused before they are read: a 100 MB pipeline.yml, a 2 GiB
artifact. Real git, a real `ahead engine` subprocess; peak memory is the process's VmHWM (its
own high-water mark since exec: getrusage's ru_maxrss would include the parent's at fork)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import gitio, workspace, yamlfile
from core.errors import ConfigError
from tests.conftest import commit, make_workspace

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MiB = 1024 * 1024


def ahead(root: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(root), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    ).stdout


def peak_mib(pid: str | int) -> int:
    """The peak resident memory of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def test_a_100_mb_pipeline_is_refused_without_being_read(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    line = "# " + "x" * 97 + "\n"
    sha = commit(
        repo, "huge pipeline", files={".ahead/pipeline.yml": line * (100 * 10**6 // len(line))}
    )
    probe = (
        "from core import gitio\nfrom core.errors import ConfigError\n"
        f"try:\n    gitio.read_file({str(repo)!r}, {sha!r}, '.ahead/pipeline.yml')\n"
        "except ConfigError as exc:\n    print(exc)\n"
        "from tests.core.test_input_caps import peak_mib\nprint(peak_mib('self'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=True,
    )
    message, peak_mib = done.stdout.splitlines()
    assert message == (
        f"{sha[:7]}:.ahead/pipeline.yml: file is 100000000 bytes, larger than 1024 KiB "
        "(not read) (split it or remove generated content)"
    )
    assert int(peak_mib) < 60, done.stdout  # the blob (100 MB) never reached this process
    check = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "check"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1 and "larger than 1024 KiB (not read)" in check.stdout, check


def test_read_file_reads_up_to_the_cap_which_is_the_yaml_limit(tmp_path: Path) -> None:
    assert gitio.READ_MAX == yamlfile.MAX_BYTES
    ws = make_workspace(tmp_path / "ws")
    repo = ws.repo_dir(ws.repo("app"))
    sha = commit(repo, "at the cap", files={"f": "y" * gitio.READ_MAX})
    assert gitio.read_file(repo, sha, "f") == "y" * gitio.READ_MAX
    with pytest.raises(ConfigError, match="larger than 1 KiB"):
        gitio.read_file(repo, sha, "f", max_bytes=1024)


def test_an_artifact_over_the_cap_fails_the_run_clearly_and_big_ones_are_streamed(
    tmp_path: Path,
) -> None:
    pipeline = (
        "stages:\n  - name: build\n    steps:\n"
        "      - run: mkdir -p dist && truncate -s 128M dist/image.bin\n        artifact: dist/image.bin\n"
        "      - run: truncate -s 2G dist/app.tar\n        artifact: dist/app.tar\n"
    )
    ws = make_workspace(tmp_path / "ws", {"app": pipeline})
    engine = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "engine"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 10
        while "engine: not running" in ahead(ws.root, "status") and time.monotonic() < deadline:
            time.sleep(0.1)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "core.cli",
                "--workspace",
                str(ws.root),
                "trigger",
                "app",
                "--wait",
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
        peak = peak_mib(engine.pid)
    finally:
        engine.terminate()
        engine.wait(20)
    assert done.returncode != 0 and "failed" in done.stdout, done.stdout
    logs = subprocess.run(
        [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "logs", "1"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=True,
    ).stdout
    assert (
        "[ahead] artifact dist/app.tar is 2.0 GiB, over the 512 MiB cap (settings.artifact_max_bytes)"
        in logs.splitlines()
    ), logs
    assert peak < 100  # MiB: 128 MiB copied in chunks, 2 GiB never read
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-m", "core.cli", "--workspace", str(ws.root), "show", "1", "--json"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=True,
        ).stdout
    )
    kept = shown["artifacts"]
    assert [(a["path"], a["size"]) for a in kept] == [("dist/image.bin", 128 * MiB)]
    assert kept[0]["sha256"] == hashlib.sha256(bytes(128 * MiB)).hexdigest()


def test_artifact_max_bytes_is_a_size_setting_with_file_line_field_errors(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    text = ws.file.read_text().replace(
        "  poll_interval: 0.2", "  poll_interval: 0.2\n  artifact_max_bytes: 2GiB"
    )
    ws.file.write_text(text)
    assert workspace.read(ws.file).settings.artifact_max_bytes == 2 * 1024**3
    ws.file.write_text(text.replace("2GiB", "lots"))
    with pytest.raises(ConfigError) as caught:
        workspace.read(ws.file)
    line = text.splitlines().index("  artifact_max_bytes: 2GiB") + 1
    assert str(caught.value) == (
        f"{ws.file}:{line}: settings.artifact_max_bytes: 'lots' is not a size "
        "(write it like 512MiB, 2GiB or 100MB)"
    )
    assert (
        make_workspace(tmp_path / "other").settings.artifact_max_bytes == 512 * MiB
    )  # the default
