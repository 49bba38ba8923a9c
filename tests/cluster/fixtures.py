"""pytest fixtures for the three-node Slurm lab (tests/cluster/lab.py).

Use them from conftest.py:

    from tests.cluster.fixtures import slurm_lab, slurm_lab_accounting  # noqa: F401

- `slurm_lab` (session): the lab with accounting off (sacct disabled, `sacct -c` jobcomp file),
  brought up once per session; SLURM_CONF is set in os.environ for the session.
- `slurm_lab_accounting` (module): the lab with slurmdbd + MariaDB (down + up when the lab runs
  in the other mode). When its module is done and `slurm_lab` is in use, the lab goes back to
  accounting off, so the Lab that `slurm_lab` handed out stays true.

Whatever happens, the end of the session takes the lab down: nothing is left running.
Both skip when not root (and fail instead when SLURMSERVE_REQUIRE_LAB is set, as in CI). Not safe under pytest-xdist (one lab per machine).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from . import oci
from .lab import DEFAULT, Lab, down, ensure_packages, status, up

_UNSET = object()


class _LabSession:
    """The one lab of this pytest session, its current mode and the SLURM_CONF it replaced."""

    def __init__(self) -> None:
        self.accounting: bool | None = None  # None: not brought up by this session
        self.plain_in_use = False
        self.saved_conf: object = _UNSET
        self.found_up = False  # a lab someone else brought up is left up at the end

    def ensure(self, accounting: bool) -> Lab:
        if self.saved_conf is _UNSET:
            self.found_up = bool(status(DEFAULT)["healthy"])
        lab = up(DEFAULT, accounting=accounting)  # fast when already up in this mode
        if self.saved_conf is _UNSET:
            self.saved_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(lab.slurm_conf)
        self.accounting = accounting
        return lab

    def shutdown(self) -> None:
        if self.accounting is None:
            return
        self.accounting = None
        self.plain_in_use = False
        try:
            if not self.found_up:
                down(DEFAULT)
        finally:
            if self.saved_conf is not _UNSET:
                if self.saved_conf is None:
                    os.environ.pop("SLURM_CONF", None)
                else:
                    os.environ["SLURM_CONF"] = self.saved_conf  # type: ignore[assignment]
                self.saved_conf = _UNSET


_SESSION = _LabSession()


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    why = "the Slurm lab needs root (network namespaces, /etc/hosts, apt-get)"
    if os.environ.get("SLURMSERVE_REQUIRE_LAB"):  # CI: a backend claim left unproven is a failure
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def slurm_lab(request: pytest.FixtureRequest) -> Lab:
    """Three Slurm nodes (node1..node3, 8 fake GPUs each), accounting off, for the whole session."""
    _require_root()
    request.config.add_cleanup(_SESSION.shutdown)  # even if the session is interrupted
    lab = _SESSION.ensure(accounting=False)
    _SESSION.plain_in_use = True
    yield lab
    _SESSION.shutdown()


@pytest.fixture(scope="module")
def slurm_lab_accounting(request: pytest.FixtureRequest) -> Lab:
    """The lab with slurmdbd + MariaDB: sacct lists jobs and steps (with a second or two of lag)."""
    _require_root()
    request.config.add_cleanup(_SESSION.shutdown)
    lab = _SESSION.ensure(accounting=True)
    yield lab
    if _SESSION.plain_in_use:
        _SESSION.ensure(accounting=False)


# Built once per machine and kept (about 30 s, 620 MB): outside the lab directory, which `down` removes.
OCI_IMAGE = Path("/var/tmp/slurmserve-oci/image")


@pytest.fixture(scope="session")
def oci_image() -> Path:
    """An OCI bundle of Debian with python3 and Dynamo's frontend and mock engine in /opt/dynamo (not the
    host's venv), for Slurm's `srun --container` (tests/cluster/oci.py)."""
    _require_root()
    oci.build(OCI_IMAGE)
    return OCI_IMAGE


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Debian's Prometheus server, installed with the lab's packages when it is missing."""
    found = shutil.which("prometheus")
    if found is None:
        _require_root()
        ensure_packages()
        found = shutil.which("prometheus")
    assert found, "apt-get installed no prometheus"
    return found
