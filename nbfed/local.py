"""`nbfed run-local`: a real Flower deployment on this machine, without Docker.

One SuperLink and one SuperNode per site directory run as local processes on loopback
(the same programs the containers run), the converted app is submitted with `flwr run`,
and the run is followed through the events file its ServerApp writes. Every process is
stopped on success, failure and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nbfed.convert import App, convert, toml_value

BIN = Path(sys.executable).parent  # flower-superlink & co. live beside this interpreter


class RunFailed(RuntimeError):
    """The federation did not finish; the message says why and where the logs are."""


def find_sites(data_dir: Path) -> dict[str, Path]:
    """Site name -> directory: every subdirectory of `data_dir` that holds train/ and test/."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist; create one with `nbfed synth-data -o {data_dir}`")
    sites = {d.name: d.resolve() for d in sorted(data_dir.iterdir()) if (d / "train").is_dir() and (d / "test").is_dir()}
    if not sites:
        raise FileNotFoundError(
            f"{data_dir} has no site directories (each site is DIR/<site>/train and DIR/<site>/test); "
            f"create synthetic ones with `nbfed synth-data -o {data_dir}`"
        )
    return sites


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunFailed(f"SuperLink exited with code {proc.returncode} before listening; see {log}")
        with closing(socket.socket()) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RunFailed(f"SuperLink did not listen on 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


@dataclass
class LocalFederation:
    """SuperLink + SuperNodes as child processes, each in its own process group."""

    sites: dict[str, Path]
    logs: Path
    flwr_home: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "FLWR_HOME": str(self.flwr_home), "PYTHONUNBUFFERED": "1",
                "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        superlink = self._spawn("superlink", [
            str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation",
        ])
        wait_for_port(self.port, superlink, self.logs / "superlink.log")
        for site, data in self.sites.items():
            node_config = f"site={toml_value(site)} data-dir={toml_value(str(data))}"
            self._spawn(f"supernode-{site}", [
                str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(free_port()), "--node-config", node_config,
            ])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RunFailed(f"{name} exited with code {proc.returncode}; see {self.logs / name}.log")

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self._env(), capture_output=True, text=True)

    def submit(self, app: Path, overrides: Path) -> int:
        """`flwr run` the app; returns the run id. Retries while SuperLink finishes starting."""
        for _ in range(30):
            done = self.flwr("run", str(app), "local", "--run-config", str(overrides), "--format", "json")
            if done.returncode == 0:
                return int(json.loads(done.stdout)["run-id"])
            time.sleep(0.5)
        raise RunFailed(f"`flwr run` failed: {(done.stdout + done.stderr).strip()[-2000:]}")

    def run_status(self, run_id: int) -> str:
        done = self.flwr("ls", "local", "--run-id", str(run_id), "--format", "json")
        try:
            return str(json.loads(done.stdout)["runs"][0]["status"])
        except (ValueError, KeyError, IndexError):
            return "unknown"

    def stop(self) -> None:
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():  # the group also holds ClientApp/ServerApp children
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
    shown = " ".join(f"{k} {pooled[k]:.3f}" for k in ("accuracy", "sensitivity", "specificity", "loss") if isinstance(pooled.get(k), (int, float)))
    errors = f"  [red]{len(event['errors'])} site error(s)[/red]" if event.get("errors") else ""
    sites = ", ".join(event.get("sites", [])) or "none"
    return f"round {event['round']}/{num_rounds}  {event['duration_s']:.1f} s  sites: {sites}  {shown}{errors}"


def follow(fed: LocalFederation, run_id: int, results: Path, num_rounds: int, console: Console, timeout: float) -> None:
    """Show progress until the run finishes; raise RunFailed if it fails, stalls or times out."""
    offset, deadline, last_status_check = 0, time.monotonic() + timeout, 0.0
    with Progress(TextColumn("[bold]federation"), BarColumn(), MofNCompleteColumn(), TextColumn("rounds"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("rounds", total=num_rounds)
        while True:
            events, offset = read_events(results / "events.jsonl", offset)
            for event in events:
                if event["event"] == "round_finished":
                    progress.advance(task)
                    console.print(_round_line(event, num_rounds))
                    for node, reason in event.get("errors", {}).items():
                        console.print(f"  [red]{node}: {reason.strip().splitlines()[-1]}[/red]")
                elif event["event"] == "finished":
                    return
                elif event["event"] == "failed":
                    raise RunFailed(f"the run failed on the aggregator: {event['error']}; logs in {fed.logs}")
            fed.check_alive()
            now = time.monotonic()
            if now > deadline:
                raise RunFailed(f"the run did not finish within {timeout:.0f} s; logs in {fed.logs}")
            if now - last_status_check > 5:
                last_status_check = now
                status = fed.run_status(run_id)
                if status.startswith("finished:") and status != "finished:completed":
                    time.sleep(1)  # let the ServerApp's last events land first
                    events, offset = read_events(results / "events.jsonl", offset)
                    if not any(e["event"] == "finished" for e in events):
                        raise RunFailed(f"run {run_id} ended as {status}; see {fed.logs}/superlink.log")
            time.sleep(0.2)


def default_results_dir(notebook: Path) -> Path:
    return Path("results") / f"{notebook.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_local(
    notebook: Path,
    data_dir: Path,
    results: Path | None = None,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
    timeout: float = 3600,
) -> tuple[App, Path]:
    """Convert, start the federation, run it to the end; returns the app and results dir."""
    console = console or Console()
    sites = find_sites(data_dir)
    results = (results or default_results_dir(notebook)).resolve()
    if (results / "run.json").exists():
        raise FileExistsError(f"{results} already holds a run; choose another --results directory")
    app = convert(notebook, results / "app")  # the exact app that ran stays with its results
    settings = {"nbfed.results-dir": str(results), "nbfed.min-sites": len(sites), **(overrides or {})}
    unknown = sorted(set(settings) - set(app.run_config))
    if unknown:
        raise KeyError(f"unknown run config key(s) {', '.join(unknown)}; the app has: {', '.join(app.run_config)}")
    overrides_file = results / "overrides.toml"
    overrides_file.write_text("".join(f'"{k}" = {toml_value(v)}\n' for k, v in settings.items()))
    num_rounds = int(settings.get("num_rounds", app.run_config["num_rounds"]))
    console.print(f"[bold]{notebook.name}[/bold] -> {len(sites)} sites ({', '.join(sites)}), {num_rounds} rounds; results in {results}")
    with ExitStack() as stack:
        flwr_home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nbfed-flwr-")))
        fed = LocalFederation(sites=sites, logs=results / "logs", flwr_home=flwr_home)
        stack.callback(fed.stop)
        with console.status("starting SuperLink and SuperNodes"):
            fed.start()
            run_id = fed.submit(app.root, overrides_file)
        console.print(f"run {run_id} submitted to SuperLink on 127.0.0.1:{fed.port}")
        follow(fed, run_id, results, num_rounds, console, timeout)
    shutil.rmtree(results / "app" / ".flwr", ignore_errors=True)
    return app, results
