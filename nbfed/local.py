"""`nbfed run-local`: a real Flower deployment on this machine, without Docker.

One SuperLink and one SuperNode per site directory run as local processes on loopback
(the same programs the containers run), the converted app is submitted with `flwr run`,
and the run is followed through the events file its ServerApp writes. Every process is
stopped on success, failure and Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from nbfed.convert import App, toml_value
from nbfed.flower_app.settings import majority
from nbfed.submit import default_results_dir, prepare_run
from nbfed.superlink import BIN, FLOWER_OFFLINE, RunFailed, SuperLinkClient, follow


def find_sites(data_dir: Path) -> dict[str, Path]:
    """Site name -> directory: every subdirectory of `data_dir` that holds train/ and test/."""
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data directory {data_dir} does not exist; create one with `nbfed synth-data -o {data_dir}`"
        )
    sites = {
        d.name: d.resolve() for d in sorted(data_dir.iterdir()) if (d / "train").is_dir() and (d / "test").is_dir()
    }
    if not sites:
        raise FileNotFoundError(
            f"{data_dir} has no site directories (each site is DIR/<site>/train and DIR/<site>/test); "
            f"create synthetic ones with `nbfed synth-data -o {data_dir}`"
        )
    return sites


def free_port() -> int:
    """A TCP port free on every address of this machine (tests and benchmarks also publish
    Docker ports with it, on the bridge's gateway as well as on loopback)."""
    with closing(socket.socket()) as s:
        s.bind(("", 0))
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
    """SuperLink + SuperNodes as child processes, each in its own process group. The SuperNodes
    are nbfed's (warm ClientApps, short polls: nbfed/warm_supernode.py), as in the site image,
    unless `warm` is False: Flower's own, for a baseline. `isolated`: each site's ClientApps
    start from a SuperExec process of its own, as in a site's stack (Flower's process
    isolation), not from one the SuperNode starts."""

    sites: dict[str, Path]
    logs: Path
    flwr_home: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    warm: bool = True
    isolated: bool = False

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        env = {
            **FLOWER_OFFLINE,
            **os.environ,
            "FLWR_HOME": str(self.flwr_home),
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            # The researcher's own notebook on the researcher's machine: no site to ask.
            "NBFED_APP_TRUST": "any",
        }
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self) -> SuperLinkClient:
        self.logs.mkdir(parents=True, exist_ok=True)
        superlink = self._spawn(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
        )
        wait_for_port(self.port, superlink, self.logs / "superlink.log")
        for site, data in self.sites.items():
            node_config = f"site={toml_value(site)} data-dir={toml_value(str(data))}"
            supernode = [sys.executable, "-m", "nbfed.warm_supernode"] if self.warm else [str(BIN / "flower-supernode")]
            runtime_port = free_port()
            isolation = ["--isolation", "process"] if self.isolated else []
            self._spawn(
                f"supernode-{site}",
                [
                    *supernode,
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{self.port}",
                    "--port",
                    str(runtime_port),
                    *isolation,
                    "--node-config",
                    node_config,
                ],
            )
            if self.isolated:
                superexec = [sys.executable, "-m", "nbfed.warm_supernode", "superexec"]
                runtime = ["--insecure", "--runtime-api-address", f"127.0.0.1:{runtime_port}"]
                self._spawn(f"superexec-{site}", [*superexec, *runtime])
        return SuperLinkClient(f"127.0.0.1:{self.port}", self.flwr_home / "cli")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RunFailed(f"{name} exited with code {proc.returncode}; see {self.logs / name}.log")

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


@contextmanager
def _interrupted_by(*signals: int) -> Iterator[None]:
    """Turn these signals into KeyboardInterrupt, so cleanup runs for Ctrl-C and `kill` alike
    (a background job may even have inherited SIGINT as ignored)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    # The participation policy's default: a majority of the sites; the first round has them all.
    policy = {"nbfed.min-sites": majority(len(sites)), "nbfed.expected-sites": len(sites)}
    run = prepare_run(notebook, results or default_results_dir(notebook), {**policy, **(overrides or {})})
    console.print(
        f"[bold]{notebook.name}[/bold] -> {len(sites)} sites ({', '.join(sites)}), {run.num_rounds} rounds; "
        f"results in {run.results}"
    )
    with ExitStack() as stack:
        stack.enter_context(_interrupted_by(signal.SIGINT, signal.SIGTERM))
        flwr_home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nbfed-flwr-")))
        fed = LocalFederation(sites=sites, logs=run.results / "logs", flwr_home=flwr_home)
        stack.callback(fed.stop)
        with console.status("starting SuperLink and SuperNodes"):
            client = fed.start()
            run_id = client.submit(run.app_dir, run.overrides)
        console.print(f"run {run_id} submitted to SuperLink on 127.0.0.1:{fed.port}")
        try:
            follow(client, run_id, run.results, run.num_rounds, console, timeout, fed.check_alive)
        except RunFailed as e:
            raise RunFailed(f"{e}; logs in {fed.logs}") from None
    return run.app, run.results
