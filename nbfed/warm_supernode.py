#!/usr/bin/env python3
"""nbfed's SuperNode: Flower's `flower-supernode`, with ClientApps that start warm.

    python -m nbfed.warm_supernode [flower-supernode arguments]           (the site image's entry point)
    python -m nbfed.warm_supernode superexec [flower-superexec arguments]  (the ClientApp container)

A site's stack runs the SuperNode with `--isolation process`: the notebook's code runs in a
second container (compose/site.yml's `clientapp`), where Flower's SuperExec takes the
ClientApps the SuperNode's Runtime API hands out and starts them, warm, as below. Without
`--isolation process` (the one-machine dry run) the SuperNode starts SuperExec itself, as
Flower does, and the ClientApps start warm in its own container.

Flower 1.41's SuperNode starts a new `flwr-clientapp` process for every message, which spends
about 2 s importing flwr and torch before it reads the message, and it asks SuperLink for work
every 3 s when idle. On a round that does little work those dominate (docs/benchmarks.md). This
launcher keeps Flower's SuperNode, SuperExec and ClientApp code and changes how they start:

- a zygote process imports Flower's ClientApp runtime and the heavy libraries once
  (NBFED_CLIENTAPP_PRELOAD, default "torch numpy"), then forks one child per ClientApp that
  SuperExec launches. SuperExec finds `flwr-clientapp` on its PATH, which here is this file
  under that name: it hands its arguments to the zygote and returns; with no zygote it runs
  Flower's own `flwr-clientapp`, as Flower would (NBFED_WARM_CLIENTAPPS=0: always).
- SuperNode's idle and reply polls (3 s and 0.5 s, fixed in Flower) and SuperExec's task poll
  (1 s, FLWR_SUPEREXEC_TASK_POLL_INTERVAL) become NBFED_POLL_INTERVAL seconds (default 0.25).
- SuperNode's heartbeat interval (30 s, fixed in Flower) becomes NBFED_HEARTBEAT_INTERVAL
  (default 10, SuperLink's minimum). SuperLink takes a node for gone after two intervals and
  refuses to re-activate its key until then: a crashed SuperNode is back in about 20 s
  instead of 60, and a dead site is seen offline as much sooner.

- before any of an app runs, the site's trust decides whether it may (nbfed.app_gate: signed
  apps, the site operator's approvals); NBFED_APP_TRUST says which policy, and must be set.

This file imports only the standard library, Flower and the gate's modules (the site image
carries them as the package nbfed, beside it).
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZYGOTE_SOCKET = "NBFED_CLIENTAPP_ZYGOTE"  # env: the zygote's socket, for the flwr-clientapp shim
FLOWER_CLIENTAPP = "NBFED_FLOWER_CLIENTAPP"  # env: Flower's own flwr-clientapp, the shim's fallback
TESTED_FLWR = ("1.41.",)  # Flower versions whose SuperNode polling this file knows
DEFAULT_HEARTBEAT_INTERVAL = "10"  # seconds (NBFED_HEARTBEAT_INTERVAL): SuperLink's minimum


def log(message: str) -> None:
    print(f"nbfed-supernode: {message}", file=sys.stderr, flush=True)


# -- the flwr-clientapp shim (SuperExec starts it once per message) ---------------------------
def shim(argv: list[str]) -> None:
    """Ask the zygote to fork a ClientApp with these arguments; else become Flower's."""
    path = os.environ.get(ZYGOTE_SOCKET, "")
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(60)
            conn.connect(path)
            conn.sendall("\0".join(argv).encode())
            conn.shutdown(socket.SHUT_WR)
            if conn.recv(64).strip():  # the child's pid: it runs on without us
                return
    except OSError as err:
        log(f"no ClientApp zygote at {path!r} ({err}); starting a cold flwr-clientapp")
    flower = os.environ.get(FLOWER_CLIENTAPP) or "flwr-clientapp"
    os.execvp(flower, [flower, *argv])


# -- the zygote ---------------------------------------------------------------------------
def zygote(path: str, owner: int) -> None:
    """Serve forks of an interpreter that has imported the ClientApp runtime, until `owner` exits.
    Only imports happen here, never work: no threads exist to be lost in a fork."""
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)  # first: a ClientApp asked for meanwhile waits in the backlog
        listener.listen(64)
        from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

        for name in os.environ.get("NBFED_CLIENTAPP_PRELOAD", "torch numpy").split():
            try:
                __import__(name)
            except ImportError:
                pass
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
        listener.settimeout(1.0)
        log(f"ClientApp zygote ready (pid {os.getpid()})")
        while os.getppid() == owner:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5.0)
                request = b"".join(iter(functools.partial(conn.recv, 65536), b""))
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    conn.close()
                    _run_clientapp(flwr_clientapp, request.decode().split("\0"))
                conn.sendall(f"{pid}\n".encode())


def _run_clientapp(main, argv: list[str]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    random.seed()  # not the zygote's sequence
    sys.argv = ["flwr-clientapp", *argv]
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # report it as Flower's own process would, then exit
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


# -- the SuperNode ------------------------------------------------------------------------
def shorten_polls(interval: float) -> None:
    """SuperNode sleeps between polls with `time.sleep` from its module; give it a shorter one."""
    from importlib.metadata import version

    from flwr.supernode import start_client_internal as supernode

    if not version("flwr").startswith(TESTED_FLWR) or getattr(supernode, "time", None) is not time:
        log(f"flwr {version('flwr')}: SuperNode keeps Flower's own poll intervals")
        return

    class Clock:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(min(seconds, interval))

    supernode.time = Clock()


def shorten_heartbeat(interval: float) -> None:
    """The interval SuperNode announces to SuperLink and the cadence of its heartbeats."""
    from importlib.metadata import version

    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection as connection

    if not version("flwr").startswith(TESTED_FLWR) or not all(
        hasattr(m, "HEARTBEAT_DEFAULT_INTERVAL") for m in (heartbeat, connection)
    ):
        log(f"flwr {version('flwr')}: SuperNode keeps Flower's own heartbeat interval")
        return
    heartbeat.HEARTBEAT_DEFAULT_INTERVAL = connection.HEARTBEAT_DEFAULT_INTERVAL = interval


def poll_interval() -> float:
    return float(os.environ.get("NBFED_POLL_INTERVAL", "0.25"))


def warm_clientapps() -> None:
    """Start the zygote and put the shim first on PATH, where SuperExec looks for
    `flwr-clientapp` (this process and its children: SuperExec)."""
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(poll_interval()))
    flower = shutil.which("flwr-clientapp")
    if os.environ.get("NBFED_WARM_CLIENTAPPS", "1") == "0" or not flower:
        return
    here = Path(tempfile.mkdtemp(prefix="nbfed-clientapps-"))
    (here / "bin").mkdir()
    (here / "bin" / "flwr-clientapp").symlink_to(Path(__file__).resolve())
    sock = str(here / "zygote.sock")
    subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--zygote", sock, str(os.getpid())])
    deadline = time.monotonic() + 10
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.environ.update(
        {
            ZYGOTE_SOCKET: sock,
            FLOWER_CLIENTAPP: flower,
            "PATH": f"{here / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )


def superexec(argv: list[str]) -> None:
    """The ClientApp container: Flower's SuperExec, pulling ClientApps from the SuperNode's
    Runtime API and starting them warm. It holds no key and no trust list: only the site's
    data (read-only) and the network to the SuperNode."""
    warm_clientapps()
    from flwr.supercore.cli.flower_superexec import flower_superexec

    sys.argv = ["flower-superexec", *argv]
    flower_superexec()


def main(argv: list[str]) -> None:
    isolated = "--isolation=process" in argv or ("--isolation", "process") in itertools.pairwise(argv)
    if not isolated:
        warm_clientapps()  # Flower's subprocess isolation: SuperExec starts in this container
    shorten_polls(poll_interval())
    shorten_heartbeat(float(os.environ.get("NBFED_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL)))
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from nbfed import app_gate

    if not {"-V", "--version", "-h", "--help"} & set(argv):  # asking runs no app: no trust needed
        app_gate.install()

    sys.argv = ["flower-supernode", *argv]
    try:
        flower_supernode()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException as error:  # noqa: BLE001 (said, then the process ends: Docker restarts it)
        log(f"the SuperNode stopped: {type(error).__name__}: {error}")
        code = 1
    # Flower's SuperNode ends its main loop on an error it gives up on (a TLS connection the
    # aggregator's proxy closed while it restarted), but the threads of its Runtime API keep the
    # process alive, healthy to Docker and offline to SuperLink for good. End it all, so that
    # Docker's restart policy starts a SuperNode that connects again.
    if code:
        log(f"the SuperNode ended (exit {code}); Docker's restart policy starts it again")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if Path(sys.argv[0]).name == "flwr-clientapp":
        shim(sys.argv[1:])
    elif sys.argv[1:2] == ["--zygote"]:
        zygote(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["superexec"]:
        superexec(sys.argv[2:])
    else:
        main(sys.argv[1:])
