"""nbfed.superlink.follow, the runner's view of a run: what a site sends is shown as text, and
only a SuperLink that started again under the run counts as one that lost its ServerApp."""

from __future__ import annotations

import io
import json
import threading

import pytest
from rich.console import Console

from nbfed.superlink import ServerAppLost, follow
from nbfed.superlink_launcher import write_boot_id


def test_a_sites_error_is_shown_as_text_whatever_it_holds(tmp_path) -> None:
    """A reason that is Rich markup (or breaks it) or is empty shows as the site's words and
    does not stop the runner from following the run to its end."""
    hostile = "boom [/] [link=http://attacker.example]click[/link] [bold red]"
    events = [
        {"event": "round_finished", "round": 1, "duration_s": 1.0, "sites": ["site-a"], "pooled": {},
         "errors": {"site-b": f"Traceback...\n{hostile}", "site-c": ""}},
        {"event": "finished"},
    ]  # fmt: skip
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    out = io.StringIO()
    follow(None, 1, tmp_path, 1, Console(file=out, width=200), timeout=10)  # the run ended: SuperLink is not asked
    shown = out.getvalue()
    assert f"site-b: {hostile}" in shown, shown
    assert "site-c: (no reason given)" in shown, shown
    assert "round 1/1" in shown and "1 site error" not in shown and "2 site error(s)" in shown, shown


class SuperLinkSeen:
    """What follow() asks SuperLink, answered as a test scripts it (the logic around the real
    client; SuperLink itself is restarted for real in tests/integration/test_reliability.py)."""

    def __init__(self, reachable: list[bool]) -> None:
        self.answers, self.stopped = reachable, []

    def reachable(self) -> bool:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def run_status(self, run_id: int) -> tuple[str, str]:
        return "running", ""

    def stop(self, run_id: int) -> None:
        self.stopped.append(run_id)


def later(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_a_superlink_slow_to_answer_is_not_taken_for_a_restart(tmp_path) -> None:
    """On a busy machine a health probe may time out: the run goes on (it was stopped and
    resumed from scratch before, which failed a run in CI)."""
    results = tmp_path / "run"
    results.mkdir()
    write_boot_id(tmp_path)
    (results / "events.jsonl").write_text(json.dumps({"event": "started"}) + "\n")
    superlink = SuperLinkSeen(reachable=[False, True])
    timer = later(2.5, lambda: (results / "events.jsonl").open("a").write(json.dumps({"event": "finished"}) + "\n"))
    follow(superlink, 7, results, 1, Console(file=io.StringIO()), timeout=20)
    timer.join()
    assert superlink.stopped == []


def test_a_superlink_that_started_again_under_the_run_is_a_lost_serverapp(tmp_path) -> None:
    results = tmp_path / "run"
    results.mkdir()
    write_boot_id(tmp_path)
    (results / "events.jsonl").write_text(json.dumps({"event": "started"}) + "\n")
    superlink = SuperLinkSeen(reachable=[True])
    timer = later(1.5, lambda: write_boot_id(tmp_path))  # the launcher, at SuperLink's next start
    with pytest.raises(ServerAppLost, match="SuperLink restarted under run 7"):
        follow(superlink, 7, results, 1, Console(file=io.StringIO()), timeout=20)
    timer.join()
    assert superlink.stopped == [7]
