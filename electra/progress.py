"""Progress bars: live on a terminal, sparse in a log file.

On a terminal a bar redraws up to ten times a second. When stderr is a file or a pipe (a
batch scheduler's log, `2> log`), every redraw is appended to it, and a long run's log would
grow by megabytes of bars an hour; there a bar is written at most once a minute instead (and
at its end), which still shows where a job is.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 60.0


def progress_bar(**kwargs) -> tqdm:
    """A tqdm bar on stderr (tqdm's arguments; `disable=True` hides it)."""
    live = sys.stderr.isatty()
    return tqdm(dynamic_ncols=live, mininterval=0.1 if live else LOG_INTERVAL_S, file=sys.stderr, **kwargs)
