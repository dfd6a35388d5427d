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
    assert _draws(monkeypatch, io.StringIO()) <= 2  # the start and the end; then once a minute
