"""CurveZMQ key files for the gateway and its clients (pyzmq's certificate format).

``xos keys new NAME`` writes ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600);
the public half goes into the config (``[gateway] keys``), the secret stays with its owner.
The gateway's own pair lives at ``gateway.server_key`` (default ``DATA/gateway/server.key_secret``)
and is made on its first start; clients need its public key (``xos keys server`` prints it).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import zmq
import zmq.auth

from engine.config import Config


def new_pair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write a fresh key pair as ``directory/name.key`` and ``name.key_secret``, the secret readable by its owner
    alone from the moment it exists; refuses a name with a directory in it and an existing pair."""
    if not name or name in (".", "..") or Path(name).name != name:
        raise ValueError(f"a key name is a plain file name (the directory is --dir), not {name!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} exists: keys are never overwritten (remove it first)")
    umask = os.umask(0o077)  # pyzmq writes the files with the process's umask: none may be readable by others
    try:
        public_file, secret_file = zmq.auth.create_certificates(d, name)
    finally:
        os.umask(umask)
    os.chmod(public_file, 0o644)  # the public half is for handing out
    return Path(public_file), Path(secret_file)


def load_pair(path: str | Path) -> tuple[bytes, bytes | None]:
    """(public, secret) Z85 keys from a ``.key_secret`` file, or (public, None) from a ``.key`` file."""
    p = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(p)
        mode = p.stat().st_mode & 0o777
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the CurveZMQ key file {p}: {exc}") from None
    if secret is not None and mode & 0o077:  # one made before session 36 (or copied) may be
        print(f"xos: warning: the secret key file {p} is readable by others (mode {mode:04o}): chmod 600 it",
              file=sys.stderr, flush=True)
    return public, secret


def server_key_path(cfg: Config) -> Path:
    if cfg.gateway.server_key:
        base = Path(cfg.path).parent if cfg.path else Path.cwd()
        return (base / cfg.gateway.server_key).resolve()
    return cfg.data_path / "gateway" / "server.key_secret"


def server_pair(cfg: Config, create: bool = True) -> tuple[bytes, bytes]:
    """The gateway's (public, secret) keys; the default location gets a fresh pair on first use."""
    path = server_key_path(cfg)
    if not path.exists():
        if not create or cfg.gateway.server_key:
            raise ValueError(f"gateway.server_key: no key file at {path} (make one with `xos keys new`)")
        new_pair(path.parent, "server")
    public, secret = load_pair(path)
    if secret is None:
        raise ValueError(f"gateway.server_key: {path} holds no secret key (give the .key_secret file)")
    return public, secret


def account_of(cfg: Config, key_file: str | Path) -> int:
    """The account the gateway registers for the key pair in ``key_file`` (``[gateway] keys``)."""
    public, _ = load_pair(key_file)
    account = next((k.account for k in cfg.gateway.keys if k.public_key == public.decode("ascii")), None)
    if account is None:
        raise ValueError(f"the key in {key_file} is not registered in the config's [gateway] keys")
    return account
