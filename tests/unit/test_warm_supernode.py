"""nbfed's SuperNode launcher: the flwr-clientapp shim hands over to the zygote, and without
one becomes Flower's own ClientApp (here a stand-in command that prints its arguments).
The zygote path itself runs in tests/integration/test_run_local.py and test_deploy.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbfed.warm_supernode as launcher


def shim(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run the launcher under the name SuperExec starts it by."""
    (tmp_path / "flwr-clientapp").symlink_to(Path(launcher.__file__).resolve())
    return subprocess.run(
        [sys.executable, str(tmp_path / "flwr-clientapp"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


def test_without_a_zygote_the_shim_runs_flowers_clientapp_with_the_same_arguments(tmp_path) -> None:
    done = shim(
        tmp_path,
        {launcher.ZYGOTE_SOCKET: str(tmp_path / "gone.sock"), launcher.FLOWER_CLIENTAPP: "echo"},
        "--token",
        "abc",
        "--insecure",
    )
    assert done.returncode == 0 and done.stdout.strip() == "--token abc --insecure"
    assert "starting a cold flwr-clientapp" in done.stderr


def test_with_a_zygote_the_shim_hands_over_its_arguments_and_returns(tmp_path) -> None:
    path = str(tmp_path / "zygote.sock")
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)

        def zygote() -> None:  # what the zygote does before it forks: read, answer with a pid
            conn, _ = listener.accept()
            with conn:
                got.append(b"".join(iter(lambda: conn.recv(65536), b"")))
                conn.sendall(b"4242\n")

        server = threading.Thread(target=zygote)
        server.start()
        done = shim(tmp_path, {launcher.ZYGOTE_SOCKET: path, launcher.FLOWER_CLIENTAPP: "false"}, "--token", "abc")
        server.join(10)
    assert done.returncode == 0, done.stderr
    assert got == [b"--token\0abc"]


def test_the_supernode_announces_and_keeps_a_10_s_heartbeat(monkeypatch) -> None:
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection as connection

    for module in (heartbeat, connection):  # restored after the test
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == 30  # Flower's: SuperLink's patience is twice this
    launcher.shorten_heartbeat(10.0)
    # what ActivateNode announces and what the heartbeat thread's cadence is computed from
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == heartbeat.HEARTBEAT_DEFAULT_INTERVAL == 10.0
    assert HEARTBEAT_MIN_INTERVAL <= 10.0  # SuperLink refuses shorter intervals
