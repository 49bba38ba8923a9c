"""Stage a Hugging Face model once into a model cache on a shared filesystem, from any number of hosts at once.

The cache is a Hugging Face cache (the folder `HF_HOME` names), so every worker, and huggingface_hub
itself with `HF_HUB_OFFLINE=1`, reads it as usual:

    <cache>/hub/models--ORG--NAME/blobs/<etag>                          file contents
    <cache>/hub/models--ORG--NAME/snapshots/<sha>/<path> -> ../../blobs/<etag>
    <cache>/hub/models--ORG--NAME/snapshots/<sha>/.slurmserve-manifest.json
    <cache>/hub/models--ORG--NAME/refs/<branch or tag>                  the sha it resolved to
    <cache>/.slurmserve/locks/models--ORG--NAME--<sha>.lock             who is staging that snapshot
    <cache>/.slurmserve/staging/models--ORG--NAME--<sha>/<nonce>/       that stager's private download folder

Why not `snapshot_download(cache_dir=<cache>)` from every stager: huggingface_hub serialises
downloads with `filelock` locks (`fcntl.flock`) under `<cache>/hub/.locks/`. Where a filesystem has no
flock (Lustre mounted without `flock`: ENOSYS), filelock falls back to a `SoftFileLock`, a marker that
only a process on the marker's own host may break; huggingface_hub waits on it without a deadline, so a
stager killed on another node blocks every later stage for good. Where flock is node-local only
(Lustre `localflock`), it excludes nothing across nodes and every node fetches every file. So here:

- One lock per snapshot, our own: an exclusive-create (`O_CREAT|O_EXCL`) file holding host, PID and
  time, kept fresh by a heartbeat, taken over once its holder is provably dead (same host, PID gone)
  or its heartbeat has stood still for `stale_after` seconds (timed on the waiter's own clock, so
  clock skew between nodes does not matter).
- The lock holder runs huggingface_hub's `hf_hub_download` into a private folder on the same
  filesystem: its `.locks` there are its own and go away with the folder. Each finished file is
  renamed into `blobs/` and linked into the snapshot (a temporary name, then a rename).
- Correctness never rests on the lock: every file lands whole by rename, so two holders (a heartbeat
  that stalled past the bound) only cost bandwidth. The lock is what makes each file leave the hub once.
- A manifest marks a finished snapshot: the hub's listing at that commit (sizes, blob ids, LFS
  sha256) and the files staged with their ETags. A later stage checks existence and sizes against it:
  none of the hub's bytes, and no call at all for a revision pinned to a commit sha.

The token (argument, else `HF_TOKEN`, else the token file) goes only into request headers: never
into a file, a log line or an error message.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token, hf_hub_download
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
from huggingface_hub.file_download import REGEX_COMMIT_HASH, repo_folder_name
from huggingface_hub.utils import filter_repo_objects

from ..config.recipe import ModelSpec
from ..errors import UserError
from .lock import STALE_AFTER_S, SharedLock

log = logging.getLogger(__name__)

MANIFEST = ".slurmserve-manifest.json"
MAX_PARALLEL_FILES = 8
LINK_MARK = "~"  # between a temporary link's holder tag and the file's name: no host name holds one


# ------------------------------------------------------------------------------------------ the manifest


@dataclass(frozen=True)
class RemoteFile:
    size: int
    blob_id: str | None
    sha256: str | None  # LFS files only


@dataclass(frozen=True)
class Listing:
    """A repo's files at one commit, as the hub lists them."""

    repo: str
    sha: str
    files: dict[str, RemoteFile]


def read_manifest(snapshot: Path) -> dict | None:
    try:
        return json.loads((snapshot / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _listing_from_manifest(manifest: dict) -> Listing:
    return Listing(
        repo=manifest["repo"],
        sha=manifest["revision"],
        files={path: RemoteFile(**entry) for path, entry in manifest["files"].items()},
    )


def _write_manifest(snapshot: Path, listing: Listing, staged: dict[str, str]) -> None:
    manifest = {
        "repo": listing.repo,
        "revision": listing.sha,
        "files": {path: vars(entry) for path, entry in sorted(listing.files.items())},
        "staged": dict(sorted(staged.items())),
    }
    _write_atomically(snapshot / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _missing(snapshot: Path, listing: Listing, paths: list[str]) -> list[str]:
    """The paths whose file is absent or of the wrong size: the cheap check, no hashing of hundreds of GB."""
    missing = []
    for path in paths:
        try:
            if (snapshot / path).stat().st_size == listing.files[path].size:
                continue
        except OSError:
            pass
        missing.append(path)
    return missing


def _complete(snapshot: Path, listing: Listing, wanted: list[str]) -> bool:
    manifest = read_manifest(snapshot)
    return (
        manifest is not None
        and set(wanted) <= set(manifest.get("staged", {}))
        and not _missing(snapshot, listing, wanted)
    )


# ------------------------------------------------------------------------------------------------ staging


@dataclass(frozen=True)
class _Job:
    """One stage: what to fetch, from where, to where."""

    model: ModelSpec
    cache: Path
    endpoint: str
    token: str | None
    stale_after: float
    parallel: int = MAX_PARALLEL_FILES  # files fetched at once

    @property
    def folder(self) -> str:
        return repo_folder_name(repo_id=self.model.repo, repo_type="model")

    @property
    def storage(self) -> Path:
        return self.cache / "hub" / self.folder

    def snapshot(self, sha: str) -> Path:
        return self.storage / "snapshots" / sha

    def lock_path(self, sha: str) -> Path:
        return self.cache / ".slurmserve" / "locks" / f"{self.folder}--{sha}.lock"

    def staging_root(self, sha: str) -> Path:
        return self.cache / ".slurmserve" / "staging" / f"{self.folder}--{sha}"


def stage_model(
    model: ModelSpec,
    cache_root: str | Path,
    *,
    token: str | None = None,
    stale_after: float = STALE_AFTER_S,
    parallel: int = MAX_PARALLEL_FILES,
) -> Path:
    """Download `model` (allow/ignore patterns honoured) into the cache once; return its snapshot folder.

    The revision may be a branch or tag: it is resolved to its commit, and `refs/<revision>` records
    that. Bad input of any kind (repo, revision, token, cache path, no space) is a UserError.
    `stale_after`: how long a lock holder whose heartbeat stands still is waited for.
    """
    _check_repo_id(model.repo)
    job = _Job(
        model=model,
        cache=_cache_root(cache_root),
        token=token or get_token(),
        stale_after=stale_after,
        parallel=parallel,
        endpoint=(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"),
    )
    with _user_errors(job):
        pinned = _pinned_and_complete(job)
        if pinned is not None:
            return pinned
        if hub_offline():
            raise UserError(
                f"HF_HUB_OFFLINE=1: model.repo {model.repo} (revision {model.revision or 'main'}) is not whole in "
                f"{job.cache} and the hub may not be asked: stage it where the hub answers, or unset HF_HUB_OFFLINE"
            )
        listing = _remote_listing(job)
        wanted = _wanted(job.model, listing)
        snapshot = job.snapshot(listing.sha)
        if not _complete(snapshot, listing, wanted):
            _stage_locked(job, listing, wanted)
        if job.model.revision not in (None, listing.sha):
            _write_ref(job, job.model.revision, listing.sha)
        return snapshot


class HubUnreachable(UserError):
    """The hub could not be asked: unreachable, or HF_HUB_OFFLINE=1 forbids it (a dry run goes on without it)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason  # in a few words, for a dry run's warning


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1 (as huggingface_hub reads it, but now rather than when it was imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def staged_snapshot(model: ModelSpec, cache_root: str | Path) -> Path | None:
    """The cache's whole snapshot of a model pinned to a commit, found without the hub; None otherwise."""
    job = _Job(
        model=model,
        cache=Path(cache_root).expanduser().absolute(),
        token=None,
        stale_after=STALE_AFTER_S,
        endpoint=constants.ENDPOINT,
    )
    return _pinned_and_complete(job)


def resolve_revision(model: ModelSpec, *, token: str | None = None) -> str:
    """The commit the model's revision points at. One metadata call, which is also the check that repo,
    revision and token are good: done before anything starts, so bad input never gets that far."""
    _check_repo_id(model.repo)
    if hub_offline():
        raise HubUnreachable(
            f"HF_HUB_OFFLINE=1: model.repo {model.repo} (revision {model.revision or 'main'}) is not staged in "
            "the model cache and the hub may not be asked: stage it where the hub answers "
            "(slurmserve stage-model), or unset HF_HUB_OFFLINE",
            "HF_HUB_OFFLINE=1",
        )
    # Asked even for a revision pinned to a commit: the call is what checks repo, revision and token.
    job = _Job(
        model=model,
        cache=Path("."),
        token=token or get_token(),
        stale_after=STALE_AFTER_S,
        endpoint=(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"),
    )
    with _user_errors(job):
        return _remote_listing(job).sha


def _cache_root(cache_root: str | Path) -> Path:
    """The cache folder, made if its parent exists: a missing parent is a typo or an unmounted filesystem."""
    cache = Path(cache_root).expanduser().absolute()
    try:
        cache.mkdir(exist_ok=True)
        (cache / "hub").mkdir(exist_ok=True)
    except FileNotFoundError:
        raise UserError(
            f"model_cache {cache}: its parent folder does not exist here (is the shared filesystem mounted?)"
        ) from None
    except OSError as error:
        raise UserError(f"model_cache {cache}: cannot create or write it ({error.strerror})") from None
    return cache


def _check_repo_id(repo: str) -> None:
    if repo.startswith(("builtin:", "/", "~", ".")):
        raise UserError(f"model.repo {repo!r} is a local folder, not a Hugging Face repo: there is nothing to stage")


def _pinned_and_complete(job: _Job) -> Path | None:
    """A revision pinned to a commit whose staged snapshot checks out needs no call to the hub at all."""
    revision = job.model.revision
    if revision is None or not REGEX_COMMIT_HASH.fullmatch(revision):
        return None
    snapshot = job.snapshot(revision)
    manifest = read_manifest(snapshot)
    if manifest is None or manifest.get("repo") != job.model.repo:
        return None
    listing = _listing_from_manifest(manifest)
    return snapshot if _complete(snapshot, listing, _wanted(job.model, listing)) else None


def _remote_listing(job: _Job) -> Listing:
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


def _wanted(model: ModelSpec, listing: Listing) -> list[str]:
    wanted = sorted(
        filter_repo_objects(listing.files, allow_patterns=model.allow or None, ignore_patterns=model.ignore or None)
    )
    if not wanted:
        raise UserError(
            f"model.allow {model.allow} / model.ignore {model.ignore}: they leave none of the "
            f"{len(listing.files)} files of {model.repo} at {listing.sha} to stage"
        )
    return wanted


class LockLost(Exception):
    """Another stager took the lock over while this one was silent (stopped, or its heartbeat stalled)."""


def _stage_locked(job: _Job, listing: Listing, wanted: list[str]) -> None:
    """Under the snapshot's lock: fetch what is still missing (a peer may have fetched it all meanwhile).
    A stager that finds it lost the lock stops fetching and waits its turn again."""
    while True:
        try:
            _stage_holding(job, listing, wanted)
            return
        except LockLost:
            log.warning("another stager took over %s@%s; waiting for it", job.model.repo, listing.sha)


def _stage_holding(job: _Job, listing: Listing, wanted: list[str]) -> None:
    snapshot = job.snapshot(listing.sha)
    with SharedLock(job.lock_path(listing.sha), job.stale_after) as lock:
        if _complete(snapshot, listing, wanted):
            return
        staging_root = job.staging_root(listing.sha)
        # Each holder downloads into a folder of its own (named by lock.tag), and removes only that one,
        # and those of holders provably gone: a stopped holder taken over may resume into its own.
        for folder in staging_root.glob("*"):
            if lock.owner_gone(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        _clear_links_of_gone_holders(snapshot, lock)
        missing = _missing(snapshot, listing, wanted)
        if missing:
            _check_space(job, listing, missing)
            mine = staging_root / lock.tag
            try:
                _fetch(job, listing, missing, mine, lock)
            finally:
                shutil.rmtree(mine, ignore_errors=True)
        still_missing = _missing(snapshot, listing, wanted)
        if still_missing:
            raise UserError(
                f"model.repo {job.model.repo}: the hub at {job.endpoint} served {still_missing[0]} "
                f"with another size than its listing at {listing.sha} gives"
            )
        staged = (read_manifest(snapshot) or {}).get("staged", {})
        staged |= {path: Path(os.readlink(snapshot / path)).name for path in wanted}
        _write_manifest(snapshot, listing, staged)


def _check_space(job: _Job, listing: Listing, missing: list[str]) -> None:
    """Fail in a second rather than after hours of downloading."""
    needed = sum(listing.files[path].size for path in missing)
    free = shutil.disk_usage(job.cache).free
    if needed > free:
        raise UserError(
            f"model_cache {job.cache}: {_gb(free)} free, but staging {job.model.repo} needs {_gb(needed)} more "
            f"({len(missing)} files): free space there or point model_cache elsewhere"
        )


def _fetch(job: _Job, listing: Listing, missing: list[str], staging: Path, lock: SharedLock) -> None:
    log.info(
        "staging %s@%s: %d files, %s, into %s",
        job.model.repo,
        listing.sha,
        len(missing),
        _gb(sum(listing.files[path].size for path in missing)),
        job.snapshot(listing.sha),
    )
    with ThreadPoolExecutor(max_workers=min(job.parallel, len(missing))) as pool:
        futures = [pool.submit(_fetch_one, job, listing.sha, path, staging, lock) for path in missing]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _fetch_one(job: _Job, sha: str, path: str, staging: Path, lock: SharedLock) -> None:
    """huggingface_hub downloads into our private cache (its locks there are ours alone); we publish.
    Each file starts only while the lock is still ours."""
    if not lock.holds():
        raise LockLost
    try:
        pointer = Path(
            hf_hub_download(
                job.model.repo, path, revision=sha, cache_dir=staging, endpoint=job.endpoint, token=job.token or False
            )
        )
    except Exception:
        if not lock.holds():  # the failure may be ours no longer to report: the new holder fetches it
            raise LockLost from None
        raise
    destination = job.snapshot(sha) / path
    _publish(pointer, destination, job.storage / "blobs", lock.tag)
    log.info("fetched %s (%s)", path, _gb(destination.stat().st_size))


def _publish(pointer: Path, destination: Path, blobs: Path, holder: str) -> None:
    """Move a downloaded blob into the shared blobs (unless a whole copy is there) and link it into the
    snapshot, through a temporary link named by its holder (a later holder clears a dead one's)."""
    etag = Path(os.readlink(pointer)).name  # the private snapshot links to ../../blobs/<etag>, as the cache layout asks
    content = Path(os.path.realpath(pointer))
    blob = blobs / etag
    blobs.mkdir(parents=True, exist_ok=True)
    if not blob.is_file() or blob.stat().st_size != content.stat().st_size:
        os.replace(content, blob)
    destination.parent.mkdir(parents=True, exist_ok=True)
    link = destination.with_name(f".{holder}{LINK_MARK}{destination.name}.tmp")
    os.symlink(os.path.relpath(blob, destination.parent), link)
    os.replace(link, destination)


def _clear_links_of_gone_holders(snapshot: Path, lock: SharedLock) -> None:
    """Temporary links a holder killed between making one and renaming it into place left behind: only
    those of holders provably gone (a live one may be about to rename its own)."""
    for link in snapshot.rglob(f".*{LINK_MARK}*.tmp"):
        holder = link.name[1:].partition(LINK_MARK)[0]
        if lock.owner_gone(holder):
            link.unlink(missing_ok=True)


def _write_ref(job: _Job, revision: str, sha: str) -> None:
    """As huggingface_hub does: offline readers of a branch or tag find its commit here."""
    ref = job.storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ref.read_text() == sha:
            return
    except OSError:
        pass
    _write_atomically(ref, sha)


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


# ------------------------------------------------------------------------------------------------ errors


@contextmanager
def _user_errors(job: _Job) -> Iterator[None]:
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


def _explain(job: _Job, error: Exception) -> str | None:
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
