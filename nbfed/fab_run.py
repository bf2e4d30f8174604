"""`python -m nbfed.fab_run FAB OVERRIDES`: start a run of exactly these FAB bytes.

`flwr run` takes an app directory and builds its FAB again; the bytes of a rebuild can differ
(another zlib, another file order), and a signed app is identified by its bytes. This does
what `flwr run` does with a FAB already built and signed on the control node, through
Flower's own Control API client and the connection in FLWR_HOME (SuperLinkClient runs it with
the environment it gives `flwr`). Prints `flwr run --format json`'s answer.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.common.config import parse_config_args
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
from flwr.supercore.fab import Fab


def start_run(fab: Path, overrides: Path, connection_name: str) -> int | None:
    connection = read_superlink_connection(connection_name)
    content = fab.read_bytes()
    request = StartRunRequest(
        fab=fab_to_proto(Fab(hashlib.sha256(content).hexdigest(), content, {})),
        override_config=user_config_to_proto(parse_config_args([str(overrides)])),
        federation=connection.federation or "",
    )
    client = init_http_client_from_connection(connection)
    try:
        answer = client.StartRun(request)
    finally:
        client.close()
    return answer.run_id if answer.HasField("run_id") else None


if __name__ == "__main__":
    try:
        run_id = start_run(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
        print(json.dumps({"success": run_id is not None, "run-id": str(run_id), "error-message": ""}))
    except Exception as e:  # noqa: BLE001 (the caller reads the reason, as from `flwr run`)
        print(json.dumps({"success": False, "error-message": f"{type(e).__name__}: {e}"}))
