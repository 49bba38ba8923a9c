"""Stage a Hugging Face model once into a model cache on a shared filesystem, from any number of hosts at once.

The cache is a Hugging Face cache; where each file goes: modelcache.snapshots. Asking the hub, and its
failures explained: modelcache.hub.

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
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from huggingface_hub import constants, get_token, hf_hub_download
from huggingface_hub.file_download import REGEX_COMMIT_HASH

from ..config.recipe import ModelSpec
from ..errors import UserError
from .hub import check_repo_id, explained_errors, hub_endpoint, hub_offline, remote_listing
from .lock import STALE_AFTER_S, SharedLock
from .snapshots import (
    MAX_PARALLEL_FILES,
    Listing,
    StageJob,
    is_complete,
    listing_from_manifest,
    missing_files,
    read_manifest,
    wanted_files,
    write_manifest,
    write_ref,
)

log = logging.getLogger(__name__)

LINK_MARK = "~"  # between a temporary link's holder tag and the file's name: no host name holds one


def fetch_to_cache(
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
    check_repo_id(model.repo)
    job = StageJob(
        model=model,
        cache=_cache_root(cache_root),
        token=token or get_token(),
        stale_after=stale_after,
        parallel=parallel,
        endpoint=hub_endpoint(),
    )
    with explained_errors(job):
        pinned = _pinned_and_complete(job)
        if pinned is not None:
            return pinned
        if hub_offline():
            raise UserError(
                f"HF_HUB_OFFLINE=1: model.repo {model.repo} (revision {model.revision or 'main'}) is not whole in "
                f"{job.cache} and the hub may not be asked: stage it where the hub answers, or unset HF_HUB_OFFLINE"
            )
        listing = remote_listing(job)
        wanted = wanted_files(job.model, listing)
        snapshot = job.snapshot(listing.sha)
        if not is_complete(snapshot, listing, wanted):
            _stage_locked(job, listing, wanted)
        if job.model.revision not in (None, listing.sha):
            write_ref(job, job.model.revision, listing.sha)
        return snapshot


def staged_snapshot(model: ModelSpec, cache_root: str | Path) -> Path | None:
    """The cache's whole snapshot of a model pinned to a commit, found without the hub; None otherwise."""
    job = StageJob(
        model=model,
        cache=Path(cache_root).expanduser().absolute(),
        token=None,
        stale_after=STALE_AFTER_S,
        endpoint=constants.ENDPOINT,
    )
    return _pinned_and_complete(job)


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


def _pinned_and_complete(job: StageJob) -> Path | None:
    """A revision pinned to a commit whose staged snapshot checks out needs no call to the hub at all."""
    revision = job.model.revision
    if revision is None or not REGEX_COMMIT_HASH.fullmatch(revision):
        return None
    snapshot = job.snapshot(revision)
    manifest = read_manifest(snapshot)
    if manifest is None or manifest.get("repo") != job.model.repo:
        return None
    listing = listing_from_manifest(manifest)
    return snapshot if is_complete(snapshot, listing, wanted_files(job.model, listing)) else None


class LockLost(Exception):
    """Another stager took the lock over while this one was silent (stopped, or its heartbeat stalled)."""


def _stage_locked(job: StageJob, listing: Listing, wanted: list[str]) -> None:
    """Under the snapshot's lock: fetch what is still missing (a peer may have fetched it all meanwhile).
    A stager that finds it lost the lock stops fetching and waits its turn again."""
    while True:
        try:
            _stage_holding(job, listing, wanted)
            return
        except LockLost:
            log.warning("another stager took over %s@%s; waiting for it", job.model.repo, listing.sha)


def _stage_holding(job: StageJob, listing: Listing, wanted: list[str]) -> None:
    snapshot = job.snapshot(listing.sha)
    with SharedLock(job.lock_path(listing.sha), job.stale_after) as lock:
        if is_complete(snapshot, listing, wanted):
            return
        staging_root = job.staging_root(listing.sha)
        # Each holder downloads into a folder of its own (named by lock.tag), and removes only that one,
        # and those of holders provably gone: a stopped holder taken over may resume into its own.
        for folder in staging_root.glob("*"):
            if lock.owner_gone(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        _clear_links_of_gone_holders(snapshot, lock)
        missing = missing_files(snapshot, listing, wanted)
        if missing:
            _check_space(job, listing, missing)
            mine = staging_root / lock.tag
            try:
                _fetch(job, listing, missing, mine, lock)
            finally:
                shutil.rmtree(mine, ignore_errors=True)
        still_missing = missing_files(snapshot, listing, wanted)
        if still_missing:
            raise UserError(
                f"model.repo {job.model.repo}: the hub at {job.endpoint} served {still_missing[0]} "
                f"with another size than its listing at {listing.sha} gives"
            )
        staged = (read_manifest(snapshot) or {}).get("staged", {})
        staged |= {path: Path(os.readlink(snapshot / path)).name for path in wanted}
        write_manifest(snapshot, listing, staged)


def _check_space(job: StageJob, listing: Listing, missing: list[str]) -> None:
    """Fail in a second rather than after hours of downloading."""
    needed = sum(listing.files[path].size for path in missing)
    free = shutil.disk_usage(job.cache).free
    if needed > free:
        raise UserError(
            f"model_cache {job.cache}: {_gb(free)} free, but staging {job.model.repo} needs {_gb(needed)} more "
            f"({len(missing)} files): free space there or point model_cache elsewhere"
        )


def _fetch(job: StageJob, listing: Listing, missing: list[str], staging: Path, lock: SharedLock) -> None:
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


def _fetch_one(job: StageJob, sha: str, path: str, staging: Path, lock: SharedLock) -> None:
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


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
