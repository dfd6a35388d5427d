"""Stop signals: a scheduler's SIGTERM or a Ctrl-C ends a long run after the step in progress,
with its progress saved, instead of losing the work since the last save."""

from __future__ import annotations

import contextlib
import signal
import threading
import time


class Interrupted(Exception):
    """A stop signal ended the run after it saved its progress; `where` says where and in what.
    A process that stopped because another got the signal (torchrun) reports SIGTERM."""

    def __init__(self, signum: int | None, where: str):
        self.signum = signum or signal.SIGTERM
        super().__init__(f"stopped by {signal.Signals(self.signum).name} {where}")


class Terminated(BaseException):
    """SIGTERM outside a training loop: unwinds like Ctrl-C's KeyboardInterrupt, so that what was
    being written is removed, not left half-done (`terminate_unwinds`)."""


def _terminate(signum: int, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_unwinds():
    """Within: SIGTERM raises Terminated (in the main thread; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """SIGTERM (a scheduler's notice, `kill`, torchrun passing on a stop) or SIGINT (Ctrl-C) asks
    the loop to stop after its step in progress and save it; another one a second later stops
    at once. Only the main thread can take signals: elsewhere this does nothing."""

    def __init__(self, say):
        self.signum: int | None = None
        self.at = 0.0
        self.say = say
        self.previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
            self.say(f"{signal.Signals(signum).name}: stopping at the next step boundary, saving it (again: at once)")
        elif time.monotonic() - self.at > 1.0:  # not the same Ctrl-C, passed on again by torchrun
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated  # exits 130 or 143, as signalled
