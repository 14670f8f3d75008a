"""Container health check: exit 0 when the service's metrics endpoint answers, 1 otherwise.

Every long-running FaceGate service serves Prometheus metrics on FACEGATE_HEALTHCHECK_PORT
(the image sets it and the services' metrics ports to 9100).  One-shot jobs and the camera
simulator have no endpoint; their compose services turn the check off.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    """Probe http://127.0.0.1:PORT/metrics once."""
    port = os.environ.get("FACEGATE_HEALTHCHECK_PORT", "9100")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: metrics endpoint on port {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
