"""The demo workspace and the starter ahead.yml: `ahead init [--demo]` and `ahead demo`.

Someone trying Change Ahead should see a workspace with a past before they have one of their
own, so `create()` builds a self-contained one: three real git repositories (a machine image,
infrastructure, a service) whose pipelines do real, small work with sh, python3, git, tar and
sha256sum, and whose history has been through real runs of the real engine. The environments end
up at different commits, so status shows pending commits and lag, and the failed runs say why.
Deploys write to `live/<environment>/<repo>/` in the workspace: the demo's stand-in for clouds
and clusters. Step output says honestly what each step stands in for.

Depends on core.engine, core.services, core.gitio, core.lease, core.store and core.workspace;
runs git with argv lists only and never puts repository content into a shell string.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core import gitio, lease, runstate, workspace
from core.engine import LEASE_STALE_SECONDS, Engine
from core.errors import CoreError, InvalidRequest, LeaseHeld
from core.fields import NAME
from core.services import Services
from core.store.db import Store
from core.workspace import FILENAME, Workspace

RUN_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
GLYPH = {"succeeded": "✓", "failed": "✗", "cancelled": "⊘", "interrupted": "!", "skipped": "-"}

# name, email, time zone: the people of the story. dave is an outside contributor whose
# changes a maintainer commits (so author and committer differ, as policies will care).
PEOPLE = {
    "alice": ("Alice Archer", "alice@example.com", "+0100"),
    "bob": ("Bob Baker", "bob@example.com", "-0500"),
    "carol": ("Carol Chen", "carol@example.com", "+0800"),
    "dave": ("Dave Dunn", "dave@contractor.example.net", "+0200"),
}
# Our git commands must not depend on (or be changed by) the user's git configuration.
GIT_OPTIONS = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null",
               "-c", "core.autocrlf=false", "-c", "init.defaultBranch=main")
GIT_ISOLATION = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def default_dir() -> Path:
    """Where `ahead demo` keeps its workspace: $XDG_DATA_HOME/change-ahead/demo."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "change-ahead" / "demo"


# -- ahead init ---------------------------------------------------------------------------------

STARTER = """\
# Change Ahead workspace. Validate it with: ahead check
#
# repos: the git repositories this workspace tracks. Each has a name and either a local
# path (relative to this file) or a url the engine mirrors. Their pipelines live in
# .ahead/pipeline.yml inside each repo.
repos:{repos}
  # - name: web-api
  #   path: ../web-api            # or url: https://git.example.com/web-api.git
  #   branch: main                # the branch that deploys (default main)

# environments: in promotion order. A pipeline stage deploys to one of them.
environments: [dev, preprod, prod]

# operators: who may do what (roles: viewer, operator, approver, admin). os_users maps your
# login on this machine to an operator; emails map commits to people.
operators:{operators}
  # - name: alice
  #   roles: [operator, approver]
  #   emails: [alice@example.com]

# settings (all optional):
#   state_dir: .ahead          # runs, logs and the audit log (SQLite)
#   max_parallel_runs: 4
#   step_timeout: 1h
"""


def init_workspace(target: Path) -> Path:
    """Write a starter ahead.yml in `target` (made if missing) and return its path.

    Git repositories directly inside `target` are listed as repos; the current OS user becomes
    an admin operator. The file is valid as written.

    Raises:
        InvalidRequest: `target` already holds an ahead.yml.
    """
    file = target / FILENAME
    if file.exists():
        raise InvalidRequest(f"{file} already exists; edit it, or choose another directory")
    _make_dir(target)
    text = _starter_text(target, file)
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {file}: {exc.strerror}") from None
    return file


def _make_dir(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest(f"cannot make the directory {target}: {exc.strerror}") from None


def _starter_text(target: Path, file: Path) -> str:
    repos = ""
    for child in sorted(p for p in target.iterdir() if (p / ".git").exists()):
        if not NAME.match(child.name):
            continue
        repos += f"\n  - name: {_scalar(child.name)}\n    path: {_scalar(child.name)}"
        branch = gitio.head_branch(child)
        if branch and branch != "main" and gitio.valid_branch(branch):
            repos += f"\n    branch: {_scalar(branch)}"
    user = workspace.current_os_user()
    operators = ""
    if NAME.match(user):
        operators = (f"\n  - name: {_scalar(user)}\n    roles: [admin]"
                     f"\n    os_users: [{_scalar(user)}]")
    text = STARTER.format(repos=repos or " []", operators=operators or " []")
    try:
        workspace.parse(text, file)
    except CoreError:  # an odd directory or user name: fall back to the plain starter
        text = STARTER.format(repos=" []", operators=" []")
    return text


def _scalar(text: str) -> str:
    """`text` as a YAML scalar: plain when YAML reads it back as the same string, else quoted."""
    try:
        plain = yaml.safe_load(text) == text and ":" not in text and "#" not in text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


# -- the demo's repositories --------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCommit:
    """One commit of the story: who, how long ago, and the files it writes (full contents)."""

    label: str
    author: str
    hours_ago: float
    subject: str
    files: dict[str, str]
    body: str = ""
    committer: str | None = None


@dataclass(frozen=True)
class DemoRepo:
    name: str
    commits: tuple[DemoCommit, ...]
    branch: tuple[str, str, DemoCommit] | None = None  # (name, base label, commit)


@dataclass(frozen=True)
class DemoRun:
    """A run of the history: repo at a commit label, on a branch, and how it must end."""

    repo: str
    label: str
    expect: str
    branch: str = "main"


@dataclass
class Round:
    """Runs that execute together, with what happens in the live world around them."""

    runs: list[DemoRun]
    before: Callable[[Path], None] | None = None
    after: Callable[[Path], None] | None = None


@dataclass
class Story:
    repos: list[DemoRepo]
    rounds: list[Round]
    shas: dict[tuple[str, str], str] = field(default_factory=dict)


def _json(data: object) -> str:
    return json.dumps(data, indent=2) + "\n"


# machine-image: packer (bake), ansible (configure-role), test kitchen (verify), tag and share.

MI_PIPELINE = """\
# The base machine image: bake it, apply the base role, verify it, then tag and share it with
# the dev account. Real tools would be packer, ansible and test kitchen; each step says what it
# stands in for and does the same job on a small scale.
env:
  LIVE_ROOT: live     # deploys write to $AHEAD_WORKSPACE/live/<environment>/<repo>
on:
  main: all
  branches: [bake, configure-role, verify]
stages:
  - name: bake
    steps:
      - name: packer build
        run: sh ci/bake.sh
  - name: configure-role
    steps:
      - name: ansible role base
        run: python3 ci/role.py
      - name: snapshot the image
        run: sh ci/seal.sh
        artifact: build/image.tar.gz
  - name: verify
    steps:
      - name: kitchen verify
        run: python3 ci/verify.py
  - name: tag-and-share
    environment: dev
    steps:
      - name: tag and share with dev
        run: python3 ci/share.py
"""

MI_BAKE = r"""#!/bin/sh
# packer build, stand-in: packer would boot a VM from the base AMI; we assemble build/rootfs.
set -eu
echo "==> packer would now boot a VM from the base AMI and provision it;"
echo "    here we assemble the image's file tree in build/rootfs from rootfs/ and packages.txt"
rm -rf build
mkdir -p build/rootfs/etc
cp -R rootfs/. build/rootfs/
cp packages.txt build/rootfs/etc/image-packages
echo "==> base files:"
(cd build/rootfs && find . -type f | sort | sed 's|^\.|    |')
echo "==> packages ($(grep -c . packages.txt)):"
sed 's/^/    /' packages.txt
"""

MI_SEAL = r"""#!/bin/sh
# packer's snapshot, stand-in: packer would snapshot the VM's disk into an AMI; we make a tar.
set -eu
echo "==> packer would now stop the VM and snapshot its disk into an AMI;"
echo "    here we seal build/rootfs into build/image.tar.gz"
tar -C build -czf build/image.tar.gz rootfs
(cd build && sha256sum image.tar.gz > image.tar.gz.sha256)
echo "    $(tar -tzf build/image.tar.gz | grep -vc '/$') files, $(wc -c < build/image.tar.gz | tr -d ' ') bytes"
echo "    sha256 $(cut -d ' ' -f 1 build/image.tar.gz.sha256)"
"""

MI_ROLE = r'''"""ansible-playbook, stand-in: applies the base role (role/) to the image being baked."""

import json
import os
import string
from pathlib import Path

role = Path("role")
root = Path("build/rootfs")
spec = json.loads((role / "vars.json").read_text())
values = dict(spec["vars"], commit=os.environ.get("AHEAD_COMMIT", "unknown")[:7])
print("ansible would now apply the base role over SSH to the VM packer booted;")
print("here it renders the role's templates into build/rootfs")
print("PLAY [default] " + "*" * 50)
changed = 0
for dest, template in sorted(spec["files"].items()):
    text = string.Template((role / "templates" / template).read_text()).substitute(values)
    target = root / dest
    target.parent.mkdir(parents=True, exist_ok=True)
    before = target.read_text() if target.exists() else None
    target.write_text(text)
    changed += before != text
    print(f"TASK [base : template /{dest}]")
    print(("changed" if before != text else "ok") + ": [default]")
print(f"PLAY RECAP: default ok={len(spec['files'])} changed={changed} failed=0")
'''

MI_VERIFY = r'''"""kitchen verify, stand-in: runs test/integration/default/checks.json against the image.

Test kitchen would boot the image and log in; here we read the sealed archive instead.
"""

import hashlib
import json
import sys
import tarfile
from pathlib import Path

archive = Path("build/image.tar.gz")
expected = Path("build/image.tar.gz.sha256").read_text().split()[0]
checks = json.loads(Path("test/integration/default/checks.json").read_text())
print("-----> Verifying <default-image> (reading build/image.tar.gz)")
failures = 0


def report(ok, text):
    global failures
    failures += not ok
    print(("  ✔  " if ok else "  ×  ") + text)


report(hashlib.sha256(archive.read_bytes()).hexdigest() == expected, "archive matches its sha256")
with tarfile.open(archive) as tar:
    for check in checks:
        try:
            member = tar.extractfile("rootfs/" + check["file"])
            text = member.read().decode() if member else ""
        except KeyError:
            text = None
        report(text is not None and check["contains"] in text, check["describe"])
print(f"       Finished verifying <default-image>: {len(checks) + 1} checks, {failures} failures")
sys.exit(1 if failures else 0)
'''

MI_SHARE = r'''"""tag and share, stand-in: publishes the image to this run's environment.

The AWS CLI would tag the AMI and share it with the account of the environment; here we copy
the archive and write its manifest to $AHEAD_WORKSPACE/$LIVE_ROOT/<environment>/<repo>/.
"""

import json
import os
import shutil
from pathlib import Path

env = os.environ["AHEAD_ENVIRONMENT"]
live = Path(os.environ["AHEAD_WORKSPACE"], os.environ["LIVE_ROOT"], env, os.environ["AHEAD_REPO"])
digest = Path("build/image.tar.gz.sha256").read_text().split()[0]
image_id = "ami-0" + digest[:16]
manifest = {
    "image_id": image_id,
    "name": "orders-base-" + os.environ["AHEAD_COMMIT"][:7],
    "commit": os.environ["AHEAD_COMMIT"],
    "sha256": digest,
    "packages": Path("packages.txt").read_text().split("\n")[:-1],
    "shared_with": env,
    "run": int(os.environ["AHEAD_RUN_ID"]),
}
print(f"aws ec2 create-tags and modify-image-attribute would now tag {image_id} and share it")
print(f"with the {env} account; here we publish it to live/{env}/{os.environ['AHEAD_REPO']}/")
live.mkdir(parents=True, exist_ok=True)
shutil.copyfile("build/image.tar.gz", live / "image.tar.gz")
(live / "image.json.tmp").write_text(json.dumps(manifest, indent=2) + "\n")
os.replace(live / "image.json.tmp", live / "image.json")
print(json.dumps(manifest, indent=2))
'''

MI_README = """\
# machine-image

The base machine image of the orders platform.

A real pipeline would run packer (boot a VM from the base AMI), the ansible role in role/, test
kitchen with the checks in test/, and share the AMI with the dev account. This demo does each
step for real on a small scale: it assembles build/rootfs, renders the role's templates into
it, seals it as a tar archive, checks the archive, and publishes the archive and its manifest
to live/dev/machine-image/ in the workspace.
"""

MI_MOTD = """\
$image_name, built by the machine-image pipeline from commit $commit.
Authorised use only. Activity on this machine is logged.
"""

MI_SSHD = """\
# Managed by the base role (role/templates/sshd_config.tmpl). Local edits are overwritten.
Port $ssh_port
PermitRootLogin no
PasswordAuthentication {password}
PubkeyAuthentication yes
X11Forwarding no
"""

MI_CHRONY = """\
# Managed by the base role (role/templates/chrony.conf.tmpl).
server $ntp_primary iburst
server $ntp_secondary iburst
makestep 1.0 3
"""


def _mi_vars(chrony: bool) -> str:
    variables = {"image_name": "orders-base", "ssh_port": "22"}
    files = {"etc/motd": "motd.tmpl", "etc/ssh/sshd_config": "sshd_config.tmpl"}
    if chrony:
        variables |= {"ntp_primary": "time1.example.com", "ntp_secondary": "time2.example.com"}
        files["etc/chrony/chrony.conf"] = "chrony.conf.tmpl"
    return _json({"vars": variables, "files": files})


def _mi_checks(chrony: bool, no_passwords: bool) -> str:
    checks = [
        {"file": "etc/motd", "contains": "Authorised use only", "describe": "motd warns about authorised use"},
        {"file": "etc/ssh/sshd_config", "contains": "PermitRootLogin no", "describe": "sshd: root cannot log in"},
        {"file": "etc/image-packages", "contains": "openssh-server", "describe": "openssh-server is installed"},
    ]
    if chrony:
        checks.append({"file": "etc/chrony/chrony.conf", "contains": "server time1.example.com",
                       "describe": "chrony keeps time with time1.example.com"})
    if no_passwords:
        checks.append({"file": "etc/ssh/sshd_config", "contains": "PasswordAuthentication no",
                       "describe": "sshd: password login is off"})
    return _json(checks)


def _machine_image() -> DemoRepo:
    packages = ["openssh-server 9.2p1", "ca-certificates 20230311", "curl 7.88.1"]
    with_chrony = [*packages, "chrony 4.3"]
    bumped = ["openssh-server 9.6p1", "ca-certificates 20230311", "curl 8.5.0", "chrony 4.3"]
    return DemoRepo("machine-image", (
        DemoCommit("c1", "alice", 6 * 24 + 3, "Base image: rootfs, packages and the bake pipeline", {
            ".ahead/pipeline.yml": MI_PIPELINE, "README.md": MI_README,
            "ci/bake.sh": MI_BAKE, "ci/seal.sh": MI_SEAL, "ci/role.py": MI_ROLE,
            "ci/verify.py": MI_VERIFY, "ci/share.py": MI_SHARE,
            "packages.txt": "\n".join(packages) + "\n",
            "rootfs/etc/issue": "Orders platform base image\n",
            "rootfs/etc/sysctl.d/60-hardening.conf":
                "net.ipv4.conf.all.rp_filter = 1\nnet.ipv4.conf.all.accept_redirects = 0\n"
                "kernel.kptr_restrict = 2\n",
            "role/vars.json": _mi_vars(chrony=False),
            "role/templates/motd.tmpl": MI_MOTD,
            "role/templates/sshd_config.tmpl": MI_SSHD.format(password="yes"),
            "test/integration/default/checks.json": _mi_checks(chrony=False, no_passwords=False),
        }),
        DemoCommit("c2", "bob", 4 * 24 + 5, "Base role: keep time with chrony", {
            "packages.txt": "\n".join(with_chrony) + "\n",
            "role/vars.json": _mi_vars(chrony=True),
            "role/templates/chrony.conf.tmpl": MI_CHRONY,
            "test/integration/default/checks.json": _mi_checks(chrony=True, no_passwords=False),
        }, body="TLS handshakes failed on a VM whose clock had drifted by 40 seconds."),
        DemoCommit("c3", "carol", 2 * 24 + 2, "Disable SSH password login, and verify it", {
            "role/templates/sshd_config.tmpl": MI_SSHD.format(password="no"),
            "test/integration/default/checks.json": _mi_checks(chrony=True, no_passwords=True),
        }),
        DemoCommit("c4", "alice", 7, "Bump openssh-server to 9.6p1 and curl to 8.5.0", {
            "packages.txt": "\n".join(bumped) + "\n",
        }, body="Security updates."),
    ))


# infrastructure: checks and a plan on every branch, apply to dev, preprod and prod from main.

INFRA_PIPELINE = """\
# The platform's infrastructure, declared in resources.json. Checks and a plan run on every
# branch; main applies to dev, preprod and prod in turn. ci/ holds a small stand-in for
# terraform: each environment's state is live/<environment>/infrastructure/state.json.
env:
  LIVE_ROOT: live     # deploys write to $AHEAD_WORKSPACE/live/<environment>/<repo>
  PLAN_ENVIRONMENTS: dev preprod prod
on:
  main: all
  branches: [checks, plan]
stages:
  - name: checks
    steps:
      - name: validate resources.json
        run: python3 ci/check.py
  - name: plan
    steps:
      - name: plan every environment
        run: python3 ci/plan.py
        artifact: plan.json
  - name: apply-dev
    environment: dev
    steps:
      - name: apply
        run: python3 ci/apply.py
  - name: apply-preprod
    environment: preprod
    steps:
      - name: apply
        run: python3 ci/apply.py
  - name: apply-prod
    environment: prod
    steps:
      - name: apply
        run: python3 ci/apply.py
"""

INFRA_TF = r'''"""A small stand-in for terraform, shared by plan.py and apply.py.

Desired state: resources.json ("{env}" in a value becomes the environment's name). Live state:
state.json in the environment's live directory, $AHEAD_WORKSPACE/$LIVE_ROOT/<env>/<repo>/.
"""

import json
import os
from pathlib import Path

# Changing one of these replaces the resource (destroy, then create), as in terraform.
FORCE_NEW = ("type", "cidr", "network", "subnet")


def live_dir(env):
    return Path(os.environ["AHEAD_WORKSPACE"], os.environ["LIVE_ROOT"], env, os.environ["AHEAD_REPO"])


def desired(env):
    resources = json.loads(Path("resources.json").read_text())["resources"]
    return {name: {key: value.replace("{env}", env) if isinstance(value, str) else value
                   for key, value in attrs.items()} for name, attrs in resources.items()}


def state(env):
    path = live_dir(env) / "state.json"
    if not path.exists():
        return {"serial": 0, "commit": None, "resources": {}}
    return json.loads(path.read_text())


def plan(env):
    """What applying resources.json to `env` would do, and the desired resources."""
    want, current = desired(env), state(env)
    have = current["resources"]
    result = {"environment": env, "serial": current["serial"], "from_commit": current["commit"],
              "add": sorted(set(want) - set(have)), "destroy": sorted(set(have) - set(want)),
              "change": {}, "replace": [], "blocked": []}
    for name in sorted(set(want) & set(have)):
        keys = sorted(set(want[name]) | set(have[name]))
        changed = {k: [have[name].get(k), want[name].get(k)] for k in keys
                   if have[name].get(k) != want[name].get(k)}
        if changed:
            result["change"][name] = changed
        if any(k in FORCE_NEW for k in changed):
            result["replace"].append(name)
    for name in result["destroy"] + result["replace"]:
        if env in have[name].get("prevent_destroy", []):
            result["blocked"].append(name)
    return result, want


def show(p):
    env = p["environment"]
    source = (p["from_commit"] or "")[:7] or "nothing applied yet"
    print(f"{env}: live state serial {p['serial']} ({source})")
    for name in p["add"]:
        print(f"  + {name}")
    for name, changed in p["change"].items():
        parts = [f"{key}: {json.dumps(old)} -> {json.dumps(new)}"
                 + (" (forces replacement)" if key in FORCE_NEW else "")
                 for key, (old, new) in changed.items()]
        print(f"  {'-/+' if name in p['replace'] else '~'} {name}: " + "; ".join(parts))
    for name in p["destroy"]:
        print(f"  - {name}")
    for name in p["blocked"]:
        print(f"  ! {name} is protected in {env} (prevent_destroy): apply will refuse to destroy it")
    replaced = len(p["replace"])
    print(f"  Plan: {len(p['add']) + replaced} to add, {len(p['change']) - replaced} to change, "
          f"{len(p['destroy']) + replaced} to destroy.")
'''

INFRA_CHECK = r'''"""terraform validate and tflint, stand-in: checks resources.json before any plan."""

import ipaddress
import json
import sys
from pathlib import Path

REQUIRED = {"network": ["cidr"], "subnet": ["network", "cidr"], "bucket": [], "dns_zone": ["domain"],
            "postgres": ["subnet", "size", "storage_gb"], "security_group": ["network", "ingress"]}
REFERENCES = {"network": "network", "subnet": "subnet"}
SIZES = ("db.t3.micro", "db.t3.small", "db.t3.medium", "db.m5.large", "db.m5.xlarge")
ENVIRONMENTS = ("dev", "preprod", "prod")

try:
    resources = json.loads(Path("resources.json").read_text())["resources"]
except (ValueError, KeyError) as exc:
    sys.exit(f"resources.json is not valid: {exc}")
errors = []
for name, attrs in sorted(resources.items()):
    found = []
    kind = attrs.get("type")
    if kind not in REQUIRED:
        found.append(f"unknown type {kind!r} (known: {', '.join(REQUIRED)})")
    for key in REQUIRED.get(kind, []):
        if key not in attrs:
            found.append(f"missing {key}")
    for key, wanted in REFERENCES.items():
        if key in attrs and resources.get(attrs[key], {}).get("type") != wanted:
            found.append(f"{key} {attrs[key]!r} is not a {wanted} in resources.json")
    if "cidr" in attrs:
        try:
            net = ipaddress.ip_network(attrs["cidr"])
            parent = resources.get(attrs.get("network", ""), {}).get("cidr")
            if kind == "subnet" and parent and not net.subnet_of(ipaddress.ip_network(parent)):
                found.append(f"{net} is outside its network {parent}")
        except ValueError as exc:
            found.append(f"bad cidr: {exc}")
    if kind == "postgres" and attrs.get("size") not in SIZES:
        found.append(f"size {attrs.get('size')!r} is not one of {', '.join(SIZES)}")
    for env in attrs.get("prevent_destroy", []):
        if env not in ENVIRONMENTS:
            found.append(f"prevent_destroy names {env!r}, which is not an environment")
    for rule in attrs.get("ingress", []):
        port, _, source = rule.partition(" from ")
        try:
            ipaddress.ip_network(source)
            ok = port.split("/")[0].isdigit() and port.split("/")[1] in ("tcp", "udp")
        except (ValueError, IndexError):
            ok = False
        if not ok:
            found.append(f"ingress {rule!r} is not like '443/tcp from 10.0.0.0/8'")
    print(f"  {'✗' if found else '✓'} {name} ({kind})")
    errors += [f"{name}: {problem}" for problem in found]
for error in errors:
    print("Error: " + error)
if errors:
    sys.exit(1)
print(f"Success! {len(resources)} resources are valid.")
'''

INFRA_PLAN = r'''"""terraform plan, stand-in: plans resources.json against every environment's live state."""

import json
import os
from pathlib import Path

import tf

plans = {}
for env in os.environ.get("PLAN_ENVIRONMENTS", "dev").split():
    plans[env], _ = tf.plan(env)
    tf.show(plans[env])
Path("plan.json").write_text(json.dumps({"commit": os.environ.get("AHEAD_COMMIT"), "plans": plans},
                                        indent=2) + "\n")
print("plan.json written (kept with this run as an artifact)")
'''

INFRA_APPLY = r'''"""terraform apply, stand-in: makes this environment's live state match resources.json."""

import json
import os
import sys

import tf

env = os.environ["AHEAD_ENVIRONMENT"]
live = tf.live_dir(env)
lock = live / "state.lock"
if lock.exists():
    info = json.loads(lock.read_text())
    print("Error: Error acquiring the state lock")
    print("  Lock Info:")
    for key in ("ID", "Operation", "Who", "Created", "Info"):
        print(f"    {key + ':':11}{info.get(key.lower(), '')}")
    print(f"  Another apply holds the {env} state. Wait for it to finish and run again; if it")
    print(f"  died, remove live/{env}/{os.environ['AHEAD_REPO']}/state.lock (terraform force-unlock).")
    sys.exit(1)
plan, want = tf.plan(env)
tf.show(plan)
if plan["blocked"]:
    for name in plan["blocked"]:
        print(f"Error: Instance cannot be destroyed: {name} has prevent_destroy for {env}")
    print("  This change would destroy it and its data. To rename it, move it in the state")
    print("  instead (terraform's moved block); to retire it, drop the protection first.")
    sys.exit(1)
live.mkdir(parents=True, exist_ok=True)
changed = bool(plan["add"] or plan["change"] or plan["destroy"])
new_state = {"serial": plan["serial"] + changed, "commit": os.environ["AHEAD_COMMIT"],
             "run": int(os.environ["AHEAD_RUN_ID"]), "resources": want}
(live / "state.json.tmp").write_text(json.dumps(new_state, indent=2, sort_keys=True) + "\n")
os.replace(live / "state.json.tmp", live / "state.json")
replaced = len(plan["replace"])
print(f"Apply complete! Resources: {len(plan['add']) + replaced} added, "
      f"{len(plan['change']) - replaced} changed, {len(plan['destroy']) + replaced} destroyed.")
'''

INFRA_README = """\
# infrastructure

The orders platform's infrastructure, declared in resources.json.

A real pipeline would run terraform: validate and lint, plan against each environment, then
apply to dev, preprod and prod from main. The stand-in in ci/ does the same on JSON files: the
state of each environment is live/<environment>/infrastructure/state.json in the workspace, and
a resource with prevent_destroy for an environment is never destroyed there.
"""


def _infra_resources() -> dict[str, dict[str, dict[str, object]]]:
    """resources.json at each point of the story, keyed by commit label."""
    base: dict[str, dict[str, object]] = {
        "network.main": {"type": "network", "cidr": "10.20.0.0/16"},
        "subnet.app": {"type": "subnet", "network": "network.main", "cidr": "10.20.1.0/24"},
        "bucket.state": {"type": "bucket", "name": "orders-{env}-state", "versioning": True},
        "dns.zone": {"type": "dns_zone", "domain": "{env}.orders.example.com"},
    }
    db = {"type": "postgres", "subnet": "subnet.app", "size": "db.t3.small", "storage_gb": 20,
          "backup_days": 7, "prevent_destroy": ["preprod", "prod"]}
    c2 = base | {"db.main": db}
    c3 = c2 | {"sg.web": {"type": "security_group", "network": "network.main",
                          "ingress": ["443/tcp from 0.0.0.0/0"]}}
    c4 = {name: attrs | {"tags": {"cost-centre": "orders"}} for name, attrs in c3.items()}
    c5 = {("db.orders" if name == "db.main" else name): attrs for name, attrs in c4.items()}
    bigger = c4 | {"db.main": c4["db.main"] | {"size": "db.m5.large", "storage_gb": 50}}
    return {"c1": base, "c2": c2, "c3": c3, "c4": c4, "c5": c5, "bigger": bigger}


def _infrastructure() -> DemoRepo:
    res = {label: _json({"resources": value}) for label, value in _infra_resources().items()}
    return DemoRepo("infrastructure", (
        DemoCommit("c1", "alice", 6 * 24 + 6, "Network, subnet, state bucket and DNS zone", {
            ".ahead/pipeline.yml": INFRA_PIPELINE, "README.md": INFRA_README,
            "ci/tf.py": INFRA_TF, "ci/check.py": INFRA_CHECK, "ci/plan.py": INFRA_PLAN,
            "ci/apply.py": INFRA_APPLY, "resources.json": res["c1"],
        }),
        DemoCommit("c2", "bob", 5 * 24 + 1, "Add the orders database (postgres, db.t3.small)",
                   {"resources.json": res["c2"]},
                   body="Protected in preprod and prod: apply refuses to destroy it there."),
        DemoCommit("c3", "carol", 3 * 24 + 4, "Open 443 on the web security group",
                   {"resources.json": res["c3"]}),
        DemoCommit("c4", "alice", 2 * 24 + 1, "Tag every resource with its cost centre",
                   {"resources.json": res["c4"]}, body="Finance asked for per-service cloud costs."),
        DemoCommit("c5", "dave", 24 + 2, "Rename db.main to db.orders", {"resources.json": res["c5"]},
                   body="Clearer now that we are about to add a second database.", committer="bob"),
    ), branch=("feature/bigger-db", "c4", DemoCommit(
        "bigger", "bob", 3, "Resize db.main to db.m5.large for the sale peak",
        {"resources.json": res["bigger"]}, body="Plan only until we agree on the cost.")))


# service: build, unit tests, deploy to preprod, then prod once the release notes are in.

SVC_PIPELINE = """\
# The orders service: build and unit-test every commit; main deploys to preprod, then to prod.
# Production needs release notes for the version being deployed (see ci/release_notes.sh).
env:
  LIVE_ROOT: live     # deploys write to $AHEAD_WORKSPACE/live/<environment>/<repo>
stages:
  - name: build
    steps:
      - name: compile and package
        run: sh ci/build.sh
        artifact: build/orders.tar.gz
  - name: unit-tests
    steps:
      - name: unittest
        run: python3 -m unittest discover -s tests -t . -v
  - name: deploy-preprod
    environment: preprod
    steps:
      - name: deploy
        run: sh ci/deploy.sh
  - name: deploy-prod
    environment: prod
    steps:
      - name: release notes are in
        run: sh ci/release_notes.sh
      - name: deploy
        run: sh ci/deploy.sh
"""

SVC_BUILD = r"""#!/bin/sh
set -eu
version=$(cat VERSION)
echo "==> building orders $version"
python3 -m py_compile app/*.py
echo "    compiled: $(cd app && echo *.py)"
rm -rf build
mkdir -p build/orders/app
cp app/*.py build/orders/app/
cp VERSION build/orders/
tar -C build -czf build/orders.tar.gz orders
(cd build && sha256sum orders.tar.gz > orders.tar.gz.sha256)
echo "    build/orders.tar.gz: $(wc -c < build/orders.tar.gz | tr -d ' ') bytes, sha256 $(cut -c 1-16 build/orders.tar.gz.sha256)"
"""

SVC_DEPLOY = r"""#!/bin/sh
# A real pipeline would roll the release out to the environment's cluster; this one unpacks it
# into $AHEAD_WORKSPACE/$LIVE_ROOT/<environment>/<repo>/current and records what is deployed.
set -eu
live="$AHEAD_WORKSPACE/$LIVE_ROOT/$AHEAD_ENVIRONMENT/$AHEAD_REPO"
version=$(cat VERSION)
echo "==> deploying orders $version to $AHEAD_ENVIRONMENT"
echo "    (a rollout to the $AHEAD_ENVIRONMENT cluster, here: unpacking into live/$AHEAD_ENVIRONMENT/$AHEAD_REPO)"
mkdir -p "$live"
rm -rf "$live/next"
mkdir "$live/next"
tar -xzf build/orders.tar.gz -C "$live/next"
rm -rf "$live/current"
mv "$live/next/orders" "$live/current"
rmdir "$live/next"
printf 'version=%s\ncommit=%s\nrun=%s\n' "$version" "$AHEAD_COMMIT" "$AHEAD_RUN_ID" > "$live/RELEASE"
(cd "$live" && find current -type f | sort | sed 's/^/    /')
echo "    live/$AHEAD_ENVIRONMENT/$AHEAD_REPO/RELEASE: version $version"
"""

SVC_NOTES = r"""#!/bin/sh
set -eu
version=$(cat VERSION)
if awk -v h="## $version" '$0 == h { found = 1 } END { exit !found }' CHANGELOG.md; then
    echo "CHANGELOG.md has release notes for $version:"
    awk -v h="## $version" '$0 == h { on = 1; next } /^## / { on = 0 } on && NF { print "    " $0 }' CHANGELOG.md
else
    echo "CHANGELOG.md has no section '## $version': production releases need release notes."
    echo "Add them (rename '## Unreleased' if the changes are listed there) and push again."
    exit 1
fi
"""

SVC_MAIN = r'''"""The HTTP entry point: python3 -m app.main [PORT]."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from app import orders

VERSION = (Path(__file__).parent.parent / "VERSION").read_text().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply(200, {"status": "ok", "version": VERSION})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/orders":
            self.reply(404, {"error": "not found"})
            return
        order = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
# VALIDATE
        self.reply(201, {"total": orders.total(order)})

    def reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

SVC_VALIDATE = """\
        problems = orders.problems(order)
        if problems:
            self.reply(422, {"problems": problems})
            return
"""

SVC_ORDERS = '''"""Orders: prices, validation and totals."""

from __future__ import annotations
# IMPORTS
PRICES = {"apple": 0.50, "pear": 0.75, "fig": 1.25}


def total(order: dict) -> float:
    """The price of every line of `order`, rounded to cents."""
    return round(sum(PRICES[line["sku"]] * line["qty"] for line in order["lines"]), 2)
'''

SVC_PROBLEMS = '''

def problems(order: dict) -> list[str]:
    """Why `order` cannot be accepted; empty when it can."""
    lines = order.get("lines")
    if not isinstance(lines, list) or not lines:
        return ["an order needs at least one line"]
    found = []
    for number, line in enumerate(lines, 1):
        if line.get("sku") not in PRICES:
            found.append(f"line {number}: unknown sku {line.get('sku')!r}")
        qty = line.get("qty")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 100:
            found.append(f"line {number}: qty must be a whole number from 1 to 100")
    return found
'''

SVC_PRICEBOOK = '''

class PriceBook:
    """Prices from `fetch` (the catalogue service), kept for `ttl` seconds."""

    def __init__(self, fetch, ttl: float = 30.0, clock=time.monotonic) -> None:
        self._fetch, self._ttl, self._clock = fetch, ttl, clock
        self._prices: dict[str, float] = {}
        self._loaded_at: float | None = None

    def price(self, sku: str) -> float:
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._ttl:
            self._prices, self._loaded_at = dict(self._fetch()), now
        return self._prices[sku]
'''

SVC_TESTS = '''import unittest

from app import orders


class TotalTest(unittest.TestCase):
    def test_adds_every_line(self) -> None:
        order = {"lines": [{"sku": "apple", "qty": 4}, {"sku": "fig", "qty": 2}]}
        self.assertEqual(orders.total(order), 4.5)

    def test_rounds_to_cents(self) -> None:
        self.assertEqual(orders.total({"lines": [{"sku": "pear", "qty": 3}]}), 2.25)
'''

SVC_TESTS_PROBLEMS = '''

class ProblemsTest(unittest.TestCase):
    def test_a_good_order_has_none(self) -> None:
        self.assertEqual(orders.problems({"lines": [{"sku": "fig", "qty": 1}]}), [])

    def test_an_empty_order_is_refused(self) -> None:
        self.assertEqual(orders.problems({"lines": []}), ["an order needs at least one line"])

    def test_unknown_sku_and_bad_qty(self) -> None:
        found = orders.problems({"lines": [{"sku": "kiwi", "qty": 0}]})
        self.assertEqual(len(found), 2)
'''

SVC_TESTS_PRICEBOOK = '''

class PriceBookTest(unittest.TestCase):
    def setUp(self) -> None:
        self.now, self.fetches = 0.0, 0

    def fetch(self) -> dict[str, float]:
        self.fetches += 1
        return {"apple": 0.5}

    def test_prices_are_cached_for_the_ttl(self) -> None:
        book = orders.PriceBook(self.fetch, ttl=30, clock=lambda: self.now)
        book.price("apple")
        self.now = 29.0
        book.price("apple")
        self.assertEqual(self.fetches, 1)

    def test_prices_are_fetched_again_after_the_ttl(self) -> None:
        book = orders.PriceBook(self.fetch, ttl=30, clock=lambda: self.now)
        book.price("apple")
        self.now = 30.0
        self.assertEqual(book.price("apple"), 0.5)
        self.assertEqual(self.fetches, 2)
'''

SVC_README = """\
# service

The orders API. Run it with `python3 -m app.main 8080`; test it with
`python3 -m unittest discover -s tests -t .`.

The pipeline builds and tests every commit, deploys main to preprod, and then to prod once the
{notes} for the version are in CHANGELOG.md.
"""

SVC_CHANGELOG = [
    "## 1.0.0\n- /health and /orders.\n",
    "## 1.1.0\n- Orders are validated; an invalid order gets 422 and the list of problems.\n",
    "## Unreleased\n- Prices are cached for 30 seconds.\n",
]


def _svc_changelog(entries: int) -> str:
    return "# Changelog\n\n" + "\n".join(reversed(SVC_CHANGELOG[:entries]))


def _service() -> DemoRepo:
    orders_v2 = SVC_ORDERS.replace("# IMPORTS\n", "\n") + SVC_PROBLEMS
    return DemoRepo("service", (
        DemoCommit("c1", "alice", 5 * 24 + 2, "Orders service: /health and /orders", {
            ".ahead/pipeline.yml": SVC_PIPELINE, "README.md": SVC_README.format(notes="relase notes"),
            "VERSION": "1.0.0\n", "CHANGELOG.md": _svc_changelog(1),
            "ci/build.sh": SVC_BUILD, "ci/deploy.sh": SVC_DEPLOY, "ci/release_notes.sh": SVC_NOTES,
            "app/__init__.py": '"""The orders service."""\n',
            "app/main.py": SVC_MAIN.replace("# VALIDATE\n", ""),
            "app/orders.py": SVC_ORDERS.replace("# IMPORTS\n", "\n"),
            "tests/__init__.py": "", "tests/test_orders.py": SVC_TESTS,
        }),
        DemoCommit("c2", "bob", 4 * 24 + 1, "Validate orders; answer 422 when an order is invalid", {
            "VERSION": "1.1.0\n", "CHANGELOG.md": _svc_changelog(2),
            "app/main.py": SVC_MAIN.replace("# VALIDATE\n", SVC_VALIDATE),
            "app/orders.py": orders_v2,
            "tests/test_orders.py": SVC_TESTS + SVC_TESTS_PROBLEMS,
        }),
        DemoCommit("c3", "carol", 2 * 24 + 6, "Cache prices for 30 seconds", {
            "CHANGELOG.md": _svc_changelog(3),
            "app/orders.py": SVC_ORDERS.replace("# IMPORTS\n", "\nimport time\n\n") + SVC_PROBLEMS
            + SVC_PRICEBOOK,
            "tests/test_orders.py": SVC_TESTS + SVC_TESTS_PROBLEMS + SVC_TESTS_PRICEBOOK,
        }, body="The catalogue service was answering 40 price lookups per order."),
        DemoCommit("c4", "dave", 24 + 5, "Fix a typo in the README",
                   {"README.md": SVC_README.format(notes="release notes")}, committer="carol"),
        DemoCommit("c5", "alice", 4, "Release 1.2.0", {"VERSION": "1.2.0\n"}),
    ))


# -- the story's runs ------------------------------------------------------------------------------

LOCK = {"id": "3f0c2a8e-51d7-4b9e-9d1c-6a2f0e7b4c11", "operation": "OperationTypeApply",
        "who": "bob@bob-laptop", "info": "manual apply: sg.web hotfix"}


def _lock_prod(root: Path) -> None:
    """bob is applying prod by hand from his laptop, holding its state lock."""
    lock = root / "live" / "prod" / "infrastructure" / "state.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() - 240))
    lock.write_text(_json(LOCK | {"created": created}))


def _unlock_prod(root: Path) -> None:
    """bob's apply finished and released the lock; nobody re-ran the pipeline for prod."""
    (root / "live" / "prod" / "infrastructure" / "state.lock").unlink(missing_ok=True)


def story() -> Story:
    """The repos and the rounds of runs that leave the environments at different commits."""
    return Story(
        repos=[_machine_image(), _infrastructure(), _service()],
        rounds=[
            Round([DemoRun("machine-image", "c2", "succeeded"),
                   DemoRun("infrastructure", "c2", "succeeded"),
                   DemoRun("service", "c2", "succeeded")]),
            # prod's state is locked by a manual apply: infrastructure c3 stops before prod;
            # service 1.2.0 has no release notes, so it stops before prod too.
            Round([DemoRun("machine-image", "c4", "succeeded"),
                   DemoRun("infrastructure", "c3", "failed"),
                   DemoRun("service", "c5", "failed")], before=_lock_prod, after=_unlock_prod),
            # dave's rename would destroy the protected database: applied to dev, refused in
            # preprod. Then bob's branch runs checks and a plan only (after, so its plan is
            # made against the live state that run left).
            Round([DemoRun("infrastructure", "c5", "failed")]),
            Round([DemoRun("infrastructure", "bigger", "succeeded", branch="feature/bigger-db")]),
        ])


# -- building it -------------------------------------------------------------------------------------


def _git(repo: Path, *args: str, env: dict[str, str] | None = None,
         input: bytes | None = None) -> str:
    return gitio.git(repo, *GIT_OPTIONS, *args, input=input, env={**GIT_ISOLATION, **(env or {})})


def _identity(author: str, committer: str | None, when: float) -> dict[str, str]:
    a_name, a_email, a_zone = PEOPLE[author]
    c_name, c_email, c_zone = PEOPLE[committer or author]
    committed = min(when + (3 * 3600 if committer else 0), time.time())  # merged a bit later
    return {"GIT_AUTHOR_NAME": a_name, "GIT_AUTHOR_EMAIL": a_email,
            "GIT_AUTHOR_DATE": f"{int(when)} {a_zone}",
            "GIT_COMMITTER_NAME": c_name, "GIT_COMMITTER_EMAIL": c_email,
            "GIT_COMMITTER_DATE": f"{int(committed)} {c_zone}"}


def _commit(path: Path, commit: DemoCommit, now: float) -> str:
    for rel, text in commit.files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    _git(path, "add", "--all")
    message = commit.subject + (f"\n\n{commit.body}\n" if commit.body else "\n")
    env = _identity(commit.author, commit.committer, now - commit.hours_ago * 3600)
    _git(path, "commit", "--quiet", "--no-verify", "--file=-", env=env, input=message.encode())
    return _git(path, "rev-parse", "HEAD").strip()


def _make_repo(root: Path, repo: DemoRepo, now: float) -> dict[str, str]:
    """A real git repository with the repo's commits; returns {label: sha}."""
    path = root / "repos" / repo.name
    path.mkdir(parents=True)
    _git(path, "init", "--quiet")
    _git(path, "symbolic-ref", "HEAD", "refs/heads/main")
    shas = {c.label: _commit(path, c, now) for c in repo.commits}
    if repo.branch is not None:
        name, base, commit = repo.branch
        _git(path, "checkout", "--quiet", "-b", name, shas[base])
        shas[commit.label] = _commit(path, commit, now)
        _git(path, "checkout", "--quiet", "main")
    return shas


DEMO_WORKSPACE = """\
# The Change Ahead demo workspace, made by `ahead init --demo`.
#
# Three real git repositories under repos/ tell a small GitOps story: a machine image (baked,
# configured, verified, shared with dev), infrastructure (checked and planned on every branch,
# applied from main) and a service (built, tested, deployed to preprod, then prod). Their
# pipelines deploy into live/<environment>/<repo>/, the demo's stand-in for real clouds.
# Commit to a repo (git -C repos/service commit ...) and the engine runs its pipeline.
repos:
  - name: machine-image
    path: repos/machine-image
  - name: infrastructure
    path: repos/infrastructure
  - name: service
    path: repos/service

# In promotion order. Each (repo, environment) has a deployed commit and pending commits.
environments: [dev, preprod, prod]

# Who may do what. You are alice: os_users maps your login on this machine to her.
operators:
  - name: alice
    roles: [operator, approver]
    emails: [alice@example.com]
    os_users: [{user}]
  - name: bob
    roles: [operator, approver]
    emails: [bob@example.com]
  - name: carol
    roles: [viewer]
    emails: [carol@example.com]

settings:
  # state_dir defaults to .ahead/ beside this file: runs, logs and the audit log.
  cancel_grace: 2s    # how long a cancelled step gets to exit before it is killed
"""


def create(target: Path) -> None:
    """Make the demo workspace in `target`: ahead.yml, three repos, and their history of runs.

    Every run is a real run of the real engine, recorded in target/.ahead/state.db; the live
    directories under target/live/ are what those runs deployed. Takes a few seconds and runs
    its own event loop: async code calls it in a thread.

    Raises:
        InvalidRequest: `target` holds an ahead.yml, or is a directory that is not empty.
        CoreError: git failed, or a run of the story did not end as the story says (the
            workspace is then left for inspection with `ahead logs`).
    """
    target = target.expanduser().resolve()
    if (target / FILENAME).exists():
        raise InvalidRequest(f"{target / FILENAME} already exists; choose another directory")
    _make_dir(target)
    if any(target.iterdir()):
        raise InvalidRequest(f"{target} is not empty; the demo needs an empty or new directory")
    plot = story()
    now = time.time()
    for repo in plot.repos:
        for label, sha in _make_repo(target, repo, now).items():
            plot.shas[(repo.name, label)] = sha
    user = workspace.current_os_user()
    users = _scalar(user if NAME.match(user) else str(os.getuid()))
    (target / FILENAME).write_text(DEMO_WORKSPACE.format(user=users), encoding="utf-8")
    ws = workspace.read(target / FILENAME)
    for number, round_ in enumerate(plot.rounds, 1):
        if round_.before is not None:
            round_.before(target)
        _play(ws, plot, round_, number)
        if round_.after is not None:
            round_.after(target)
    with Store(ws.db_path, session="ahead init --demo") as store:
        for tracked in ws.repos:  # as an engine would: commits made from now on get runs
            _, common = gitio.git_dirs(ws.repo_dir(tracked))
            runstate.save_refs(store, tracked.name, gitio.read_branches(common), [])


def _play(ws: Workspace, plot: Story, round_: Round, number: int) -> None:
    """Queue a round's runs as the engine would for pushed commits, and run them to the end."""
    ids: dict[int, DemoRun] = {}
    with Store(ws.db_path, session="ahead init --demo") as store:
        services = Services(ws, store)
        for run in round_.runs:
            repo = ws.repo(run.repo)
            sha = plot.shas[(run.repo, run.label)]
            email = gitio.commit(ws.repo_dir(repo), sha).email
            run_id = services.queue(repo, run.branch, f"refs/heads/{run.branch}", sha, "commit",
                                    f"git:{email}")
            ids[run_id] = run
    rows = asyncio.run(_run_all(ws, set(ids)))
    for run_id, run in ids.items():
        status = rows.get(run_id, {}).get("status", "missing")
        if status != run.expect:
            raise CoreError(
                f"demo round {number}: run #{run_id} ({run.repo} {run.label}) ended {status}, "
                f"expected {run.expect}; see: ahead --workspace {ws.root} logs {run_id}")


async def _run_all(ws: Workspace, run_ids: set[int]) -> dict[int, dict[str, object]]:
    name = f"ahead init --demo (pid {os.getpid()})"
    async with Engine(ws, only_runs=run_ids, name=name) as engine:
        try:
            rows = await asyncio.gather(*(engine.wait_run(i, RUN_TIMEOUT) for i in sorted(run_ids)))
        except TimeoutError:
            raise CoreError(f"the demo's runs took longer than {RUN_TIMEOUT:.0f}s; see: "
                            f"ahead --workspace {ws.root} runs") from None
    return {int(row["id"]): row for row in rows if row}


# -- ahead demo ------------------------------------------------------------------------------------


def settle(ws: Workspace, say: Callable[[str], None] | None = None,
           timeout: float = SETTLE_TIMEOUT) -> None:
    """Run what is queued before the demo shows its status, unless an engine already runs.

    Starts an engine (which also notices commits pushed since the last one ran), waits until no
    run is queued or running, at most `timeout` seconds, and stops it. One line per finished run
    goes to `say` (print by default). Never reads from the terminal. Runs its own event loop:
    async code calls it in a thread.
    """
    report = say or (lambda line: print(line, flush=True))
    with Store(ws.db_path, session=f"ahead demo:{os.getpid()}") as store:
        if lease.holder(store, LEASE_STALE_SECONDS) is not None:
            return
    try:
        asyncio.run(_settle(ws, report, timeout))
    except LeaseHeld:
        return  # another engine started meanwhile: it will do the work


async def _settle(ws: Workspace, report: Callable[[str], None], timeout: float) -> None:
    names = {repo.name for repo in ws.repos}
    async with Engine(ws, name=f"ahead demo (pid {os.getpid()})") as engine:
        deadline = time.monotonic() + timeout
        watched: set[int] = set()
        while True:
            marks = ", ".join("?" * len(watched)) or "NULL"  # placeholders only, never values
            rows = await engine.db.call(
                engine.db.store.query,
                "SELECT id, repo, branch, status FROM runs WHERE status IN ('queued', 'running') "
                f"OR id IN ({marks}) ORDER BY id", tuple(sorted(watched)))
            active = [row for row in rows if row["status"] in ("queued", "running")
                      and row["repo"] in names]
            if active and not watched:
                report(f"running {len(active)} queued run(s) in {ws.root} ...")
            for row in rows:
                if row["id"] in watched and row["status"] not in ("queued", "running"):
                    watched.discard(row["id"])
                    report(_finished_line(row))
            watched |= {row["id"] for row in active}
            if not active:
                return
            if time.monotonic() > deadline:
                report(f"still running after {timeout:.0f}s; stopping the engine (unfinished "
                       "runs are marked interrupted)")
                return
            await asyncio.sleep(0.2)


def _finished_line(row: dict[str, object]) -> str:
    status = str(row["status"])
    branch = "" if row["branch"] == "main" else f" ({row['branch']})"
    return f"run #{row['id']} {row['repo']}{branch} {GLYPH.get(status, '?')} {status}"
