"""Model staging against a local hub (tests/hub_server.py): layout, fetch-once under concurrency, locks, errors, secrets."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import constants, file_download, hf_hub_download, snapshot_download

from slurmserve.config.recipe import ModelSpec
from slurmserve.errors import UserError
from slurmserve.modelcache import staging
from slurmserve.modelcache.lock import SharedLock
from slurmserve.modelcache.snapshots import MANIFEST
from slurmserve.modelcache.staging import fetch_to_cache
from slurmserve.node import stage_model as stage_model_node
from slurmserve.transport.procfs import stat_fields
from slurmserve.waiting import wait_until

from ..hub_server import FakeRepo, HubServer, tiny_model_files

REPO = "acme/tiny"
TOKEN = "hf_PLANTEDsecretTOKENxyz0123456789"
TINY = FakeRepo(tiny_model_files(), tags=("v1",))
WEIGHTS = sorted(path for path in TINY.files if path.endswith(".safetensors"))
STAGED = sorted(path for path in TINY.files if not path.startswith("original/"))  # with ignore: original/*


@pytest.fixture(autouse=True)
def isolated_hub_client(tmp_path, monkeypatch):
    """No test may pick up a developer's own token, in this process or in the stagers it starts."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Else huggingface_hub asks the endpoint for its agent registry (once a day): not a request about the model.
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@contextmanager
def serve(monkeypatch, repos=None, **options):
    """A hub that HF_ENDPOINT points at while the block runs."""
    with HubServer(repos or {REPO: TINY}, **options) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub


@pytest.fixture
def hub(monkeypatch):
    with serve(monkeypatch) as hub:
        yield hub


def spec(revision: str | None = "main", **fields) -> ModelSpec:
    return ModelSpec(repo=REPO, revision=revision, **({"ignore": ["original/*"]} | fields))


def snapshot_dir(cache: Path) -> Path:
    return cache / "hub" / "models--acme--tiny" / "snapshots" / TINY.sha


def stager(cache: Path, *extra: str) -> subprocess.Popen:
    """`python -m slurmserve.node.stage_model` as a Slurm step runs it: a process of its own."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slurmserve.node.stage_model",
            "--repo",
            REPO,
            "--revision",
            "main",
            "--ignore",
            "original/*",
            "--cache",
            str(cache),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if not path.is_dir()) if root.exists() else []


def assert_nothing_partial(cache: Path) -> None:
    """No temporary or half-written file, no lock, no staging left; whatever is linked is whole."""
    leftovers = [p for p in files_under(cache) if p.name.endswith((".incomplete", ".tmp", ".lock", ".stale"))]
    assert leftovers == []
    assert files_under(cache / ".slurmserve") == []
    for link in files_under(snapshot_dir(cache)):
        if link.name != MANIFEST:
            assert link.stat().st_size == len(TINY.files[str(link.relative_to(snapshot_dir(cache)))])


def assert_staged(snapshot: Path, paths: list[str]) -> None:
    assert sorted(str(p.relative_to(snapshot)) for p in files_under(snapshot) if p.name != MANIFEST) == paths
    for path in paths:
        link = snapshot / path
        assert link.is_symlink() and os.readlink(link).startswith("../" * (path.count("/") + 2) + "blobs/")
        assert link.read_bytes() == TINY.files[path]


# ----------------------------------------------------------------------------------------------- layout


def test_stage_gives_the_hugging_face_cache_layout_that_offline_readers_use(hub, cache):
    snapshot = fetch_to_cache(spec("v1"), cache)

    assert snapshot == snapshot_dir(cache)
    assert_staged(snapshot, STAGED)
    assert (cache / "hub" / "models--acme--tiny" / "refs" / "v1").read_text() == TINY.sha
    manifest = json.loads((snapshot / MANIFEST).read_text())
    assert manifest["repo"] == REPO and manifest["revision"] == TINY.sha
    assert sorted(manifest["staged"]) == STAGED and sorted(manifest["files"]) == sorted(TINY.files)
    assert manifest["staged"][WEIGHTS[0]] == TINY.etag(WEIGHTS[0])
    assert manifest["files"][WEIGHTS[0]]["sha256"] == TINY.etag(WEIGHTS[0])
    # What a worker with HF_HUB_OFFLINE=1 does: huggingface_hub finds every file without the network.
    hub.reset_counts()
    assert snapshot_download(REPO, revision="v1", cache_dir=cache / "hub", local_files_only=True) == str(snapshot)
    assert hf_hub_download(
        REPO, "config.json", revision=TINY.sha, cache_dir=cache / "hub", local_files_only=True
    ) == str(snapshot / "config.json")
    assert hub.requests == {}


def test_allow_patterns_fetch_only_what_they_name(hub, cache):
    snapshot = fetch_to_cache(ModelSpec(repo=REPO, allow=["*.json"]), cache)

    json_files = sorted(path for path in TINY.files if path.endswith(".json"))
    assert_staged(snapshot, json_files)
    assert hub.bytes_served == sum(len(TINY.files[path]) for path in json_files)


def test_a_second_stage_sends_no_bytes_and_at_most_one_metadata_call(hub, cache):
    fetch_to_cache(spec("main"), cache)
    hub.reset_counts()

    assert fetch_to_cache(spec("main"), cache) == snapshot_dir(cache)
    assert hub.requests == {"info": 1}  # a branch must be resolved; nothing else
    assert fetch_to_cache(spec(TINY.sha), cache) == snapshot_dir(cache)
    assert hub.requests == {"info": 1}  # a pinned commit: not even that
    assert hub.bytes_served == 0


def test_a_corrupted_or_missing_file_is_fetched_again_and_only_it(hub, cache):
    snapshot = fetch_to_cache(spec(), cache)
    (snapshot / WEIGHTS[0]).resolve().write_bytes(b"truncated")
    (snapshot / "config.json").unlink()
    hub.reset_counts()

    fetch_to_cache(spec(), cache)

    assert_staged(snapshot, STAGED)
    assert hub.bytes_by_file == {
        f"{REPO}/{WEIGHTS[0]}": len(TINY.files[WEIGHTS[0]]),
        f"{REPO}/config.json": len(TINY.files["config.json"]),
    }


# ------------------------------------------------------------------------------------------- concurrency


@pytest.mark.slow  # eight stager processes of their own, as Slurm steps run them
def test_eight_concurrent_stagers_fetch_each_file_once(monkeypatch, cache):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with serve(monkeypatch, token=TOKEN, bytes_per_second=1_000_000) as hub:  # ~1 s: all eight meet
        stagers = [stager(cache) for _ in range(8)]
        results = [proc.communicate(timeout=120) + (proc.returncode,) for proc in stagers]

    assert [rc for _, _, rc in results] == [0] * 8, [err for _, err, _ in results]
    assert any("waiting for PID" in err for _, err, _ in results)
    assert {out.strip() for out, _, _ in results} == {str(snapshot_dir(cache))}
    assert hub.bytes_by_file == {f"{REPO}/{path}": len(TINY.files[path]) for path in STAGED}
    assert_staged(snapshot_dir(cache), STAGED)
    assert_nothing_partial(cache)
    assert not any(TOKEN in out + err for out, err, _ in results)
    assert not any(TOKEN.encode() in path.read_bytes() for path in files_under(cache))


def test_a_stager_killed_mid_download_leaves_its_lock_to_the_next_one(monkeypatch, cache):
    """Same host, dead PID: the next stager takes over at once, and clears the dead one's partial files."""
    with serve(monkeypatch, bytes_per_second=2_000_000) as hub:
        doomed = stager(cache)
        deadline = time.monotonic() + 30
        while hub.bytes_by_file.get(f"{REPO}/{WEIGHTS[0]}", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate()
        assert list((cache / ".slurmserve" / "locks").iterdir()), "the killed stager held the lock"
        assert list((cache / ".slurmserve" / "staging").rglob("*.incomplete")), "and was half-way through a file"

        started = time.monotonic()
        snapshot = fetch_to_cache(spec(), cache, stale_after=60)

    assert time.monotonic() - started < 30  # did not wait for the 60 s heartbeat bound
    assert_staged(snapshot, STAGED)
    assert_nothing_partial(cache)


def test_a_link_left_half_published_by_a_dead_holder_is_cleared(monkeypatch, cache):
    """A stager killed between making a file's temporary link and renaming it into place leaves the link in
    the snapshot; the next holder clears it (a live holder's it leaves alone)."""
    from slurmserve.modelcache.lock import SharedLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = SharedLock(cache / "probe.lock").tag.rsplit(".", 3)
    left_by_dead = snapshot_dir(cache) / f".{'.'.join([*tag[:2], str(dead.pid), tag[3]])}~README.md.tmp"
    left_by_live = snapshot_dir(cache) / f".{'.'.join([*tag[:2], str(os.getpid()), tag[3]])}~config.json.tmp"
    snapshot_dir(cache).mkdir(parents=True)
    for link in (left_by_dead, left_by_live):
        link.symlink_to("../../blobs/nothing")
    with serve(monkeypatch):
        fetch_to_cache(spec(), cache)
    assert not left_by_dead.is_symlink() and left_by_live.is_symlink()


@pytest.mark.slow  # eight stager processes of their own, as Slurm steps run them
def test_a_stopped_holder_is_taken_over_and_every_file_is_fetched_once(monkeypatch, cache):
    """The holder is SIGSTOPped past its heartbeat, just as it asks for its first file: a waiter takes
    the lock over and fetches everything; the holder, resumed, finds the lock is not its own any more,
    fetches nothing and waits its turn; none of the eight fails. (The holder fetches one file at a time
    here: with several in flight, those it had already asked for when it stopped would still arrive.)"""
    with serve(monkeypatch, hold_first_file=True) as hub:
        holder = stager(cache, "--stale-after", "2", "--parallel", "1")
        assert hub.holding.wait(60), "the first stager never asked for a file"
        holder.send_signal(signal.SIGSTOP)
        # Stopped, it asks for nothing more: with one file at a time, the request held is all it has out.
        assert wait_until(lambda: (stat_fields(holder.pid) or ["gone"])[0] == "T", 30), "the holder never stopped"
        hub.admit.set()
        try:
            others = [stager(cache, "--stale-after", "2") for _ in range(7)]
            results = [proc.communicate(timeout=120) + (proc.returncode,) for proc in others]
        finally:
            hub.release.set()
            holder.send_signal(signal.SIGCONT)
        results.append(holder.communicate(timeout=120) + (holder.returncode,))

    assert [rc for _, _, rc in results] == [0] * 8, [err for _, err, _ in results]
    assert "took over" in "".join(err for _, err, _ in results)
    assert "another stager took over" in results[-1][1]  # the resumed holder saw it
    assert hub.bytes_by_file == {f"{REPO}/{path}": len(TINY.files[path]) for path in STAGED}
    assert_staged(snapshot_dir(cache), STAGED)
    assert_nothing_partial(cache)


def plant_lock(cache: Path, host: str) -> Path:
    lock = cache / ".slurmserve" / "locks" / f"models--acme--tiny--{TINY.sha}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": host, "pidns": None, "pid": 4242, "time": "yesterday", "nonce": "x"}))
    return lock


def test_a_silent_lock_from_another_host_is_taken_over_after_the_bound(hub, cache):
    plant_lock(cache, "other-node")
    started = time.monotonic()

    snapshot = fetch_to_cache(spec(), cache, stale_after=1.0)

    assert time.monotonic() - started >= 1.0
    assert_staged(snapshot, STAGED)
    assert_nothing_partial(cache)


def test_a_lock_with_a_live_heartbeat_is_waited_for(hub, cache, monkeypatch):
    lock = plant_lock(cache, "other-node")
    done = threading.Event()

    def heartbeat():
        while not done.wait(0.1):
            os.utime(lock)

    looks: list[float] = []  # when the stager looked at the lock
    look = SharedLock._look

    def watched_look(self):
        looks.append(time.monotonic())
        return look(self)

    monkeypatch.setattr(SharedLock, "_look", watched_look)
    beating = threading.Thread(target=heartbeat)
    beating.start()
    staging = threading.Thread(target=fetch_to_cache, args=(spec(), cache), kwargs={"stale_after": 0.5})
    staging.start()
    try:
        # The stager has watched the live lock for four times the bound.
        assert wait_until(lambda: len(looks) > 1 and looks[-1] - looks[0] >= 2.0, 30), "the stager never looked"
        assert staging.is_alive() and hub.bytes_served == 0
    finally:
        done.set()
        beating.join()
    lock.unlink()  # the other node finished without staging (say it failed): our stager goes on
    staging.join(timeout=30)
    assert not staging.is_alive()
    assert_staged(snapshot_dir(cache), STAGED)


@pytest.mark.filterwarnings("ignore:flock not supported")
def test_without_flock_staging_works_and_never_consults_the_hubs_lock_markers(hub, cache, monkeypatch):
    """Lustre without the flock mount option: flock(2) fails with ENOSYS (simulated here, in this process only)."""
    calls = []

    def no_flock(fd, operation):
        calls.append(operation)
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    # huggingface_hub's own lock then becomes a marker file (SoftFileLock) that only its host may break: one
    # left by a stager killed on another node can block snapshot_download(cache_dir=<shared cache>). Whether
    # a given marker blocks depends on filelock's version (4.x reads owners and start times), so this test
    # holds what slurmserve promises: staging never reads or waits on such a marker.
    marker = cache / "hub" / ".locks" / "models--acme--tiny" / f"{TINY.etag(WEIGHTS[0])}.lock"
    marker.parent.mkdir(parents=True)
    marker.write_text("4242\nother-node\n")

    snapshot = fetch_to_cache(spec(), cache)

    assert calls, "huggingface_hub should have tried flock (in the stager's private folder)"
    assert_staged(snapshot, STAGED)
    assert marker.read_text() == "4242\nother-node\n"  # never consulted
    assert files_under(cache / ".slurmserve") == []


# ------------------------------------------------------------------------------------------------ errors


def stage_error(model: ModelSpec, cache: Path, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        fetch_to_cache(model, cache, **kwargs)
    return str(caught.value)


def test_repo_not_found(hub, cache):
    message = stage_error(ModelSpec(repo="acme/nope"), cache)
    assert "model.repo acme/nope" in message and "no such repo" in message and hub.endpoint in message
    assert files_under(cache) == []


def test_revision_not_found(hub, cache):
    message = stage_error(spec("no-such-branch"), cache)
    assert "model.revision no-such-branch" in message
    assert files_under(cache) == []


def test_missing_token(monkeypatch, cache):
    with serve(monkeypatch, token=TOKEN) as hub:
        message = stage_error(spec(), cache)
    assert "no Hugging Face token was found" in message and "HF_TOKEN" in message and "model.repo" in message
    assert hub.bytes_served == 0 and files_under(cache) == []


def test_refused_token_is_named_but_never_shown(monkeypatch, cache):
    with serve(monkeypatch, token="hf_theRightOne"):
        message = stage_error(spec(), cache, token=TOKEN)
    assert "token" in message and "refused" in message and "401" in message
    assert TOKEN not in message


def test_gated_repo(monkeypatch, cache):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with serve(monkeypatch, {REPO: FakeRepo(TINY.files, gated=True)}):
        message = stage_error(spec(), cache)
    assert f"model.repo {REPO} is gated" in message and "accepted its terms" in message
    assert TOKEN not in message


def test_token_comes_from_the_token_file(monkeypatch, cache, tmp_path):
    token_file = Path(constants.HF_TOKEN_PATH)
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN)
    with serve(monkeypatch, token=TOKEN):
        assert_staged(fetch_to_cache(spec(), cache), STAGED)


def test_unreachable_endpoint(monkeypatch, cache):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    message = stage_error(spec(), cache)
    assert "cannot reach" in message and f"127.0.0.1:{port}" in message and "HF_ENDPOINT" in message


def test_too_little_space_fails_before_any_byte_is_fetched(hub, cache, monkeypatch):
    monkeypatch.setattr(
        staging.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    )
    message = stage_error(spec(), cache)
    assert f"model_cache {cache}" in message and "free" in message
    assert hub.bytes_served == 0
    assert_nothing_partial(cache)


def test_disk_full_mid_download_leaves_nothing_partial(hub, cache, monkeypatch):
    real_http_get = file_download.http_get

    def fills_the_disk(url, temp_file, **kwargs):
        if not url.endswith(".safetensors"):
            return real_http_get(url, temp_file, **kwargs)
        temp_file.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_download, "http_get", fills_the_disk)
    message = stage_error(spec(), cache)
    assert f"model_cache {cache}" in message and "No space left on device" in message
    assert not (snapshot_dir(cache) / MANIFEST).exists()
    assert_nothing_partial(cache)

    monkeypatch.setattr(file_download, "http_get", real_http_get)
    hub.reset_counts()
    assert_staged(fetch_to_cache(spec(), cache), STAGED)  # the next stage fetches only what is missing
    assert set(hub.bytes_by_file) == {f"{REPO}/{path}" for path in WEIGHTS}


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root to mount a tmpfs in a private namespace"
)
def test_a_really_full_filesystem(hub, cache):
    """A 256 KiB tmpfs as the model cache, mounted in a mount namespace of the stager's own."""
    cache.mkdir()
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {cache} && {sys.executable} -m slurmserve.node.stage_model --repo {REPO} "
        f'--cache {cache}; echo "rc=$?"; find {cache} -type f'
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "rc=2" in result.stdout, result.stderr
    assert f"error: model_cache {cache}" in result.stderr and "free" in result.stderr
    assert result.stdout.strip().endswith("rc=2")  # and no file at all on that filesystem
    assert hub.bytes_served == 0


def test_a_malformed_repo_id(hub, cache):
    message = stage_error(ModelSpec(repo="acme/tiny/extra"), cache)
    assert message.startswith("model.repo 'acme/tiny/extra': not a Hugging Face repo id") and "\n" not in message


def test_a_local_folder_is_not_staged(cache):
    with pytest.raises(UserError, match="model.repo 'builtin:tiny-mock' is a local folder"):
        fetch_to_cache(ModelSpec(repo="builtin:tiny-mock"), cache)


def test_a_cache_whose_parent_is_missing(tmp_path):
    with pytest.raises(UserError, match="model_cache .*parent folder does not exist"):
        fetch_to_cache(spec(), tmp_path / "not-mounted" / "models")


def test_module_entry_point_exits_2_on_bad_input(hub, cache, capsys):
    assert stage_model_node.main(["--repo", "acme/nope", "--cache", str(cache)]) == 2
    assert capsys.readouterr().err.startswith("error: model.repo acme/nope")
    assert stage_model_node.main(["--repo", REPO, "--ignore", "original/*", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(snapshot_dir(cache))


def test_the_token_is_in_no_file_and_no_message(monkeypatch, cache, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level("DEBUG")
    with serve(monkeypatch, {REPO: TINY, "acme/gated": FakeRepo({"a.json": b"{}"}, gated=True)}, token=TOKEN):
        fetch_to_cache(spec(), cache)
        messages = [
            stage_error(ModelSpec(repo="acme/gated"), cache),
            stage_error(spec("nope"), cache),
            stage_error(spec(), cache, token=TOKEN[::-1]),
        ]
    assert not any(TOKEN in message or TOKEN[::-1] in message for message in messages)
    assert TOKEN not in caplog.text
    assert not any(TOKEN.encode() in path.read_bytes() for path in files_under(cache))
