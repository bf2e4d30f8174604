"""The images' health check (aggregator, site and proxy Dockerfiles, linked beside each).

GET $NBFED_HEALTH_URL within 4 s; any error or an HTTP error status fails the check. An https
URL is verified against $NBFED_CA_CERT: the chain, not the name (certificates name the public
address, not 127.0.0.1). NBFED_INSECURE=1 (a SuperLink started with --insecure) switches to
plain http. Standard library only: it runs in every image, the proxy's system Python included.
"""

import os
import ssl
import sys
import urllib.request

url = os.environ.get("NBFED_HEALTH_URL") or sys.exit("NBFED_HEALTH_URL is not set (each image sets it)")
if os.environ.get("NBFED_INSECURE") == "1":
    url = url.replace("https:", "http:", 1)
context = None
if url.startswith("https:"):
    context = ssl.create_default_context(cafile=os.environ.get("NBFED_CA_CERT", "/certs/ca.crt"))
    context.check_hostname = False
urllib.request.urlopen(url, timeout=4, context=context)
