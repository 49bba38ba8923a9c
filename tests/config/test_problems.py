"""pydantic's report in the user's words: the source of each value (file or `--set`), list entries by index and
name, the closest valid key or value, no pydantic phrasing; YAML errors at their line; addresses checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from slurmserve.config.files import read_yaml_mapping
from slurmserve.config.hosts import Hosts, load_hosts
from slurmserve.config.problems import describe_validation_error, named, valid_keys
from slurmserve.config.recipe import Recipe, load_recipe
from slurmserve.errors import UserError, closest, did_you_mean


def message_of(data: dict, model: type, assignments: tuple[str, ...] = ()) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(describe_validation_error("f.yaml", caught.value, data, model, assignments))


HOSTS = {"backend": "ssh", "hosts": [{"name": "gpu01"}, {"name": "gpu02", "address": "10.0.0.2"}]}


def test_did_you_mean_takes_the_closest_choice_or_says_nothing():
    assert closest("replica", ["replicas", "tensor_parallel"]) == "replicas"
    assert did_you_mean("replica", ["replicas"], "decode.") == " (did you mean 'decode.replicas'?)"
    assert did_you_mean("zzzz", ["replicas"]) == ""


def test_an_unknown_key_is_named_with_the_key_meant_by_its_full_path():
    recipe = {"name": "r", "model": {"repo": "x"}, "mode": "agg", "agg": {"replica": 2}}
    assert message_of(recipe, Recipe) == "f.yaml: agg.replica: unknown key (did you mean 'agg.replicas'?)"


def test_a_list_entry_is_named_by_index_and_name():
    hosts = HOSTS | {"hosts": [{"name": "gpu01"}, {"name": "gpu02", "adress": "10.0.0.2"}]}
    assert message_of(hosts, Hosts) == "f.yaml: hosts[1] (gpu02): adress: unknown key (did you mean 'address'?)"
    assert named(("node", "nics", 0, "port"), {"node": {"nics": [{"name": "mlx5_0"}]}}) == "node.nics[0] (mlx5_0): port"


def test_a_value_written_by_set_names_the_set_not_the_file():
    recipe = {"name": "r", "model": {"repo": "x"}, "mode": "agg", "agg": {"replicas": 0}}
    said = message_of(recipe, Recipe, ("agg.replicas=0",))
    assert said == "--set agg.replicas=0: agg.replicas: must be at least 1 (got 0)"
    made = {"name": "r", "model": {"repo": "x"}, "mode": "agg", "agg": {}, "ag": {"replicas": 2}}
    assert message_of(made, Recipe, ("ag.replicas=2",)) == "--set ag.replicas=2: ag: unknown key (did you mean 'agg'?)"
    whole = {"name": "r", "model": {"repo": "x"}, "mode": "disagg", "agg": {}}
    assert message_of(whole, Recipe, ("mode=disagg",)).startswith("f.yaml with --set mode=disagg: mode disagg needs")


def test_a_literal_gets_its_choices_and_the_closest_one():
    said = message_of({"name": "r", "model": {"repo": "x"}, "mode": "agg", "agg": {}, "engine": "mocer"}, Recipe)
    assert said == "f.yaml: engine: must be 'trtllm', 'vllm' or 'mocker' (got 'mocer') (did you mean 'mocker'?)"


def test_no_pydantic_wording_and_long_values_cut_short():
    said = message_of({"name": "r", "model": {"repo": "x" * 300}, "mode": "agg", "agg": {}}, Recipe)
    assert "Value error" not in said and "Input should" not in said
    assert said.startswith("f.yaml: model.repo: a hub id or builtin:NAME must be at most 128 bytes") and "…)" in said
    assert (
        message_of({"model": {"repo": "x"}, "mode": "agg", "agg": {}}, Recipe)
        == "f.yaml: name: missing (a required key)"
    )


def test_the_keys_valid_at_a_place_are_found_through_lists_and_optionals():
    assert "address" in valid_keys(Hosts, ("hosts", 1))
    assert "port" in valid_keys(Hosts, ("node", "nics", 0))
    assert "replicas" in valid_keys(Recipe, ("pools", 0, "decode"))
    assert valid_keys(Recipe, ("env",)) == []


def test_a_union_reports_one_problem_a_value():
    said = message_of({"name": "r", "model": {"repo": "x"}, "mode": "agg", "agg": {"args": {"x": [1]}}}, Recipe)
    assert said == "f.yaml: agg.args.x: must be text, a number or true/false"


def test_a_yaml_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmodel: {repo: x\nagg: [1\n")
    with pytest.raises(UserError) as caught:
        read_yaml_mapping(path)
    assert str(caught.value) == (
        f"{path}, line 3, column 4: not valid YAML: expected ',' or '}}', but got ':'; while parsing a flow mapping"
    )


@pytest.mark.parametrize("address", ["10.0.0.12", "fe80::1", "gpu01", "node-4.cluster.local", "gpu01.", "a" * 63])
def test_addresses_and_host_names_are_taken(address):
    assert Hosts.model_validate(HOSTS | {"hosts": [{"name": "gpu01", "address": address}]})


@pytest.mark.parametrize(
    "address, why",
    [
        ("10.0.0.312", "is no IP address (each of an IPv4 address's four numbers is 0 to 255), nor a host name"),
        ("10.0.0", "is no IP address"),
        ("gpu_01", "must be an IP address or a host name"),
        ("-gpu01", "must be an IP address or a host name"),
        ("a" * 64, "must be an IP address or a host name"),
        ("gpu01..x", "must be an IP address or a host name"),
    ],
)
def test_addresses_that_are_neither_are_refused_naming_the_host(address, why):
    said = message_of(HOSTS | {"hosts": [{"name": "gpu01", "address": address}]}, Hosts)
    assert said.startswith(f"f.yaml: hosts[0] (gpu01): address: {why}"), said


def test_a_nic_of_the_shared_node_block_is_named_there(tmp_path: Path):
    path = tmp_path / "h.yaml"
    path.write_text(
        "backend: ssh\nhosts: [{name: a}, {name: b, gpus: 2}]\nnode: {nics: [{name: mlx5_0, gpus: [0, 5]}]}\n"
    )
    with pytest.raises(UserError) as caught:
        load_hosts(path)
    assert str(caught.value) == (
        "node.nics[0] (mlx5_0): gpus lists GPU(s) [5] (the shared node: block), but hosts[1] (b) has 2 GPUs "
        "(numbered 0 to 1)"
    )


def test_a_mistyped_builtin_recipe_name_suggests_the_closest():
    with pytest.raises(UserError) as caught:
        load_recipe("mocker-disag")
    assert "no built-in recipe of that name (did you mean 'mocker-disagg'?)" in str(caught.value)


def test_a_source_is_named_once_for_the_problems_it_holds():
    pools = [{"name": name, "mode": "agg", "agg": {"replica": 1}} for name in ("fast", "slow")]
    recipe = {"name": "r", "model": {"repo": "x"}, "mode": "agg", "pools": pools, "global_router": {}}
    assert message_of(recipe, Recipe) == (
        "f.yaml: pools[0] (fast): agg.replica: unknown key (did you mean 'agg.replicas'?); "
        "pools[1] (slow): agg.replica: unknown key (did you mean 'agg.replicas'?)"
    )


def test_a_switch_naming_no_host_suggests_the_host_meant():
    switches = {"switches": [{"name": "leaf1", "nodes": ["gpu01", "gpu2"]}]}
    hosts = HOSTS | {"hosts": [{"name": "gpu01"}, {"name": "gpu02"}], "topology": switches}
    assert message_of(hosts, Hosts) == (
        "f.yaml: topology.switches[0] (leaf1): nodes: gpu2 is not among the hosts (did you mean 'gpu02'?)"
    )
