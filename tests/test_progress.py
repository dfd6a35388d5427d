import io
import re
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


def test_a_log_file_gets_a_bar_line_at_most_once_a_minute(monkeypatch):
    from electra.progress import LOG_INTERVAL_S

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(total=2) as bar:  # tqdm's own default redraws a slow bar every 10 s, whatever mininterval says
        assert bar.mininterval == bar.maxinterval == LOG_INTERVAL_S == 60


def test_a_bar_that_shows_only_on_a_terminal_stays_out_of_a_log_file(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=2, desc="work", disable=None) as bar:  # tqdm's "on a terminal only"
        bar.update(2)
    assert log.getvalue() == ""


def _last_draw(monkeypatch, total: int, limit_s: float) -> str:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(total=total, desc="pretrain", limit_s=limit_s) as bar:
        for _ in range(3):
            time.sleep(0.15)
            bar.update(1)
            bar.refresh()
        return terminal.getvalue().split("\r")[-1]


def test_a_time_limited_bar_counts_down_to_whichever_end_comes_first(monkeypatch):
    # 3 steps took about 0.45 s: 997 more would take minutes, the limit ends the work in under 30 s
    line = _last_draw(monkeypatch, total=1000, limit_s=30.0)
    assert re.search(r"<00:2\d \(time limit\)", line), line  # counting down, not the whole limit
    # 2 more steps take about 0.3 s, well within the limit: the bar's own estimate
    line = _last_draw(monkeypatch, total=5, limit_s=60.0)
    assert re.search(r"<00:0\d,", line) and "time limit" not in line, line


def test_a_time_limited_bar_in_a_log_file_says_neither_end_before_it_knows_a_rate(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=3, desc="pretrain", limit_s=60.0) as bar:
        bar.update(3)  # done before a draw measured a rate: the closing line says 0 left, not the limit
    first, last = log.getvalue().splitlines()
    assert "<?," in first and "<00:00," in last and "time limit" not in log.getvalue()
