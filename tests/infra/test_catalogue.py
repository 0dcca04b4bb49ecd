"""What Hetzner sells (infra/catalogue/hetzner-cloud.yaml): the config refuses withdrawn, unknown
and non-x86 server types; the program keeps every spread placement group within Hetzner's
limit; the plan's engine stand-in refuses both as the Hetzner API would; an old catalogue is
a warning that names the file, never a failure."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from typing import Any

import pytest
from pulumi.runtime.mocks import MockResourceArgs

from infra import catalogue, cli, plan
from infra.policy.rules import SERVER
from tests.infra.support import plan_of, sections
from tests.infra.test_config import one_problem

KNOWN = catalogue.load()
GROUP = "hcloud:index/placementGroup:PlacementGroup"


def test_every_withdrawn_type_names_an_orderable_x86_replacement() -> None:
    assert KNOWN.withdrawn and not set(KNOWN.withdrawn) & set(KNOWN.server_types)
    for old, new in KNOWN.withdrawn.items():
        assert KNOWN.server_types[new] == "x86", old
    assert KNOWN.sources and all(s.strip() for s in KNOWN.sources)


@pytest.mark.parametrize("section", ["bastion", "control_plane", "workers"])
def test_a_withdrawn_server_type_is_refused_naming_the_replacement(section: str) -> None:
    data = sections()
    data[section]["server_type"] = "cx22"
    problem = one_problem(data)
    assert problem.startswith(f"sovereign-llm:{section}.server_type: withdrawn by Hetzner")
    assert "cx22" not in problem  # the value is never repeated
    assert "use 'cx23'" in problem
    assert "hetzner-cloud.yaml" in problem


def test_an_unknown_or_arm_server_type_is_refused() -> None:
    data = sections()
    data["workers"]["server_type"] = "cx99"
    assert "not a Hetzner Cloud server type on sale" in one_problem(data)
    data["workers"]["server_type"] = "cax31"
    assert "an arm server" in one_problem(data) and "amd64" in one_problem(data)


def test_the_defaults_and_the_examples_are_orderable() -> None:
    for field in ("bastion", "control_plane", "workers"):
        assert KNOWN.server_type_problem(sections()[field]["server_type"]) is None


@pytest.mark.parametrize(("workers", "groups"), [(0, 1), (10, 1), (11, 2), (25, 3)])
def test_workers_fill_spread_groups_up_to_hetzners_limit(workers: int, groups: int) -> None:
    data = sections()
    data["workers"]["count"] = workers
    result = plan_of(data)
    worker_groups = {r.id for r in result.of_type(GROUP) if "workers" in r.inputs["name"]}
    assert len(worker_groups) == groups
    servers = [s for s in result.of_type(SERVER) if s.inputs["labels"]["role"] == "worker"]
    per_group = Counter(str(int(s.inputs["placementGroupId"])) for s in servers)
    assert sum(per_group.values()) == workers
    assert set(per_group) <= worker_groups and max(per_group.values(), default=0) <= KNOWN.spread_max_servers


def server(name: str, server_type: str = "cx33", group: Any = 42.0) -> MockResourceArgs:
    return MockResourceArgs(SERVER, name, {"serverType": server_type, "placementGroupId": group})


def test_the_engine_stand_in_refuses_what_hetzner_refuses() -> None:
    mocks = plan.RecordingMocks()
    with pytest.raises(plan.HetznerRefusal, match="server type 'cx32': withdrawn by Hetzner"):
        mocks.new_resource(server("old", "cx32"))
    for i in range(KNOWN.spread_max_servers):
        mocks.new_resource(server(f"w{i}"))
    mocks.new_resource(server("elsewhere", group=43.0))  # another group has room
    with pytest.raises(plan.HetznerRefusal, match="eleventh server in one spread placement group"):
        mocks.new_resource(server("w-extra"))


def test_an_old_catalogue_warns_naming_the_file_and_the_plan_still_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert KNOWN.stale(KNOWN.as_of + catalogue.STALE_AFTER) is None
    warning = KNOWN.stale(KNOWN.as_of + catalogue.STALE_AFTER + dt.timedelta(days=1))
    assert warning is not None and str(catalogue.FILE) in warning and "184 days old" in warning
    old = dataclasses.replace(KNOWN, as_of=dt.date.today() - dt.timedelta(days=400))
    monkeypatch.setattr(catalogue, "load", lambda: old)
    rc = cli.main(["plan", "--stack", "eu-north-dr", "--out", str(tmp_path)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "WARNING: the Hetzner catalogue is 400 days old" in err and str(catalogue.FILE) in err
