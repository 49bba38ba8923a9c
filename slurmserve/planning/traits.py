"""What the layers below the backends need to know of a backend, as facts named for what they mean.

Each backend (slurmserve/backends/) states its own `traits`; the code above the backends asks
`backends.traits_for(name)` and hands them down (the planner, rendering and health decisions take them as
an input), so that nothing outside the backends branches on a backend's name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BackendTraits(BaseModel):
    """One backend's facts; each that it does not state is false of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The file that starts the deployment, in the run directory (any others it uses sit beside it).
    launch_script: str
    # Every process runs on the machine that launches the deployment: one launch script starts them all,
    # and the nodes need nothing of slurmserve that this machine does not already have.
    runs_on_this_machine: bool = False
    # A scheduler's job holds the nodes: one batch script starts every process as a step of the job (an MPI
    # world per worker, containers), the supervisor runs inside it, and the deployment ends with it. Each
    # deployment being a job of its own, several can run side by side.
    has_allocation: bool = False
    # The model is staged from the hub by a step of the job, on a node, rather than by `submit` beforehand.
    stages_model_in_job: bool = False
    # The nodes are reached over SSH, as the hosts file's entries say (user, port, identity file, jump host).
    reaches_nodes_over_ssh: bool = False
    # The head node reads the run directory the supervisor writes (it is this machine's, or on a shared
    # filesystem). Where it may not, what its processes read is copied there and lists what it would find.
    head_reads_run_dir: bool = False
