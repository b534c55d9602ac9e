"""``python -m sidecar.worker``: how the supervisor starts a worker (see config.py)."""
import sys

from sidecar import gc_tuning

gc_tuning.quiet_start()   # before the imports below and the app's: until started

from sidecar.worker.process import main  # noqa: E402

sys.exit(main())
