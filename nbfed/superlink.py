"""Talking to a SuperLink with Flower's own CLI (`flwr`): register nodes, submit runs, follow them.

Used by `run-local` (processes on loopback) and `submit` (the compose stacks and the
playbook's run stage, on the aggregator host).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nbfed.node_registry import UNREGISTERED
from nbfed.superlink_launcher import BOOT_FILE


def _flower_bin() -> Path:
    """Where flwr, flower-superlink & co. live: beside this interpreter (a venv, an image), else
    wherever PATH finds them (Flower installed with `pip install --target DIR`, DIR/bin on PATH)."""
    here = Path(sys.executable).parent
    if (here / "flwr").exists():
        return here
    found = shutil.which("flwr")
    return Path(found).parent if found else here


BIN = _flower_bin()
# Flower's processes, as nbfed starts them, call nowhere: no telemetry, no update check (both
# would reach Flower's servers at every start). The images set the same in their ENV.
FLOWER_OFFLINE = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
CONNECTION = "nbfed"


class RunFailed(RuntimeError):
    """The federation did not finish; the message says why and where to look."""


class ServerAppLost(RunFailed):
    """SuperLink lost the run's ServerApp (it stopped sending heartbeats: the aggregator restarted)."""


@dataclass
class SuperLinkClient:
    """The `flwr` CLI with its own FLWR_HOME holding one connection to one SuperLink."""

    address: str  # host:port of SuperLink's Control API
    home: Path
    root_certificates: Path | None = None  # None: plain HTTP, only for run-local on loopback

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        security = f'root-certificates = "{self.root_certificates}"' if self.root_certificates else "insecure = true"
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\n{security}\n'
        )

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self._env(), capture_output=True, text=True)

    def _env(self) -> dict[str, str]:
        """Flower's CLI with this client's FLWR_HOME, and nothing of the caller's but PYTHONPATH."""
        env = {
            **FLOWER_OFFLINE,
            "FLWR_HOME": str(self.home),
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(self.home),
        }
        if "PYTHONPATH" in os.environ:  # Flower found through PYTHONPATH (a --target install) must stay found
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def _json(self, *args: str) -> dict[str, Any]:
        return self._answer(self.flwr(*args, "--format", "json"))

    @staticmethod
    def _answer(done: subprocess.CompletedProcess) -> dict[str, Any]:
        """The JSON answer: all of stdout, else its last line (Flower may say things first)."""
        for text in (done.stdout, done.stdout.strip().rpartition("\n")[2]):
            try:
                return json.loads(text)
            except ValueError:
                continue
        return {"success": False, "error-message": (done.stdout + done.stderr).strip()}

    def register(self, public_key: Path, name: str) -> bool:
        """Register a SuperNode's public key; False when it was registered already."""
        answer = self._json("supernode", "register", str(public_key), CONNECTION, "--name", name)
        if answer.get("success"):
            return True
        if "already in use" in str(answer.get("error-message", "")):
            return False
        raise RunFailed(f"registering {public_key} ({name}) failed: {answer.get('error-message')}")

    def registry(self, keys: list[Path]) -> dict[str, Any]:
        """Every SuperNode SuperLink registered, unregistered ones too, with its name and key,
        and `keys` read as SuperLink stores them (nbfed/node_registry.py)."""
        argv = [sys.executable, "-m", "nbfed.node_registry", CONNECTION, *map(str, keys)]
        answer = self._answer(subprocess.run(argv, env=self._env(), capture_output=True, text=True))
        if not answer.get("success"):
            raise RunFailed(f"listing the SuperNodes failed: {answer.get('error-message')}")
        return answer

    def unregister(self, node_id: int) -> None:
        answer = self._json("supernode", "unregister", str(node_id), CONNECTION)
        if not answer.get("success"):
            raise RunFailed(f"unregistering SuperNode {node_id} failed: {answer.get('error-message')}")

    def submit(self, app: Path, overrides: Path, fab: Path | None = None, attempts: int = 30) -> int:
        """`flwr run` the app, or start a run of the `fab` built from it (its exact bytes: a
        signed app); returns the run id. Retries while SuperLink finishes starting."""
        for _ in range(attempts):
            if fab is None:
                answer = self._json("run", str(app), CONNECTION, "--run-config", str(overrides))
            else:
                argv = [sys.executable, "-m", "nbfed.fab_run", str(fab), str(overrides), CONNECTION]
                answer = self._answer(subprocess.run(argv, env=self._env(), capture_output=True, text=True))
            if answer.get("success") and "run-id" in answer:
                return int(answer["run-id"])
            time.sleep(1)
        raise RunFailed(f"`flwr run` failed: {str(answer.get('error-message'))[-2000:]}")

    def reachable(self) -> bool:
        """Whether SuperLink answers on /health (much cheaper than a `flwr` call)."""
        context = ssl.create_default_context(cafile=self.root_certificates) if self.root_certificates else None
        scheme = "https" if context else "http"
        try:
            with urllib.request.urlopen(f"{scheme}://{self.address}/health", timeout=2, context=context):
                return True
        except OSError:
            return False

    def stop(self, run_id: int) -> None:
        self.flwr("stop", str(run_id), CONNECTION)

    def nodes(self) -> list[dict[str, Any]]:
        """The registered SuperNodes: node-id, name (the site), status (online, offline,
        registered), times; not those unregistered."""
        return [node for node in self.registry([])["nodes"] if node["status"] != UNREGISTERED]

    def runs(self) -> list[dict[str, Any]]:
        """Every run SuperLink knows: run-id, fab-name, status, elapsed, ..."""
        answer = self._json("ls", CONNECTION)
        if not answer.get("success"):
            raise RunFailed(f"listing the runs failed: {answer.get('error-message')}")
        return list(answer["runs"])

    def run_status(self, run_id: int) -> tuple[str, str]:
        """The run's status (`running`, `finished:failed`, ...) and SuperLink's details on it."""
        try:
            run = self._json("ls", CONNECTION, "--run-id", str(run_id))["runs"][0]
        except (KeyError, IndexError):
            return "unknown", ""
        return str(run["status"]), str(run.get("status-details", ""))


@contextmanager
def connect(address: str, root_certificates: Path | None = None) -> Iterator[SuperLinkClient]:
    """A client whose FLWR_HOME is thrown away afterwards (nothing of it outlives the command)."""
    with tempfile.TemporaryDirectory(prefix="nbfed-flwr-") as home:
        yield SuperLinkClient(address, Path(home), root_certificates)


def superlink_boot(results_root: Path) -> str | None:
    """The id SuperLink's launcher wrote at its last start (None: no launcher writes one)."""
    try:
        return (results_root / BOOT_FILE).read_text().strip() or None
    except OSError:
        return None


def read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """New complete lines of the events file since `offset`."""
    if not path.exists():
        return [], offset
    with open(path) as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind("\n") + 1
    return [json.loads(line) for line in chunk[:end].splitlines() if line], offset + end


def _round_line(event: dict[str, Any], num_rounds: int) -> str:
    pooled = event.get("pooled") or {}
    shown = " ".join(
        f"{k} {pooled[k]:.3f}"
        for k in ("accuracy", "sensitivity", "specificity", "loss")
        if isinstance(pooled.get(k), (int, float))
    )
    errors = f"  [red]{len(event['errors'])} site error(s)[/red]" if event.get("errors") else ""
    sites = escape(", ".join(event.get("sites", [])) or "none")
    took = f"{event['duration_s']:.1f} s"
    return f"round {event['round']}/{num_rounds}  {took}  sites: {sites}  {shown}{errors}{_awaited(event)}"


def _awaited(event: dict[str, Any]) -> str:
    """A resumed round's wait for the sites to reconnect, when there was one."""
    if not event.get("awaited"):
        return ""
    waits = ", ".join(f"{site} {'not back' if s is None else f'{s:.0f} s'}" for site, s in event["awaited"].items())
    return f"  (waited for the sites to reconnect: {escape(waits)})"


def _error_line(node: str, reason: str) -> str:
    """A site's error for the round: the last line of its reason (a traceback ends with the
    error), as text: a reason is the site's words, never markup."""
    last = (reason.strip().splitlines() or ["(no reason given)"])[-1]
    return f"  [red]{escape(f'{node}: {last}')}[/red]"


def follow(
    client: SuperLinkClient,
    run_id: int,
    results: Path,
    num_rounds: int,
    console: Console,
    timeout: float,
    check_alive: Callable[[], None] = lambda: None,
    offset: int = 0,
    done: int = 0,
) -> None:
    """Show progress from the ServerApp's events file (from byte `offset`, `done` rounds
    finished before) until the run finishes.

    Raises RunFailed when the run fails, SuperLink reports it finished without
    completing (ServerAppLost when its ServerApp vanished), a local process died
    (`check_alive`), or `timeout` passes.
    """
    deadline, last_status_check, last_boot_check = time.monotonic() + timeout, 0.0, 0.0
    boot = superlink_boot(results.parent)
    columns = (
        TextColumn("[bold]federation"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("rounds", total=num_rounds, completed=done)
        while True:
            events, offset = read_events(results / "events.jsonl", offset)
            for event in events:
                if event["event"] == "round_finished":
                    progress.advance(bar)
                    console.print(_round_line(event, num_rounds))
                    for node, reason in event.get("errors", {}).items():
                        console.print(_error_line(node, reason))
                elif event["event"] == "finished":
                    return
                elif event["event"] == "failed":
                    raise RunFailed(f"the run failed on the aggregator: {event['error']}")
            check_alive()
            now = time.monotonic()
            if now > deadline:
                raise RunFailed(f"the run did not finish within {timeout:.0f} s")
            if boot is not None and now - last_boot_check > 1:
                last_boot_check = now
                # SuperLink started again under the run and is back: its ServerApp (a child
                # process) did not survive, which Flower would notice only when its heartbeat
                # lapses, a minute later. (A slow answer alone proves nothing on a busy machine.)
                if superlink_boot(results.parent) != boot and client.reachable():
                    client.stop(run_id)
                    raise ServerAppLost(f"SuperLink restarted under run {run_id}; its ServerApp went with it")
            if now - last_status_check > 5:
                last_status_check = now
                status, details = client.run_status(run_id)
                if status.startswith("finished:") and status != "finished:completed":
                    time.sleep(1)  # let the ServerApp's last events land first
                    events, _ = read_events(results / "events.jsonl", offset)
                    if any(e["event"] in ("finished", "failed") for e in events):
                        continue  # the next pass reads them
                    lost = ServerAppLost if "heartbeat" in details.lower() else RunFailed
                    raise lost(f"run {run_id} ended as {status} ({details or 'no details'}); see the SuperLink log")
            time.sleep(0.2)
