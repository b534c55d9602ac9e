"""Log lines for events that can come in floods (refusals under overload): at most one line
per ``interval`` per kind, the first one of a burst at once, and the next says how many were
left out.  Logging every refusal would add disk and CPU load to an overloaded server, as
nginx's ``limit_req_log_level`` and gunicorn's overload logging avoid too."""
from __future__ import annotations

import logging
import time


class RateLimitedLog:
    __slots__ = ("logger", "level", "interval", "_next", "_dropped")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING,
                 interval: float = 1.0):
        self.logger = logger
        self.level = level
        self.interval = interval
        self._next = 0.0     # monotonic time from which a line may be written again
        self._dropped = 0    # lines left out since the last one written

    def __call__(self, msg: str, *args) -> bool:
        """Log ``msg % args`` unless a line of this kind went out less than ``interval``
        ago; True if it was written."""
        now = time.monotonic()
        if now < self._next:
            self._dropped += 1
            return False
        self._next = now + self.interval
        if self._dropped:
            msg += " (and %d more like it in the last %gs)"
            args = (*args, self._dropped, self.interval)
            self._dropped = 0
        self.logger.log(self.level, msg, *args)
        return True
