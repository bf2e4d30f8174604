"""Role READMEs are generated, and each role's variables are documented once, in its
meta/argument_specs.yml.

`make docs` runs ansible-doctor over every role: its README.md is the hand-written
README.intro.md followed by the table of the variables of entry point main, from the argument
specs and defaults/main.yml (docs/role-readme/README.md.j2). Here the READMEs are regenerated
in a copy of roles/ and must come out as committed; every variable in a role's defaults must
be an option of entry point main with its type, description and the same default; and the
options of other entry points, which the table does not show, must be options of main or
named in the README. No network, no Docker Engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml
from playbook import venv_tool

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())


def generate(roles: Path) -> subprocess.CompletedProcess:
    """What `make docs` runs, over `roles`."""
    env = dict(os.environ, ANSIBLE_DOCTOR_TEMPLATE__SRC=f"local>{ROOT / 'docs'}")
    return subprocess.run(
        [
            venv_tool("ansible-doctor"),
            "-c",
            str(ROOT / "docs" / "role-readme" / "ansible-doctor.yml"),
            "-r",
            "-f",
            str(roles),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def specs(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def test_every_role_readme_is_generated_from_its_argument_specs(tmp_path) -> None:
    copy = tmp_path / "roles"
    shutil.copytree(ROOT / "roles", copy)
    done = generate(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    stale = [
        f"README of role {role} is stale: run make docs"
        for role in ROLES
        if (copy / role / "README.md").read_text() != (ROOT / "roles" / role / "README.md").read_text()
    ]
    assert not stale, "\n".join(stale)


def test_every_default_is_an_option_of_main_with_its_type_description_and_default() -> None:
    problems = []
    for role in ROLES:
        defaults_file = ROOT / "roles" / role / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
        main = specs(role)["main"].get("options", {})
        for name, value in defaults.items():
            option = main.get(name)
            if option is None:
                problems.append(
                    f"role {role}: {name} (defaults/main.yml) is not an option of main in meta/argument_specs.yml"
                )
                continue
            problems += [
                f"role {role}: option {name} has no {key}" for key in ("type", "description") if key not in option
            ]
            if option.get("default") != value:
                problems.append(
                    f"role {role}: option {name} has default {option.get('default')!r} in meta/argument_specs.yml,"
                    f" {value!r} in defaults/main.yml"
                )
    assert not problems, "\n".join(problems)


def test_every_option_has_a_type_and_a_description_and_the_readme_names_those_the_table_leaves_out() -> None:
    problems = []
    for role in ROLES:
        entry_points = specs(role)
        written = (ROOT / "roles" / role / "README.intro.md").read_text()
        for entry_point, spec in entry_points.items():
            for name, option in spec.get("options", {}).items():
                problems += [
                    f"role {role}: option {name} of {entry_point} has no {key}"
                    for key in ("type", "description")
                    if key not in option
                ]
                if name not in entry_points["main"].get("options", {}) and f"`{name}`" not in written:
                    problems.append(
                        f"role {role}: option {name} of entry point {entry_point} is neither an option of"
                        " main (in the README's table) nor named in the README"
                    )
    assert not problems, "\n".join(problems)
