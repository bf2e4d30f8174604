"""nbfed.superlink.follow, the runner's view of a run: what a site sends is shown as text."""

from __future__ import annotations

import io
import json

from rich.console import Console

from nbfed.superlink import follow


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
