"""The kinds of value users write, each with the one form it may take.

Whatever a user writes ends up in bash scripts, `#SBATCH` lines, command lines, paths that are later
removed, or a process's environment. The rendered scripts quote every value anyway; these forms make
sure that what passes is also what the user meant (no `..` run name escaping its folder, no newline
splitting an `#SBATCH` line, no YAML number silently becoming another string).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from ..errors import UserError

IDENTIFIER_MAX = 128
IDENTIFIER = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{IDENTIFIER_MAX - 1}}}")
IDENTIFIER_FORM = "letters, digits, '.', '_' and '-', starting with a letter or digit (at most 128)"
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FLAG_NAME = re.compile(r"[a-z][a-z0-9_]*")
# RFC 1123: labels of letters, digits and '-' (not at either end), at most 63 characters, 253 in all.
HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HOST_NAME_MAX = 253
SSH_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
JUMP_HOST = re.compile(r"(?:[A-Za-z_][A-Za-z0-9._-]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?")
INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,14}")
SLURM_TIME = re.compile(r"(?:[0-9]+-)?[0-9]+(?::[0-9]+){0,2}|UNLIMITED|INFINITE")
SBATCH_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*(?:[= ][^\x00-\x1f\x7f]*)?")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PROGRAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}|/[^\x00-\x1f\x7f]{1,4095}")
# SOURCE[:TARGET[:OPTIONS]], absolute paths without ',' (Pyxis separates mounts with commas).
CONTAINER_MOUNT = re.compile(r"/[^,:\x00-\x1f\x7f]*(?::/[^,:\x00-\x1f\x7f]*(?::[a-z]+)?)?")
MOUNT_SEPARATORS = ",:"  # what separates mounts, and a mount's source from its target, in container syntax
# A file or folder name holds at most 255 bytes: a part of a name that becomes one keeps room for what is
# added around it.
MAX_NAME_PART_BYTES = 128

# Bounds no real deployment reaches. Beyond them a number is a typo (or YAML's .inf) that would only break
# later: plan.json cannot hold it, a sleep or a loop never ends, the router grid's arithmetic overflows.
MAX_COUNT = 1_000_000  # replicas, GPUs, parallel sizes, pools, requests, concurrency
MAX_TOKENS = 1_000_000_000  # prompt, context and output lengths
MAX_SECONDS = 366 * 24 * 3600  # durations and intervals: a year
MAX_MILLISECONDS = MAX_SECONDS * 1000
MAX_FACTOR = 1_000_000.0  # ratios, such as the mock engine's speedup
MAX_INTEGER = 2**53  # any other whole number: exact in every JSON reader


def _matching(pattern: re.Pattern[str], form: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {form}")
        return value

    return AfterValidator(check)


def _one_line(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if CONTROL.search(value):
        raise ValueError("must be one line of text, without control characters")
    return value


def _absolute_path(value: str) -> str:
    _one_line(value)
    expanded = os.path.expanduser(value)
    if not expanded.startswith("/"):
        raise ValueError("must be an absolute path (or start with ~)")
    return expanded


def _mountable_path(value: str) -> str:
    """A path that may be mounted into a container at its own path (`SOURCE:SOURCE`, mounts joined by ','):
    a ',' or ':' in it would end the mount early and start another one."""
    expanded = _absolute_path(value)
    if any(separator in expanded for separator in MOUNT_SEPARATORS):
        raise ValueError("must not contain ',' or ':' (it may be mounted into a container, where they separate mounts)")
    return expanded


def _address(value: str) -> str:
    """An IP address (v4 or v6), or a host name by RFC 1123. A name of numbers only (10.0.0.312) is an IPv4
    address mistyped, not a name: a top-level label is never all digits (RFC 3696), and the resolver would
    read it as an address."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if len(value) > HOST_NAME_MAX or not all(HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be an IP address or a host name (letters, digits and '-', in labels joined by '.')")
    if labels[-1].isdigit():
        raise ValueError("is no IP address (each of an IPv4 address's four numbers is 0 to 255), nor a host name")
    return value


def _model_repo(value: str) -> str:
    """model.repo: a local folder is mounted into a container like any path; a hub id (or builtin:NAME)
    names a folder of the model cache (`models--ORG--NAME`)."""
    _one_line(value)
    if value.startswith(("/", "~")):
        _mountable_path(value)
    elif len(value.encode()) > MAX_NAME_PART_BYTES:
        raise ValueError(f"a hub id or builtin:NAME must be at most {MAX_NAME_PART_BYTES} bytes (it names a folder)")
    return value


def _folder_names(value: str) -> str:
    """A name whose '/'-separated parts each become a folder name (a model's served name, with pools)."""
    _one_line(value)
    if any(len(part.encode()) > MAX_NAME_PART_BYTES for part in value.split("/")):
        raise ValueError(f"each '/'-separated part must be at most {MAX_NAME_PART_BYTES} bytes (it names a folder)")
    return value


def _env_text(value: Any) -> Any:
    """Environment values are text. YAML reads `1`, `0123`, `on` or `1.10` as numbers and booleans and
    would hand over another string than the one written, so only quoted values are taken."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value
    if value is None or isinstance(value, (list, dict)):
        raise ValueError(f"must be text, not {'nothing' if value is None else type(value).__name__}")
    kind = "boolean" if isinstance(value, bool) else "number"
    raise ValueError(f"must be text: YAML read {value!r} as a {kind}; write the value in quotes")


Identifier = Annotated[str, _matching(IDENTIFIER, IDENTIFIER_FORM)]
EnvKey = Annotated[str, _matching(ENV_KEY, "a letter or '_', then letters, digits or '_'")]
EnvValue = Annotated[str, BeforeValidator(_env_text)]
FlagName = Annotated[str, _matching(FLAG_NAME, "lowercase letters, digits and '_', starting with a letter")]
Address = Annotated[str, AfterValidator(_address)]
SshUser = Annotated[str, _matching(SSH_USER, "a user name: letters, digits, '.', '_', '-'")]
JumpHost = Annotated[str, _matching(JUMP_HOST, "[user@]host[:port]")]
Interface = Annotated[str, _matching(INTERFACE, "an interface name such as ib0 or eth0 (at most 15 characters)")]
SlurmTime = Annotated[str, _matching(SLURM_TIME, "a Slurm time such as 04:00:00, 2-00:00:00 or UNLIMITED")]
SbatchOption = Annotated[str, _matching(SBATCH_OPTION, "one sbatch option such as --exclusive or --mem=0")]
Revision = Annotated[str, _matching(REVISION, "a branch, tag or commit")]
Program = Annotated[str, _matching(PROGRAM, "a program name found on PATH, or an absolute path")]
ContainerMount = Annotated[str, _matching(CONTAINER_MOUNT, "SOURCE[:TARGET[:OPTIONS]] with absolute paths and no ','")]
Text = Annotated[str, AfterValidator(_one_line)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
MountablePath = Annotated[str, AfterValidator(_mountable_path)]
ModelRepo = Annotated[str, AfterValidator(_model_repo)]
FolderNames = Annotated[str, AfterValidator(_folder_names)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PositiveCount = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
Milliseconds = Annotated[float, Field(gt=0, le=MAX_MILLISECONDS, allow_inf_nan=False)]
WholeMilliseconds = Annotated[int, Field(ge=1, le=MAX_MILLISECONDS)]
Factor = Annotated[float, Field(gt=0, le=MAX_FACTOR, allow_inf_nan=False)]
Integer = Annotated[int, Field(ge=-MAX_INTEGER, le=MAX_INTEGER)]
Port = Annotated[int, Field(ge=1, le=65535)]


def check_identifier(value: str, field: str) -> str:
    """For names given on the command line (a run name, a process): the same form as in the files."""
    if not IDENTIFIER.fullmatch(value):
        raise UserError(f"{field} {value!r}: must be {IDENTIFIER_FORM}")
    return value
