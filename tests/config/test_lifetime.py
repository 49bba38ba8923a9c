"""`lifetime:` (and `submit --lifetime`): durations, the chain's schedule that `plan` shows, and every bad
setting as exit 2 naming the field. Serving through the chain is not built yet: submit refuses it before
anything starts."""

from __future__ import annotations

import re

import pytest

from slurmserve.config.lifetime import duration_s, shown, slurm_time_s
from slurmserve.errors import UserError

from ..conftest import HOSTS, plan_of
from ..helpers import slurmserve_in_process

SLURM = "two-node-8gpu.yaml"  # slurm.time 04:00:00


@pytest.mark.parametrize(("text", "seconds"), [("14d", 1209600), ("12h", 43200), ("1h30m", 5400), ("90s", 90)])
def test_durations_as_a_recipe_writes_them(text, seconds):
    assert duration_s(text) == seconds and duration_s(shown(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "-1h", "400d", "0s", "1e9h"])
def test_a_duration_that_is_not_one_or_beyond_a_year_is_refused(text):
    with pytest.raises(ValueError, match="duration"):
        duration_s(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("04:00:00", 14400),
        ("30", 1800),
        ("30:15", 1815),
        ("2-00:00:00", 172800),
        ("1-12", 129600),
        ("UNLIMITED", None),
        ("0", None),
    ],
)
def test_slurm_time_limits_in_seconds(text, seconds):
    assert slurm_time_s(text) == seconds


def test_the_chain_covers_the_lifetime_with_jobs_of_the_clusters_limit():
    chain = plan_of("mocker-disagg", SLURM, "lifetime.total=14d", "lifetime.handover=30m").chain
    assert chain is not None and (chain.job_s, chain.handover_s, chain.gateway_host) == (14400, 1800, None)
    # Each job after the first adds a job less the handover: 4h + 95 x 3h30m >= 14d.
    assert chain.jobs == 96 and 14400 + (chain.jobs - 1) * 12600 >= 14 * 86400 > 14400 + (chain.jobs - 2) * 12600
    default = plan_of("mocker-disagg", SLURM, "lifetime.total=1d", "lifetime.job=1h").chain
    slowest = max(p.ready_timeout_s for p in plan_of("mocker-disagg", SLURM).processes if p.is_worker)
    assert default is not None and default.handover_s == slowest + 60  # the workers' start bound and a minute
    assert (
        plan_of("mocker-disagg", SLURM, "lifetime.total=1d", "lifetime.gateway.host=gpu02").chain.gateway_host
        == "gpu02"
    )
    assert plan_of("mocker-disagg", SLURM).chain is None


@pytest.mark.parametrize(
    ("hosts", "sets", "expected"),
    [
        (SLURM, ["lifetime.total=1d", "lifetime.handover=4h"], "lifetime.handover: a handover of 4h is not shorter"),
        (SLURM, ["lifetime.total=2h"], "lifetime.total: 2h is shorter than one job (4h)"),
        (
            SLURM,
            ["lifetime.total=1d", "lifetime.gateway.host=gpu03"],
            "no host 'gpu03' in the hosts file (did you mean 'gpu02'?)",
        ),
        ("local.yaml", ["lifetime.total=1d"], "lifetime: a chain of Slurm jobs needs the slurm backend"),
        ("ssh-two-hosts.yaml", ["lifetime.total=1d"], "this plan is for ssh"),
    ],
)
def test_bad_lifetime_settings_name_the_field(hosts, sets, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        plan_of("mocker-disagg", hosts, *sets)


@pytest.mark.parametrize(
    ("recipe", "sets", "expected"),
    [
        ("mocker-disagg-autoscale", [], "lifetime: not with autoscale for now"),
        ("mocker-two-pools", [], "lifetime: not with pools for now"),
    ],
)
def test_a_lifetime_with_autoscale_or_pools_is_refused(recipe, sets, expected):
    result = slurmserve_in_process(
        "plan", "--recipe", recipe, "--hosts", str(HOSTS / SLURM), "--set", "lifetime.total=1d"
    )
    assert result.returncode == 2 and expected in result.stderr, result.stderr


def test_submit_refuses_a_chain_before_anything_starts_and_plan_shows_its_schedule():
    hosts = str(HOSTS / SLURM)
    submitted = slurmserve_in_process("submit", "--recipe", "mocker-disagg", "--hosts", hosts, "--lifetime", "2d")
    assert submitted.returncode == 2 and "chain of jobs is not available yet" in submitted.stderr, submitted.stderr
    assert "Traceback" not in submitted.stderr
    planned = slurmserve_in_process("plan", "--recipe", "mocker-disagg", "--hosts", hosts, "--set", "lifetime.total=2d")
    assert planned.returncode == 0 and "lifetime: a chain of" in " ".join(planned.stdout.split()), planned.stdout
