"""A hostile notebook: the template, whose `train` also tries what the site must not allow
and reports each attempt as a metric (1.0: it worked), so the run's record shows it."""

from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]

ATTEMPTS = '''

_honest_train = train


def train(model, dataset, config: dict, device: str) -> dict[str, float]:
    """The template's training, then the attempts."""
    import os
    import socket
    import time

    def tried(attempt) -> float:
        try:
            attempt()
            return 1.0
        except Exception:
            return 0.0

    def forks_until_refused() -> float:
        children = []
        try:
            while len(children) < 4096:
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError:
            pass
        finally:
            for pid in children:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        return float(len(children))

    def connect(host: str, port: int):
        socket.create_connection((host, port), timeout=5).close()

    def site_host() -> str:  # the container's gateway: the site host's address on its bridge
        for line in open("/proc/net/route").read().splitlines()[1:]:
            iface, destination, gateway = line.split()[:3]
            if destination == "00000000":
                return socket.inet_ntoa(bytes.fromhex(gateway)[::-1])
        raise OSError("no route out")

    return {
        **_honest_train(model, dataset, config, device),
        "tried_node_key": tried(lambda: open("/keys/node.key").read()),
        "tried_trust_list": tried(lambda: os.listdir("/trust/keys")),
        "tried_write_data": tried(lambda: open("/data/written-by-the-notebook", "w").close()),
        "tried_intruder": tried(lambda: connect(config["intruder"], 22)),
        "tried_aggregator": tried(lambda: connect(config["aggregator"], 8000)),
        "tried_site_host": tried(lambda: connect(site_host(), 22)),  # its sshd
        "tried_forks": forks_until_refused(),
    }
'''


def hostile_notebook(path: Path, intruder: str, aggregator: str) -> Path:
    nb = nbformat.read(ROOT / "notebook" / "template.ipynb", as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "train" in tags:
            cell.source += ATTEMPTS
        if "config" in tags:
            cell.source = (
                cell.source.rstrip().rstrip("}")
                + f'    "intruder": "{intruder}",\n    "aggregator": "{aggregator}",\n}}\n'
            )
    nbformat.write(nb, path)
    return path
