"""Running ansible-playbook from tests, and reading what it did (PLAY RECAP, task results)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def venv_tool(name: str) -> str:
    """The tool beside this Python (the venv's), else on PATH; else the test is skipped."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[deploy,test]')")
    return found


def run_ansible(tool: str, *args: str, data: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if data is not None:
        env["NBFED_TEST_DATA"] = str(data)
    done = subprocess.run(
        [venv_tool(tool), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
    )
    done.output = done.stdout + done.stderr  # type: ignore[attr-defined]
    return done


def recap(output: str) -> dict[str, dict[str, int]]:
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(output)
    }


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under path with its size and mtime: what a run must leave as it was."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def assert_nothing_changed(done: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    hosts = recap(done.output)
    assert hosts, f"no PLAY RECAP in the output:\n{done.output}"
    changed = {host: counts["changed"] for host, counts in hosts.items() if counts["changed"]}
    assert not changed, f"the playbook changed something on {changed}:\n{done.output}"
    unreachable = {host for host, counts in hosts.items() if counts["unreachable"]}
    assert not unreachable, f"unreachable: {unreachable}:\n{done.output}"
    return hosts
