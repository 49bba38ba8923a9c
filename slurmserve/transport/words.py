"""Command words that reach other nodes, for scripts and runners alike: `env K=V ...` in front of a
command, and `ssh` with what the hosts file says of reaching a host. (No fabric here: render uses them.)"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Protocol


class SshTarget(Protocol):
    """A plan node's `ssh` settings, as far as the ssh command line needs them."""

    @property
    def user(self) -> str | None: ...

    @property
    def port(self) -> int | None: ...

    @property
    def identity_file(self) -> str | None: ...

    @property
    def jump(self) -> str | None: ...


def with_env(argv: Sequence[str], env: dict[str, str] | None) -> list[str]:
    """argv prefixed with `env K=V ...`: the variables reach the command through srun (whatever the
    job's --export) and SSH (whatever the server's AcceptEnv), and values may hold commas."""
    return ["env", *(f"{name}={value}" for name, value in env.items()), *argv] if env else list(argv)


def ssh_words(address: str, target: SshTarget | None) -> list[str]:
    """`ssh` with what the hosts file says of reaching the host, every word quoted."""
    words = ["ssh", "-o", "BatchMode=yes"]
    if target and target.port:
        words += ["-p", str(target.port)]
    if target and target.identity_file:
        words += ["-i", target.identity_file]
    if target and target.jump:
        words += ["-J", target.jump]
    user = f"{target.user}@" if target and target.user else ""
    return [shlex.quote(word) for word in [*words, user + address]]
