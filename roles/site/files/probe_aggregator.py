"""Can this site reach the aggregator, and does the consortium CA verify its certificate?

Run by the site role in a one-off container of the site's own stack (same network, same CA
file) before the SuperNode starts: a SuperNode that cannot verify the aggregator retries
forever, so the deployment stops here instead, with what to do. Standard library only.

    python probe_aggregator.py HOST:PORT CA_FILE PATIENCE_SECONDS
"""

import socket
import ssl
import sys
import time

address, ca, patience = sys.argv[1], sys.argv[2], float(sys.argv[3])
host, port = address.rsplit(":", 1)
context = ssl.create_default_context(cafile=ca)
deadline = time.monotonic() + patience
while True:
    try:
        with (
            socket.create_connection((host, int(port)), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            print(f"{address}: reached, certificate verified by the consortium CA")
            sys.exit(0)
    except ssl.SSLCertVerificationError as e:
        sys.exit(
            f"the aggregator at {address} presented a certificate that the consortium CA certificate does not "
            f"verify ({e.verify_message}). Either this site holds another deployment's CA, or something between "
            "the site and the aggregator intercepts TLS (an inspecting proxy: ask for a bypass to the aggregator's "
            "address). Run the sites stage again to copy this deployment's CA "
            "(ansible-playbook deploy.yml --tags sites)."
        )
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(
                f"cannot reach the aggregator at {address} for {patience:.0f} s ({e}). Check that the aggregator is up "
                "(ansible-playbook playbooks/status.yml), that its firewall allows this site's site_address, and that "
                f"this site may connect out to TCP port {port}."
            )
        time.sleep(2)
