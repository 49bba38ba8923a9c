"""The probe through node runners: each runner's output decoded (a Slurm step over a node set labels each
line with its task), named by the hosts file or by the probe itself, and unreachable nodes named."""

from __future__ import annotations

import base64
import textwrap

import pytest

from slurmserve.errors import UserError
from slurmserve.hardware.inventory import decoded_outputs, probe
from slurmserve.transport.runner import LocalRunner, Ran

from .test_hwprobe import FIXTURES

NODE_TEXT = (FIXTURES / "pcie_2gpu_no_rdma.txt").read_text()


def encoded(text: str) -> list[str]:
    """As `base64` prints it: lines of 76 characters."""
    return textwrap.wrap(base64.b64encode(text.encode()).decode(), 76)


class Answering(LocalRunner):
    def __init__(self, ran: Ran | Exception):
        self.ran = ran

    def run(self, argv, *, env=None, timeout, cancel=None):
        assert argv[:2] == ["bash", "-c"]
        if isinstance(self.ran, Exception):
            raise self.ran
        return self.ran


def test_a_labelled_step_output_splits_by_task():
    other = NODE_TEXT.replace("hua-System-Product-Name", "other-box")
    first, second = ([f"{task}: {chunk}" for chunk in encoded(text)] for task, text in (("0", NODE_TEXT), ("1", other)))
    interleaved = [line for pair in zip(first, second, strict=False) for line in pair]  # srun mixes the tasks' lines
    interleaved += first[len(second) :] + second[len(first) :]
    assert sorted(decoded_outputs("\n".join(interleaved))) == sorted([NODE_TEXT, other])
    assert decoded_outputs("\n".join(encoded(NODE_TEXT))) == [NODE_TEXT]


def test_a_named_runner_names_its_node_and_unnamed_ones_the_probe_does():
    ran = Ran(0, "\n".join(encoded(NODE_TEXT)), "")
    outputs = probe([("listed-name", Answering(ran)), (None, Answering(ran))])
    assert outputs == {"listed-name": NODE_TEXT, "hua-System-Product-Name": NODE_TEXT}


def test_nodes_that_fail_are_all_named():
    with pytest.raises(UserError) as failed:
        probe([("a", Answering(OSError("no route"))), ("b", Answering(Ran(1, "", "srun: error: Unable to allocate")))])
    assert str(failed.value) == (
        "hosts: this machine: OSError: no route; this machine: the probe failed: srun: error: Unable to allocate"
    )
