"""The run's own OCI bundle, for Slurm's native container support (`srun --container=BUNDLE`).

Slurm (22.05, src/slurmd/slurmstepd/container.c) runs BUNDLE/rootfs whatever the bundle's config.json
says, and runc refuses a symlink there; the bundle's mounts are kept. So the run's bundle (RUN_DIR/oci)
has an empty root of its own, and the image's root filesystem comes in as mounts: each top-level entry
of the image's rootfs bound at its place, then the image's own mounts, then the run directory, the
model and the hosts file's mounts at their own paths. When the image's root is read-only, its entries
are made read-only once everything is mounted (`linux.readonlyPaths`: the runtime must still create the
mount points of /etc/hosts and the like in them). Nothing of the image is copied, and the image's
bundle is left as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..planning.plan import Container

FIELD = "slurm.container_bundle"


def bind_mount(source: str, target: str, read_only: bool = False) -> dict[str, Any]:
    return {"destination": target, "type": "bind", "source": source, "options": ["rbind", "ro" if read_only else "rw"]}


def hosts_file_mount(mount: str) -> dict[str, Any]:
    """An OCI bind mount from SOURCE[:TARGET[:OPTIONS]] (the form Pyxis takes)."""
    source, _, rest = mount.partition(":")
    target, _, options = rest.partition(":")
    return bind_mount(source, target or source, read_only=options == "ro")


def inside(rootfs: Path, entry: os.DirEntry[str]) -> str:
    """Where a top-level entry of the image leads, within the image (Debian's /bin is a link to usr/bin,
    and an absolute link means the image's root, not the node's)."""
    if not entry.is_symlink():
        return entry.path
    target = os.readlink(entry.path)
    return str(rootfs / target.lstrip("/")) if target.startswith("/") else str(rootfs / target)


def image_mounts(rootfs: Path, taken: set[str]) -> list[dict[str, Any]]:
    """The image's top-level entries as bind mounts, but those the image's config mounts over (/proc,
    /dev, a tmpfs /tmp...)."""
    try:
        entries = sorted(os.scandir(rootfs), key=lambda entry: entry.name)
    except OSError as error:
        raise UserError(f"{FIELD}: cannot read the image's root filesystem {rootfs} ({error.strerror})") from None
    return [bind_mount(inside(rootfs, entry), f"/{entry.name}") for entry in entries if f"/{entry.name}" not in taken]


def run_bundle_config(container: Container) -> str:
    """config.json of the run's bundle: the image's config, its root filesystem mounted into an empty
    root of the run's own, with the container's mounts added."""
    bundle = Path(container.source)
    try:
        config = json.loads((bundle / "config.json").read_text())
        root = config["root"]
        rootfs = bundle / str(root["path"])  # an absolute root.path stays as it is
        own_mounts = list(config.get("mounts", []))
        taken = {os.path.normpath(str(mount["destination"])) for mount in own_mounts}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{FIELD} {bundle}: not an OCI bundle (no readable config.json with root.path and mounts: {error})"
        ) from None
    image = image_mounts(rootfs, taken)
    config["root"] = {"path": "rootfs", "readonly": True}  # the run's empty root: nothing is written there
    config["mounts"] = [*image, *own_mounts, *map(hosts_file_mount, container.mounts)]
    if root.get("readonly", False):
        linux = config.setdefault("linux", {})
        linux["readonlyPaths"] = [*linux.get("readonlyPaths", []), *(mount["destination"] for mount in image)]
    return json.dumps(config, indent=2) + "\n"
