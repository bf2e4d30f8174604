"""yamllint and ansible-lint (production profile, offline) on the repository's YAML and Ansible,
ruff on its Python and notebooks.

They read their settings from the repository root (.yamllint, .ansible-lint, pyproject.toml's
[tool.ruff]): yamllint checks every YAML file there (compose stacks included), ansible-lint the
playbooks, roles and inventories, ruff every Python file and notebook git does not ignore. None
needs the network or a Docker Engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from playbook import venv_tool

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0")
    # The venv's ansible-* commands for ansible-lint's syntax check, even without `activate`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_yamllint_is_clean() -> None:
    done = run([venv_tool("yamllint"), "--strict", "--format", "parsable", "."])
    assert done.returncode == 0, f"yamllint -s . found problems:\n{done.stdout}{done.stderr}"


def test_ansible_lint_production_profile_is_clean() -> None:
    done = run([venv_tool("ansible-lint"), "--offline", "--nocolor"])
    assert done.returncode == 0, f"ansible-lint found problems:\n{done.stdout}{done.stderr}"
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr, done.stdout + done.stderr


def test_ruff_check_is_clean() -> None:
    done = run([venv_tool("ruff"), "check", "--no-cache", "."])
    assert done.returncode == 0, f"ruff check . found problems:\n{done.stdout}{done.stderr}"


def test_ruff_format_is_clean() -> None:
    done = run([venv_tool("ruff"), "format", "--check", "--no-cache", "."])
    assert done.returncode == 0, (
        f"ruff format --check . would reformat (run `ruff format .`):\n{done.stdout}{done.stderr}"
    )
