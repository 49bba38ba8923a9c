"""A local stand-in for the Hugging Face Hub: the part of its HTTP API that huggingface_hub downloads use.

The hub itself cannot be reached from CI. PyPI's `olah` mirror does serve local git repos offline,
but it answers a missing revision or file with `RepoNotFound` (401) and ignores Range requests, and
the tests also need byte counts per file, a required token and a gated repo, which it would need a
proxy in front of it for. So the tests use this server instead. It speaks:

    GET       /api/models/ORG/NAME[/revision/REV][?blobs=true]   sha, siblings (size, blobId, lfs)
    GET       /api/models/ORG/NAME/tree/REV[/PATH]                the files under PATH (always recursive), for snapshot_download
    HEAD/GET  /ORG/NAME/resolve/REV/PATH                          X-Repo-Commit, ETag, X-Linked-Etag/Size, Range

with the hub's error signalling (status plus `X-Error-Code`: RepoNotFound, RevisionNotFound,
EntryNotFound, GatedRepo; a refused token is a 401 without a code). It counts the file bytes it sends,
per file, so tests can prove that each file left the server once.

    with HubServer({"acme/tiny": FakeRepo(tiny_model_files())}, token="hf_x") as hub:
        os.environ["HF_ENDPOINT"] = hub.endpoint
        ...
        assert hub.bytes_served == hub.model_bytes
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

TINY_MOCK = Path(__file__).resolve().parent.parent / "slurmserve" / "models" / "tiny-mock"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
CHUNK = 64 * 1024


def fake_weights(name: str, size: int) -> bytes:
    """Deterministic bytes (same name and size, same content on every run): blob names are content hashes."""
    return random.Random(name).randbytes(size)


def tiny_model_files(shards: int = 2, shard_bytes: int = 1 << 20) -> dict[str, bytes]:
    """The shipped tiny-mock config and tokenizer, fake weight shards, and files a recipe would ignore."""
    files = {path.name: path.read_bytes() for path in sorted(TINY_MOCK.iterdir()) if path.is_file()}
    for index in range(1, shards + 1):
        name = f"model-{index:05d}-of-{shards:05d}.safetensors"
        files[name] = fake_weights(name, shard_bytes)
    files["original/consolidated.bin"] = fake_weights("original", 64 * 1024)
    files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny\n"
    return files


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    """One model repo with a single commit; `main` and any `tags` resolve to it."""

    files: dict[str, bytes]
    tags: tuple[str, ...] = ()
    gated: bool = False  # no account has accepted its terms: refused with any token or none

    @cached_property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + git_blob_id(self.files[path]).encode())
        return digest.hexdigest()

    def resolves(self, revision: str) -> bool:
        return revision in (self.sha, "main", *self.tags)

    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        """What the hub reports: the LFS object's sha256, else the git blob id."""
        content = self.files[path]
        return hashlib.sha256(content).hexdigest() if self.is_lfs(path) else git_blob_id(content)

    def sibling(self, path: str) -> dict:
        content = self.files[path]
        entry = {"rfilename": path, "size": len(content), "blobId": git_blob_id(content)}
        if self.is_lfs(path):
            entry["lfs"] = {"size": len(content), "sha256": self.etag(path), "pointerSize": 134}
        return entry

    def tree_entry(self, path: str) -> dict:
        content = self.files[path]
        entry = {"type": "file", "oid": git_blob_id(content), "size": len(content), "path": path}
        if self.is_lfs(path):
            entry["lfs"] = {"oid": self.etag(path), "size": len(content), "pointerSize": 134}
        return entry


class HubError(Exception):
    """An error answer: status, the hub's X-Error-Code (or None) and its message."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


@dataclass
class _Stats:
    """What the server sent, shared by its handler threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_by_file: Counter = field(default_factory=Counter)  # "org/name/path" -> file bytes sent
    requests: Counter = field(default_factory=Counter)  # "info" | "tree" | "HEAD" | "GET" | "other" -> count

    def count_request(self, kind: str) -> None:
        with self.lock:
            self.requests[kind] += 1

    def count_bytes(self, key: str, sent: int) -> None:
        with self.lock:
            self.bytes_by_file[key] += sent


class HubServer:
    """A threaded hub on 127.0.0.1, or another address of this machine's own test network (the lab
    bridge, for Slurm steps inside the node namespaces), on a free port, as a context manager.

    `token`: every request must carry `Authorization: Bearer <token>` (no token: 401 RepoNotFound, as
    the hub answers for a private repo; another token: 401 "Invalid credentials"). `bytes_per_second`
    slows file bodies down so a test can kill a client half-way through.
    """

    def __init__(
        self,
        repos: dict[str, FakeRepo],
        *,
        token: str | None = None,
        bytes_per_second: float | None = None,
        host: str = "127.0.0.1",
        hold_first_file: bool = False,
    ):
        self.repos, self.token, self.bytes_per_second, self.host = repos, token, bytes_per_second, host
        # hold_first_file: requests for files wait (`holding` is set at the first) until `admit` is set;
        # those that waited are answered 404 once `release` is set, without a byte: a client caught there
        # has fetched nothing. Requests after `admit` are served as usual.
        self.hold_first_file = hold_first_file
        self.holding, self.admit, self.release = threading.Event(), threading.Event(), threading.Event()
        self.stats = _Stats()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HubServer:
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._server = ThreadingHTTPServer((self.host, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hub-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def bytes_served(self) -> int:
        with self.stats.lock:
            return sum(self.stats.bytes_by_file.values())

    @property
    def bytes_by_file(self) -> dict[str, int]:
        with self.stats.lock:
            return dict(self.stats.bytes_by_file)

    @property
    def requests(self) -> dict[str, int]:
        with self.stats.lock:
            return dict(self.stats.requests)

    @property
    def model_bytes(self) -> int:
        """The size of every file of every repo served: what one full download of them costs."""
        return sum(len(content) for repo in self.repos.values() for content in repo.files.values())

    def reset_counts(self) -> None:
        with self.stats.lock:
            self.stats.bytes_by_file.clear()
            self.stats.requests.clear()

    def check_access(self, repo_id: str, authorization: str | None) -> FakeRepo:
        """The repo, or the error the hub would answer for it with these credentials."""
        sent = authorization.removeprefix("Bearer ").strip() if authorization else None
        if self.token is not None and sent is None:
            raise HubError(401, "RepoNotFound", "Repository not found")
        if self.token is not None and sent != self.token:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        if repo.gated:
            raise HubError(403 if sent else 401, "GatedRepo", f"Access to model {repo_id} is restricted")
        return repo

    @staticmethod
    def check_revision(repo: FakeRepo, revision: str) -> None:
        if not repo.resolves(revision):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the hub: huggingface_hub pools its connections
    hub: HubServer

    def log_message(self, format, *args) -> None:
        """Quiet: a test's output should be its own."""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        try:
            if parts[:2] == ["api", "models"]:
                self._api(parts[2:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
            else:
                self.hub.stats.count_request("other")
                raise HubError(404, None, "Not found")
        except HubError as error:
            self._error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a killed stager): nothing to answer

    def _api(self, parts: list[str]) -> None:
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        repo = self.hub.check_access(repo_id, self.headers.get("Authorization"))
        if not rest or rest[0] == "revision":
            revision = "/".join(rest[1:]) or "main"
            self.hub.stats.count_request("info")
            self.hub.check_revision(repo, revision)
            self._json(
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.sha,
                    "private": self.hub.token is not None,
                    "gated": "manual" if repo.gated else False,
                    "siblings": [repo.sibling(path) for path in sorted(repo.files)],
                }
            )
        elif rest[0] == "tree" and len(rest) >= 2:
            self.hub.stats.count_request("tree")
            self.hub.check_revision(repo, rest[1])
            prefix = "/".join(rest[2:])
            paths = [p for p in sorted(repo.files) if p.startswith(f"{prefix}/" if prefix else "")]
            self._json([repo.tree_entry(path) for path in paths])
        else:
            raise HubError(404, None, "Not found")

    def _resolve(self, repo_id: str, revision: str, path: str, send_body: bool) -> None:
        repo = self.hub.check_access(repo_id, self.headers.get("Authorization"))
        if self.hub.hold_first_file and not self.hub.admit.is_set():
            self.hub.holding.set()
            self.hub.release.wait(120)
            raise HubError(404, "EntryNotFound", f"{path}: held, then refused")
        self.hub.stats.count_request("GET" if send_body else "HEAD")
        self.hub.check_revision(repo, revision)
        if path not in repo.files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}", commit=repo.sha)
        content = repo.files[path]
        start, end = self._range(len(content))
        self.send_response(HTTPStatus.PARTIAL_CONTENT if (start, end) != (0, len(content)) else HTTPStatus.OK)
        etag = repo.etag(path)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{etag}"')
        if repo.is_lfs(path):
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(content)))
        self.send_header("Accept-Ranges", "bytes")
        if (start, end) != (0, len(content)):
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(content)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if send_body:
            self._send_counted(f"{repo_id}/{path}", memoryview(content)[start:end])

    def _range(self, size: int) -> tuple[int, int]:
        """[start, end) from a `Range: bytes=A-` or `bytes=A-B` header; the whole file without one."""
        header = self.headers.get("Range")
        if not header or not header.startswith("bytes="):
            return 0, size
        first, _, last = header.removeprefix("bytes=").partition("-")
        start = int(first) if first else size - int(last)
        end = int(last) + 1 if first and last else size
        return max(start, 0), min(end, size)

    def _send_counted(self, key: str, body: memoryview) -> None:
        """Counted per chunk, so a download cut short counts only what really left."""
        for offset in range(0, len(body), CHUNK):
            chunk = body[offset : offset + CHUNK]
            self.wfile.write(chunk)
            self.hub.stats.count_bytes(key, len(chunk))
            if self.hub.bytes_per_second:
                time.sleep(len(chunk) / self.hub.bytes_per_second)

    def _json(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, error: HubError) -> None:
        body = json.dumps({"error": error.message}).encode()
        self.send_response(error.status)
        if error.code:
            self.send_header("X-Error-Code", error.code)
        self.send_header("X-Error-Message", error.message)
        if error.commit:
            self.send_header("X-Repo-Commit", error.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
