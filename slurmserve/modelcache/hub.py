"""Asking the Hugging Face hub: whether it may be asked, a revision's commit and its files, and its
failures as one paragraph that names what to fix.

The token (argument, else `HF_TOKEN`, else the token file) goes only into request headers: never
into a file, a log line or an error message.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    HTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..config.recipe import ModelSpec
from ..errors import UserError
from .lock import STALE_AFTER_S
from .snapshots import Listing, RemoteFile, StageJob


def hub_endpoint() -> str:
    """The hub asked: HF_ENDPOINT now (huggingface_hub reads it once, when imported), else its default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


class HubUnreachable(UserError):
    """The hub could not be asked: unreachable, or HF_HUB_OFFLINE=1 forbids it (a dry run goes on without it)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason  # in a few words, for a dry run's warning


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1 (as huggingface_hub reads it, but now rather than when it was imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def check_repo_id(repo: str) -> None:
    if repo.startswith(("builtin:", "/", "~", ".")):
        raise UserError(f"model.repo {repo!r} is a local folder, not a Hugging Face repo: there is nothing to stage")


def resolve_revision(model: ModelSpec, *, token: str | None = None) -> str:
    """The commit the model's revision points at. One metadata call, which is also the check that repo,
    revision and token are good: done before anything starts, so bad input never gets that far."""
    check_repo_id(model.repo)
    if hub_offline():
        raise HubUnreachable(
            f"HF_HUB_OFFLINE=1: model.repo {model.repo} (revision {model.revision or 'main'}) is not staged in "
            "the model cache and the hub may not be asked: stage it where the hub answers "
            "(slurmserve stage-model), or unset HF_HUB_OFFLINE",
            "HF_HUB_OFFLINE=1",
        )
    # Asked even for a revision pinned to a commit: the call is what checks repo, revision and token.
    job = StageJob(
        model=model, cache=Path("."), token=token or get_token(), stale_after=STALE_AFTER_S, endpoint=hub_endpoint()
    )
    with explained_errors(job):
        return remote_listing(job).sha


def remote_listing(job: StageJob) -> Listing:
    """One call: the commit a revision points at, and its files with sizes and hashes."""
    api = HfApi(endpoint=job.endpoint, token=job.token or False)
    info = api.model_info(job.model.repo, revision=job.model.revision or "main", files_metadata=True)
    files = {
        sibling.rfilename: RemoteFile(
            size=sibling.size or 0, blob_id=sibling.blob_id, sha256=sibling.lfs.sha256 if sibling.lfs else None
        )
        for sibling in info.siblings or []
    }
    if info.sha is None:
        raise UserError(f"model.repo {job.model.repo}: the hub names no commit for revision {job.model.revision}")
    return Listing(repo=job.model.repo, sha=info.sha, files=files)


@contextmanager
def explained_errors(job: StageJob) -> Iterator[None]:
    """The hub's and the filesystem's failures as one paragraph naming what to fix (never the token)."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        message = _explain(job, error)
        if message is None:
            raise
        if job.token:
            message = message.replace(job.token, "***")
        if _unreachable(error):
            raise HubUnreachable(message, f"{job.endpoint} did not answer") from None
        raise UserError(message) from None


def _unreachable(error: Exception) -> bool:
    """No answer from the hub (or a server error): nothing said about repo, revision or token."""
    if isinstance(error, HfHubHTTPError):
        return error.response is None or error.response.status_code >= 500
    return isinstance(error, (HTTPError, ConnectionError, LocalEntryNotFoundError))


def _explain(job: StageJob, error: Exception) -> str | None:
    repo, revision, endpoint = job.model.repo, job.model.revision or "main", job.endpoint
    token = (
        f"the Hugging Face token (from HF_TOKEN or {constants.HF_TOKEN_PATH})"
        if job.token
        else f"no Hugging Face token was found (set HF_TOKEN or write {constants.HF_TOKEN_PATH})"
    )
    if isinstance(error, GatedRepoError):
        who = f"{token} must be one" if job.token else f"{token}: it takes one"
        return f"model.repo {repo} is gated: {who} of an account that accepted its terms at {endpoint}/{repo}"
    if isinstance(error, RepositoryNotFoundError):
        reason = f"{token} has no access to it" if job.token else f"it is private and {token}"
        return f"model.repo {repo}: no such repo at {endpoint}, or {reason}"
    if isinstance(error, RevisionNotFoundError):
        return f"model.revision {revision}: repo {repo} at {endpoint} has no such branch, tag or commit"
    if isinstance(error, RemoteEntryNotFoundError):
        return f"model.repo {repo}: a file its listing names at {revision} is not served by {endpoint}"
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code in (401, 403):
        refused = f"{token} was refused" if job.token else token
        return f"model.repo {repo}: {endpoint} answered HTTP {error.response.status_code}: {refused}"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "an error"
        return (
            f"the Hugging Face endpoint {endpoint} (HF_ENDPOINT) answered HTTP {status} for model.repo {repo}: "
            "try again later"
        )
    if isinstance(error, HFValidationError):
        return f"model.repo {repo!r}: not a Hugging Face repo id (ORG/NAME): {_first_line(error)}"
    if isinstance(error, (HTTPError, ConnectionError, LocalEntryNotFoundError)):
        return (
            f"cannot reach the Hugging Face endpoint {endpoint} (HF_ENDPOINT) to stage model.repo {repo}: "
            f"{type(error).__name__}: {_first_line(error)}"
        )
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"model_cache {job.cache}: {error.strerror} while staging {repo}: half-fetched files were removed, "
            "whole ones are kept for the next try"
        )
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"model_cache {job.cache}: cannot write {error.filename} ({error.strerror})"
    return None


def _first_line(error: Exception) -> str:
    return next(iter(str(error).splitlines()), "")
