"""Sites in the plant file: their shape, what each edge sees, and bad input named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from dev.site_plant import site_file, write_site_plant
from factorylm.plant import PlantConfigError, load_plant
from factorylm.roster import approver_addresses, central_approver_addresses, site_settings
from factorylm.settings import Settings


def _plant(tmp_path: Path, raw: dict[str, Any], **site_files: dict[str, Any]) -> Path:
    for name, content in site_files.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content))
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_each_site_file_becomes_a_site_whose_plcs_and_actions_carry_its_name(
    tmp_path: Path,
) -> None:
    plant, _ = write_site_plant(tmp_path, {"north": [1502, 1503], "south": [1504]})
    assert plant.site_names == ["north", "south"]
    assert [(p.id, p.site) for p in plant.plcs] == [
        ("north-tank-0", "north"),
        ("north-tank-1", "north"),
        ("south-tank-0", "south"),
    ]
    assert [(a.name, a.site, a.plc) for a in plant.actions] == [
        ("close_valve", "north", "north-tank-0"),
        ("close_valve", "south", "south-tank-0"),
    ]
    south = plant.for_site("south")
    assert [p.id for p in south.plcs] == ["south-tank-0"]
    assert south.action("close_valve") is not None
    assert south.action("close_valve").plc == "south-tank-0"  # type: ignore[union-attr]
    # Both sites have the action: the whole plant cannot tell which is meant.
    with pytest.raises(PlantConfigError, match="sites north, south: name the site"):
        plant.action("close_valve")


def test_a_plant_file_without_sites_is_one_site_named_by_site_or_the_plant(tmp_path: Path) -> None:
    one = site_file("x", [1502])
    named = load_plant(_plant(tmp_path, {"name": "acme", "site": "line-3", **one}))
    assert named.site_names == ["line-3"] and named.plcs[0].site == "line-3"
    unnamed = load_plant(_plant(tmp_path, {"name": "acme", **one}))
    assert unnamed.site_names == ["acme"]


def test_two_sites_claiming_one_plc_id_are_named(tmp_path: Path) -> None:
    north = site_file("north", [1502])
    south = site_file("north", [1503])  # a copy of north's file, ids and all
    path = _plant(
        tmp_path,
        {"sites": [{"name": "north", "file": "n.yaml"}, {"name": "south", "file": "s.yaml"}]},
        n=north,
        s=south,
    )
    with pytest.raises(PlantConfigError) as err:
        load_plant(path)
    assert "PLC id 'north-tank-0' is claimed by two sites, north and south" in str(err.value)


@pytest.mark.parametrize(
    ("sites", "words"),
    [
        ([{"name": "north", "plcs": []}], "site north has no PLCs"),
        ([{"name": "North!", "plcs": site_file("n", [1])["plcs"]}], "sites[North!].name"),
        (
            [
                {"name": "a", "plcs": site_file("a", [1])["plcs"]},
                {"name": "a", "plcs": site_file("b", [2])["plcs"]},
            ],
            "site names must be unique, repeated: a",
        ),
        (
            [
                {"name": "a", "plcs": site_file("a", [1])["plcs"]},
                {
                    "name": "b",
                    "plcs": site_file("b", [2])["plcs"],
                    "actions": site_file("a", [1])["actions"],  # names a-tank-0
                },
            ],
            "unknown PLC 'a-tank-0' (not at site b)",
        ),
        (
            [{"name": "a", "plcs": [{**site_file("a", [1])["plcs"][0], "site": "b"}]}],
            "PLC 'a-tank-0' names site 'b' but is listed under 'a'",
        ),
    ],
    ids=[
        "empty-site",
        "bad-name",
        "repeated-site",
        "action-on-another-sites-plc",
        "plc-naming-another-site",
    ],
)
def test_bad_sites_are_refused_with_the_site_named(
    tmp_path: Path, sites: list[dict[str, Any]], words: str
) -> None:
    with pytest.raises(PlantConfigError) as err:
        load_plant(_plant(tmp_path, {"sites": sites}))
    assert words in str(err.value)


def test_sites_and_top_level_plcs_together_are_refused(tmp_path: Path) -> None:
    raw = {"sites": [{"name": "a", **site_file("a", [1])}], "plcs": site_file("b", [2])["plcs"]}
    with pytest.raises(PlantConfigError, match="lists plcs under each site"):
        load_plant(_plant(tmp_path, raw))


def test_a_site_file_that_is_missing_or_names_another_site_is_named(tmp_path: Path) -> None:
    missing = _plant(tmp_path, {"sites": [{"name": "north", "file": "nowhere.yaml"}]})
    with pytest.raises(PlantConfigError) as err:
        load_plant(missing)
    assert f"sites[north]: cannot read site file {tmp_path / 'nowhere.yaml'}" in str(err.value)
    other = _plant(
        tmp_path,
        {"sites": [{"name": "north", "file": "n.yaml"}]},
        n={"site": "south", **site_file("south", [1])},
    )
    with pytest.raises(PlantConfigError, match=r"names site 'south' but .* lists it as 'north'"):
        load_plant(other)


def test_a_site_with_its_own_approvers_is_approved_by_them_only(tmp_path: Path) -> None:
    plant, _ = write_site_plant(
        tmp_path,
        {"north": [1], "south": [2]},
        site_options=lambda s: {"approvers": ["+15550100777"]} if s == "north" else {},
    )
    settings = Settings(approvers=["+15550100001"])
    north = site_settings(settings, plant.sites[0])
    south = site_settings(settings, plant.sites[1])
    assert approver_addresses(north) == {"+15550100777"}
    assert approver_addresses(south) == {"+15550100001"}  # no list of its own: the deployment's


def test_an_edge_for_an_unknown_site_stops_naming_the_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = write_site_plant(tmp_path, {"north": [1], "south": [2]})
    monkeypatch.setenv("FACTORYLM_PLANT_FILE", str(path))
    assert main(["edge", "--site", "east"]) == 2
    assert "unknown site 'east'; this plant's sites are north, south" in capsys.readouterr().err
    # Nor may an edge of a many-site plant leave its site unnamed.
    assert main(["ingest"]) == 2
    assert "the plant has 2 sites (north, south): name one" in capsys.readouterr().err


def test_a_sites_monkey_needs_that_site_and_its_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = write_site_plant(tmp_path, {"north": [1], "south": [2]})
    monkeypatch.setenv("FACTORYLM_PLANT_FILE", str(path))
    assert main(["monkey", "status", "--site", "east"]) == 2
    assert "unknown site 'east'" in capsys.readouterr().err
    assert main(["monkey", "start", "--site", "north"]) == 2
    assert "site north has no trello_board in the plant file" in capsys.readouterr().err


def test_the_central_api_hears_every_sites_approvers_and_only_the_deployments_without_a_plant(
    tmp_path: Path,
) -> None:
    _, path = write_site_plant(
        tmp_path,
        {"north": [1], "south": [2]},
        site_options=lambda s: {"approvers": ["+15550100777"]} if s == "north" else {},
    )
    settings = Settings(approvers=["+15550100001"], plant_file=path)
    assert central_approver_addresses(settings) == {"+15550100777", "+15550100001"}
    broken = settings.model_copy(update={"plant_file": tmp_path / "missing.yaml"})
    assert central_approver_addresses(broken) == {"+15550100001"}


def test_a_site_file_that_never_ends_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    (tmp_path / "endless.yaml").symlink_to("/dev/zero")  # its size on disk says 0
    path = _plant(tmp_path, {"sites": [{"name": "north", "file": "endless.yaml"}]})
    with pytest.raises(PlantConfigError) as err:
        load_plant(path)
    assert f"{tmp_path / 'endless.yaml'}: larger than 16777216 bytes" in str(err.value)
