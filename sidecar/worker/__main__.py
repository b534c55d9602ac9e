"""``python -m sidecar.worker``: how the supervisor starts a worker (see config.py)."""
import sys

from sidecar.worker.process import main

sys.exit(main())
