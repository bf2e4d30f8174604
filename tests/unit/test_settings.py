"""One owner for every toolkit setting: nbfed/flower_app/settings.py. Every path that states a
default (the generated app, the dry-run stack, the Ansible roles, the README) must agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from notebooks import minimal_cells, write_notebook

from nbfed.convert import convert
from nbfed.flower_app.settings import TOOLKIT_KEY, TOOLKIT_SETTINGS, majority

ROOT = Path(__file__).resolve().parents[2]
INVENTORY_SETTINGS = {key: s for key, s in TOOLKIT_SETTINGS.items() if s.variable}


class ComposeLoader(yaml.SafeLoader):
    """Compose's YAML: its merge tags (!reset, !override) read as the plain values they tag."""


ComposeLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def test_the_generated_app_carries_every_setting_with_its_default(tmp_path) -> None:
    app = convert(write_notebook(tmp_path / "study.ipynb", minimal_cells()), tmp_path / "app")
    with open(app.root / "pyproject.toml", "rb") as f:
        config = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    assert config[TOOLKIT_KEY] == {key: s.default for key, s in TOOLKIT_SETTINGS.items()}


def test_the_server_app_states_no_default_of_its_own() -> None:
    server_app = (ROOT / "nbfed" / "flower_app" / "server_app.py").read_text()
    assert re.findall(r'toolkit\(context, "[a-z-]+"\)', server_app)
    assert not re.findall(r'toolkit\(context, "[a-z-]+",', server_app)


def test_the_dry_run_uses_the_policy_for_its_sites() -> None:
    stack = yaml.load((ROOT / "compose" / "dry-run.yml").read_text(), Loader=ComposeLoader)
    sites = [name for name, service in stack["services"].items() if "--auth-supernode-private-key" in str(service)]
    settings = dict(
        arg.removeprefix("--set=").split("=", 1)
        for arg in stack["services"]["runner"]["command"]
        if arg.startswith(f"--set={TOOLKIT_KEY}.")
    )
    assert len(sites) == 3, sites
    assert int(settings[f"{TOOLKIT_KEY}.min-sites"]) == majority(len(sites))
    assert int(settings[f"{TOOLKIT_KEY}.expected-sites"]) == len(sites)


@pytest.mark.parametrize("key", sorted(INVENTORY_SETTINGS))
def test_the_roles_default_each_inventory_setting_as_the_app_does(key) -> None:
    setting = INVENTORY_SETTINGS[key]
    roles = "\n".join(p.read_text() for p in sorted((ROOT / "roles").glob("*/[dv]*/main.yml")))
    stated = re.findall(rf"{setting.variable} \| default\((.+?)\) ?}}}}", roles)
    assert stated, f"no role defaults {setting.variable}"
    for value in stated:
        if key == "min-sites":  # a majority of the inventory's sites
            assert value.replace(" ", "") == "(groups['sites']|length)//2+1", value
        else:
            assert type(setting.default)(yaml.safe_load(value)) == setting.default, (setting.variable, value)
    spec = yaml.safe_load((ROOT / "roles" / "preflight" / "meta" / "argument_specs.yml").read_text())
    described = spec["argument_specs"]["main"]["options"][setting.variable]["description"]
    described = " ".join([described] if isinstance(described, str) else described)
    expected = "a majority of the sites" if key == "min-sites" else f"Default, {setting.default:g}"
    assert expected in described, described


def shown_default(value: bool | int | float | str) -> str:
    """A default as the README's settings table writes it: true, "float32", 1000000, 1800, 0.5."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f'"{value}"' if isinstance(value, str) else f"{value:g}"


@pytest.mark.parametrize("key", sorted(TOOLKIT_SETTINGS))
def test_the_readme_states_each_setting_and_its_default(key) -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    shown = shown_default(TOOLKIT_SETTINGS[key].default)
    assert f"| `{TOOLKIT_KEY}.{key}` | {shown} |" in readme, f"README's settings table lacks {key} = {shown}"
