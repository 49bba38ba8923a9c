"""What `slurmserve scale` accepts (an autoscaled role, a count within its min and max, the local backend),
the counts the supervisor meets, and a removed worker's drain bound."""

from __future__ import annotations

import re

import pytest

from slurmserve.errors import UserError
from slurmserve.runtime.scaling import asked_counts, drain_bound_s, wanted_counts

from ..conftest import plan_of


def test_counts_within_the_bounds_of_an_autoscaled_role_are_taken():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    assert asked_counts(plan, ["decode=3"]) == {"decode": 3}
    assert wanted_counts(plan, {}) == {"prefill": 1, "decode": 1}  # each role at its min until asked
    assert wanted_counts(plan, {"decode": 2}) == {"prefill": 1, "decode": 2}


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("decode=4", "'decode=4': decode takes a count from 1 to 3 (autoscale.decode)"),
        ("decode=0", "decode takes a count from 1 to 3"),
        ("decode=two", "decode takes a count from 1 to 3"),
        ("prefill=2", "'prefill=2': run test-run autoscales decode, not 'prefill'"),
        ("decoder=2", "autoscales decode, not 'decoder'"),
    ],
)
def test_a_count_outside_the_bounds_or_a_role_not_autoscaled_is_refused(assignment, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        asked_counts(plan_of("mocker-disagg-autoscale", "local.yaml"), [assignment])


def test_scale_is_refused_for_a_recipe_that_does_not_autoscale_and_off_the_local_backend():
    with pytest.raises(UserError, match="its recipe mocker-disagg does not autoscale"):
        asked_counts(plan_of("mocker-disagg", "local.yaml"), ["decode=2"])
    with pytest.raises(UserError, match="scale is not available yet on the ssh backend"):
        asked_counts(plan_of("mocker-disagg-autoscale", "ssh-two-hosts.yaml"), ["decode=2"])


def test_a_removed_worker_drains_within_its_grace_period_and_a_margin():
    plan = plan_of("mocker-disagg-autoscale", "local.yaml")
    assert drain_bound_s(plan.process("decode-2")) == 35.0  # the recipe's 30 s grace, 5 s to exit
