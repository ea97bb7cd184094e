#!/usr/bin/env python3
"""Container health check: exit 0 when nnserve reports ready (all models loaded and warmed), 1 otherwise.

Standard library only, no shell, no curl in the image. The port comes from ``NNSERVE_PORT`` like the server's.
"""

import os
import sys
import urllib.error
import urllib.request

PORT = os.environ.get("NNSERVE_PORT", "8000")
PATH = sys.argv[1] if len(sys.argv) > 1 else "/v2/health/ready"

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{PATH}", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"nnserve not ready: {exc}", file=sys.stderr)
    sys.exit(1)
