"""SSH public keys as ahead.yml lists them, and the key files `ahead serve` and the demo keep.

`parse_public_key` checks an OpenSSH public key line (`ssh-ed25519 AAAA... comment`) by its wire
format and gives its SHA256 fingerprint, the same string `asyncssh.SSHKey.get_fingerprint()`
and `ssh-keygen -l` print: the workspace parser validates keys with it (no asyncssh import on
every CLI call), and the server compares fingerprints. Key files are written with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from pathlib import Path

# key type → the number of length-prefixed fields after the type name in its blob
KEY_FIELDS = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}
MIN_RSA_BITS = 2048


class KeyProblem(ValueError):
    """A public key line that is not a usable SSH public key; the message says why."""


def _fields(blob: bytes) -> list[bytes]:
    fields, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise KeyProblem("the key data is truncated")
        (size,) = struct.unpack(">I", blob[at : at + 4])
        if at + 4 + size > len(blob):
            raise KeyProblem("the key data is truncated")
        fields.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return fields


def parse_public_key(line: str) -> tuple[str, str]:
    """(key type, SHA256 fingerprint) of an OpenSSH public key line.

    Raises:
        KeyProblem: not a public key line, an unsupported type, or data that does not match it.
    """
    parts = line.strip().split()
    if len(parts) < 2:
        raise KeyProblem("expected 'TYPE BASE64 [comment]', as in a .pub file")
    kind, data = parts[0], parts[1]
    if kind not in KEY_FIELDS:
        if "PRIVATE KEY" in line:
            raise KeyProblem("this is a private key; list the public key (the .pub file)")
        raise KeyProblem(f"unsupported key type {kind[:40]!r} (use " + ", ".join(KEY_FIELDS) + ")")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem("the key data is not valid base64") from None
    fields = _fields(blob)
    if not fields or fields[0] != kind.encode():
        raise KeyProblem(f"the key data is not a {kind} key")
    if len(fields) != 1 + KEY_FIELDS[kind]:
        raise KeyProblem(f"the key data does not have the fields of a {kind} key")
    if kind == "ssh-ed25519" and len(fields[1]) != 32:
        raise KeyProblem("an ssh-ed25519 key has 32 bytes of key data")
    if kind == "ssh-rsa" and (len(fields[2].lstrip(b"\0")) * 8) < MIN_RSA_BITS:
        raise KeyProblem(f"RSA keys need at least {MIN_RSA_BITS} bits; an ed25519 key is better")
    return kind, fingerprint(blob)


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def write_private(path: Path, data: bytes) -> None:
    """Write a private key file created with mode 0600 (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def host_key_path(state_dir: Path) -> Path:
    return state_dir / "ssh" / "host_ed25519"


def load_or_create_host_key(state_dir: Path) -> Path:
    """The server's ed25519 host key file, created once (mode 0600) and kept: the same
    fingerprint across restarts. Refuses a key file others can read."""
    import asyncssh

    path = host_key_path(state_dir)
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        try:
            write_private(path, key.export_private_key())
        except FileExistsError:
            pass  # another process made it first
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path


def generate_key_pair(path: Path, comment: str) -> str:
    """Write an ed25519 private key at `path` (0600) and `path`.pub; return the public line."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    write_private(path, key.export_private_key())
    public: bytes = key.export_public_key()
    path.with_name(path.name + ".pub").write_bytes(public)
    return public.decode().strip()
