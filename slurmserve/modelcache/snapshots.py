"""A model's snapshots in the cache: where a stage puts its files, which of a repo's files it wants, and the
manifest that marks a snapshot whole.

The cache is a Hugging Face cache (the folder `HF_HOME` names), so every worker, and huggingface_hub
itself with `HF_HUB_OFFLINE=1`, reads it as usual:

    <cache>/hub/models--ORG--NAME/blobs/<etag>                          file contents
    <cache>/hub/models--ORG--NAME/snapshots/<sha>/<path> -> ../../blobs/<etag>
    <cache>/hub/models--ORG--NAME/snapshots/<sha>/.slurmserve-manifest.json
    <cache>/hub/models--ORG--NAME/refs/<branch or tag>                  the sha it resolved to
    <cache>/.slurmserve/locks/models--ORG--NAME--<sha>.lock             who is staging that snapshot
    <cache>/.slurmserve/staging/models--ORG--NAME--<sha>/<nonce>/       that stager's private download folder
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import filter_repo_objects

from ..config.recipe import ModelSpec
from ..errors import UserError

MANIFEST = ".slurmserve-manifest.json"
MAX_PARALLEL_FILES = 8


@dataclass(frozen=True)
class StageJob:
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
        return staging_root(self.cache, self.model.repo, sha)


def staging_root(cache: Path, repo: str, sha: str) -> Path:
    """Where the stagers of a snapshot download it (a folder each) before it moves into the cache."""
    return cache / ".slurmserve" / "staging" / f"{repo_folder_name(repo_id=repo, repo_type='model')}--{sha}"


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


def listing_from_manifest(manifest: dict) -> Listing:
    return Listing(
        repo=manifest["repo"],
        sha=manifest["revision"],
        files={path: RemoteFile(**entry) for path, entry in manifest["files"].items()},
    )


def write_manifest(snapshot: Path, listing: Listing, staged: dict[str, str]) -> None:
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


def missing_files(snapshot: Path, listing: Listing, paths: list[str]) -> list[str]:
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


def is_complete(snapshot: Path, listing: Listing, wanted: list[str]) -> bool:
    manifest = read_manifest(snapshot)
    return (
        manifest is not None
        and set(wanted) <= set(manifest.get("staged", {}))
        and not missing_files(snapshot, listing, wanted)
    )


def wanted_files(model: ModelSpec, listing: Listing) -> list[str]:
    wanted = sorted(
        filter_repo_objects(listing.files, allow_patterns=model.allow or None, ignore_patterns=model.ignore or None)
    )
    if not wanted:
        raise UserError(
            f"model.allow {model.allow} / model.ignore {model.ignore}: they leave none of the "
            f"{len(listing.files)} files of {model.repo} at {listing.sha} to stage"
        )
    return wanted


def write_ref(job: StageJob, revision: str, sha: str) -> None:
    """As huggingface_hub does: offline readers of a branch or tag find its commit here."""
    ref = job.storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ref.read_text() == sha:
            return
    except OSError:
        pass
    _write_atomically(ref, sha)
