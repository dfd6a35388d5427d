"""Progress bars: live on a terminal, sparse in a log file.

On a terminal a bar redraws up to ten times a second. When stderr is a file or a pipe (a
batch scheduler's log, `2> log`), every redraw is appended to it, and a long run's log would
grow by megabytes of bars an hour; there a bar is written at most once a minute instead (and
at its end), each on a line of its own, which still shows where a job is.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 60.0


class _Lines:
    """A log file for a bar: each redraw a line of its own. tqdm draws over the previous one with
    a carriage return, which in a file makes a run's whole log one ever longer line."""

    def __init__(self, stream):
        self.stream = stream

    @property
    def encoding(self) -> str | None:
        return getattr(self.stream, "encoding", None)

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # tqdm's disable=None hides a bar on what is not a terminal
        return False


def progress_bar(**kwargs) -> tqdm:
    """A tqdm bar on stderr (tqdm's arguments; `disable=True` hides it)."""
    live = sys.stderr.isatty()
    out = sys.stderr if live else _Lines(sys.stderr)
    return tqdm(dynamic_ncols=live, mininterval=0.1 if live else LOG_INTERVAL_S, file=out, **kwargs)
