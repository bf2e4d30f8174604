"""Stand-ins for iptables, ip6tables and their -restore, for the unit tests of the firewall
scripts (roles site_egress and firewall): run a script against them, read what it asked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

# Stand-in for iptables, ip6tables and their -restore: each call and its input go to the log;
# listing (-S) and checking (-C) fail as on a host without the rules; FAIL names one to fail.
FAKE = """#!/bin/sh
name=$(basename "$0")
echo "$name $*" >> "$LOG"
case "$name" in *-restore) cat >> "$LOG"; echo "END" >> "$LOG" ;; esac
[ "$name" = "${FAIL:-}" ] && exit 4
case " $* " in *" -S "* | *" -C "*) exit 1 ;; esac
exit 0
"""


def run(script: Path, action: str, fail: str = "") -> tuple[int, str]:
    """Exit status and the stand-ins' log of `script action`."""
    bin_dir, log = script.parent / "bin", script.parent / "log"
    bin_dir.mkdir(exist_ok=True)
    for name in ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    log.write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", LOG=str(log), FAIL=fail)
    done = subprocess.run(["sh", str(script), action], env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, log.read_text()


def restores(log: str) -> dict[str, list[str]]:
    """The input each -restore command read, by command."""
    found = re.findall(r"^(ip6?tables-restore) -w --noflush\n(.*?)^END$", log, re.MULTILINE | re.DOTALL)
    return {name: text.splitlines() for name, text in found}


def passes_shellcheck(script: Path) -> subprocess.CompletedProcess:
    """shellcheck's verdict on the script, else at least `sh -n`'s."""
    argv = ["shellcheck", "-s", "sh", str(script)] if shutil.which("shellcheck") else ["sh", "-n", str(script)]
    return subprocess.run(argv, capture_output=True, text=True)


def executable(path: Path, text: str) -> Path:
    """A rendered script written where the test runs it."""
    path.write_text(text)
    path.chmod(0o755)
    return path
