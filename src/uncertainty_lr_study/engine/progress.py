"""A training run's progress lines in its job log (``tail -f`` to follow a run):
steps done, steps per second, ETA and the last validation metric, at least every
:func:`progress_interval` seconds."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

from uncertainty_lr_study.config import ConfigError

log = logging.getLogger(__name__)


PROGRESS_SECONDS_VARIABLE = "UNCERTAINTY_LR_PROGRESS_SECONDS"

def progress_interval() -> float:
    """Seconds between two progress lines of a run: the environment variable
    ``UNCERTAINTY_LR_PROGRESS_SECONDS`` (default 30; 0: a line after every step).

    Raises:
        ConfigError: the variable is not a number >= 0.
    """
    text = os.environ.get(PROGRESS_SECONDS_VARIABLE, "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # NaN too
        raise ConfigError(
            f"{PROGRESS_SECONDS_VARIABLE} must be a number of seconds >= 0, got {text!r}"
        )
    return seconds

class ProgressLog:
    """A run's progress as one log line (INFO) at least every ``interval`` seconds, e.g.
    ``progress: step 1200/5160 (23%), 14.2 steps/s, ETA 4m39s, last val_accuracy 0.9812``.

    Call :meth:`update` after every optimizer step, and with the row after every
    evaluation; :meth:`close` at the end of the run. From the first update on, a line
    is written as soon as ``interval`` seconds have passed since the previous one: by
    the update that finds it due, or, while no update comes (a long evaluation, the
    test pass, a checkpoint), by a background timer that repeats the last known
    step, so ``tail -f`` of the job log never waits longer than ``interval``. Steps
    per second count this process's steps over its time, evaluations included, so
    that the ETA includes the evaluations to come.

    Args:
        total_steps: the run's optimizer steps.
        metric: the history column reported, e.g. ``"val_accuracy"``.
        done: steps done before this process (a resumed run).
        interval: seconds; default :func:`progress_interval`; 0: a line at every
            update (no timer); ``math.inf``: no lines.
    """

    def __init__(
        self, total_steps: int, metric: str, done: int = 0, interval: float | None = None
    ) -> None:
        self.total, self.metric, self.done = total_steps, metric, done
        self.interval = progress_interval() if interval is None else interval
        self.t0 = self.last_line = time.perf_counter()
        self.value: float | None = None
        self.step = done
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._timer: threading.Thread | None = None

    def update(self, step: int, row: dict[str, Any] | None = None) -> None:
        """Steps done so far; ``row``: an evaluation's history row (its ``metric``)."""
        with self._lock:
            self.step = step
            if row is not None and self.metric in row:
                self.value = float(row[self.metric])
        if self._timer is None and 0 < self.interval < math.inf and not self._closed.is_set():
            self._timer = threading.Thread(target=self._beat, name="progress-log", daemon=True)
            self._timer.start()
        self._line_if_due()

    def close(self) -> None:
        """Stop the timer (the run has ended); no line is written after this."""
        self._closed.set()

    def _beat(self) -> None:
        while True:
            with self._lock:
                wait = self.last_line + self.interval - time.perf_counter()
            if self._closed.wait(max(wait, 0.0)):
                return
            self._line_if_due()

    def _line_if_due(self) -> None:
        with self._lock:
            now = time.perf_counter()
            if self._closed.is_set() or now - self.last_line < self.interval:
                return
            self.last_line = now
            step, value = self.step, self.value
        rate = (step - self.done) / max(now - self.t0, 1e-9)
        eta = _clock((self.total - step) / rate) if rate > 0 else "unknown"
        log.info(
            "progress: step %d/%d (%d%%), %.3g steps/s, ETA %s, last %s %s",
            step,
            self.total,
            100 * step // max(self.total, 1),
            rate,
            eta,
            self.metric,
            "none yet" if value is None else f"{value:.4f}",
        )


def _clock(seconds: float) -> str:
    """``42s``, ``4m39s`` or ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
