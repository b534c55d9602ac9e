import sys

from sidecar import gc_tuning

gc_tuning.quiet_start()   # before the imports below: until started (sidecar/gc_tuning.py)

from sidecar.cli import main  # noqa: E402

sys.exit(main())
