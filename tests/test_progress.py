import io
import sys
import time

from electra.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draws(monkeypatch, stderr) -> int:
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress_bar(total=4, desc="work") as bar:
        for _ in range(4):
            time.sleep(0.15)  # longer than a terminal's redraw interval
            bar.update(1)
    assert "work: 100%" in stderr.getvalue() and "4/4" in stderr.getvalue()
    return stderr.getvalue().count("\r")


def test_bars_redraw_live_on_a_terminal_and_sparsely_in_a_log_file(monkeypatch):
    assert _draws(monkeypatch, Terminal()) >= 4
    log = io.StringIO()
    assert _draws(monkeypatch, log) == 0  # no carriage returns in a file: each draw is a line
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("work:   0%") and lines[1].startswith("work: 100%")


def test_a_bar_that_shows_only_on_a_terminal_stays_out_of_a_log_file(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=2, desc="work", disable=None) as bar:  # tqdm's "on a terminal only"
        bar.update(2)
    assert log.getvalue() == ""
