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


class _TimeLimited(tqdm):
    """A bar whose work may end by a time limit before its total: the time left is the sooner of
    the two ends, marked when it is the limit's."""

    def __init__(self, *args, limit_s: float, **kwargs):
        self.limit_s = limit_s
        bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{time_left}, {rate_fmt}{postfix}]"
        super().__init__(*args, bar_format=bar_format, **kwargs)

    @property
    def format_dict(self) -> dict:
        d = super().format_dict
        by_limit = max(self.limit_s - d["elapsed"], 0.0)
        n, total, done = d["n"], d["total"], d["n"] - d["initial"]
        rate = d["rate"] or (done / d["elapsed"] if done and d["elapsed"] else None)  # tqdm's, else the mean
        if total and n >= total:
            d["time_left"] = self.format_interval(0)
        elif rate is None or not total:
            d["time_left"] = "?"
        elif (by_total := (total - n) / rate) <= by_limit:
            d["time_left"] = self.format_interval(by_total)
        else:
            d["time_left"] = f"{self.format_interval(by_limit)} (time limit)"
        return d


def progress_bar(limit_s: float | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr (tqdm's arguments; `disable=True` hides it). `limit_s`: the work
    stops after that many seconds even short of its total, and the time left says so."""
    live = sys.stderr.isatty()
    out = sys.stderr if live else _Lines(sys.stderr)
    cls, extra = (tqdm, {}) if limit_s is None else (_TimeLimited, {"limit_s": limit_s})
    every = {"mininterval": 0.1} if live else {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S}
    return cls(dynamic_ncols=live, file=out, **every, **extra, **kwargs)
