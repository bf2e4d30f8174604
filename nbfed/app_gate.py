"""The site's gate in nbfed's SuperNode: no part of an app runs before the site's trust allows it.

Flower 1.41's SuperNode pulls a message, fetches its run and FAB the first time it sees the
run, and stores them for the ClientApp. Its own app verification (`--trusted-entities`)
accepts only verifications made by Flower's hub for a licensed SuperLink, so `AppGate` wraps
the step that pulls and stores a message (`_pull_and_store_message`) instead:

- a new run's FAB and run config are fetched once and judged (nbfed.site_trust.SiteTrust);
  Flower is then handed exactly what was judged (a second fetch could bring other bytes),
  and the run config without its unsigned keys, so the ClientApp sees only signed settings;
- a refused app gets an error reply naming the refusal (the run's record shows it, and the
  round goes on by its participation policy);
- an app waiting for the site operator's approval keeps its messages here, and they go on
  to Flower as soon as `nbfed approve` is done (within the round's timeout);
- an app the operator revokes is refused from its next message on, also mid-run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nbfed.app_signing import UNSIGNED_KEYS
from nbfed.site_trust import SiteTrust, Verdict

RECHECK_INTERVAL = 1.0  # seconds between looks for an approval of a waiting app


def log(message: str) -> None:
    print(f"nbfed-supernode: {message}", file=sys.stderr, flush=True)


class AppGate:
    """Wraps Flower's `_pull_and_store_message(**kwargs)` (start_client_internal.py, 1.41)."""

    def __init__(self, trust: SiteTrust, site: str) -> None:
        self.trust, self.site = trust, site
        self.judged: dict[int, tuple] = {}  # run id -> (Run, Fab, Verdict or None), as fetched
        self.waiting: list[tuple[object, object]] = []  # (message, object tree) held for approval
        self.rechecked = 0.0

    def wrap(self, pull_and_store: Callable[..., int | None]) -> Callable[..., int | None]:
        def gated(*, state, object_store, receive, get_run, get_fab, **rest) -> int | None:
            refused: list[int] = []

            def receive_judged():
                got = self._released(get_run, get_fab) or receive()
                if got is None:
                    return None
                message, _ = got
                verdict = self._judge(message.metadata.run_id, get_run, get_fab)
                if verdict.accepted:
                    return got
                if verdict.waiting:
                    self.waiting.append(got)
                    return None
                self._reply_error(message, verdict, state, object_store)
                refused.append(message.metadata.run_id)
                return None

            run_id = pull_and_store(
                state=state,
                object_store=object_store,
                receive=receive_judged,
                get_run=self._signed_run,  # what was judged, never a second fetch
                get_fab=lambda fab_hash, run_id: self.judged[run_id][1],
                **rest,
            )
            # A refusal's error reply is stored like Flower's own: a run id makes its loop push it.
            return run_id if run_id is not None else (refused[0] if refused else None)

        return gated

    # -- verdicts ---------------------------------------------------------------------------
    def _judge(self, run_id: int, get_run, get_fab) -> Verdict:
        """The verdict on a run's app. Its run and FAB are fetched once; an accepted app is
        judged again only if revoked since, any other on every look (it may be approved)."""
        if run_id not in self.judged:
            run = get_run(run_id)
            self.judged[run_id] = (run, get_fab(run.fab_hash, run_id), None)
        run, fab, before = self.judged[run_id]
        if before is not None and before.accepted and not self.trust.is_revoked(before.statement):
            return before
        verdict = self.trust.verdict(fab.content, run.fab_hash, dict(run.override_config))
        self.judged[run_id] = (run, fab, verdict)
        if verdict != before:
            log(f"run {run_id}: {verdict.message(self.site)}")
            self.trust.record(verdict, fab.content, run_id, self.site)
        return verdict

    def _signed_run(self, run_id: int):
        """The judged run as Flower may see it: its run config without the unsigned keys."""
        run = self.judged[run_id][0]
        signed = {k: v for k, v in run.override_config.items() if k not in UNSIGNED_KEYS}
        return dataclasses.replace(run, override_config=signed)

    def _released(self, get_run, get_fab):
        """A held message whose app the operator has approved since, if any."""
        if not self.waiting or time.monotonic() - self.rechecked < RECHECK_INTERVAL:
            return None
        self.rechecked = time.monotonic()
        for i, (message, _) in enumerate(self.waiting):
            run_id = message.metadata.run_id
            if not self._judge(run_id, get_run, get_fab).waiting:
                return self.waiting.pop(i)  # approved (or refused meanwhile: judged again on return)
        return None

    def _reply_error(self, message, verdict: Verdict, state, object_store) -> None:
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode
        from flwr.supernode import start_client_internal as supernode

        error = Error(ErrorCode.INVALID_FAB, verdict.message(self.site))
        supernode._insert_message(Message(error, reply_to=message), state, object_store)


def install() -> AppGate:
    """Put the gate into Flower's SuperNode loop, with the trust the container was given:
    NBFED_APP_TRUST (consortium, manual or any), NBFED_TRUST_DIR, NBFED_SITE."""
    from flwr.supernode import start_client_internal as supernode

    policy = os.environ.get("NBFED_APP_TRUST", "")
    if not policy:
        sys.exit("nbfed-supernode: NBFED_APP_TRUST is not set: say which apps this site runs (consortium, manual, any)")
    gate = AppGate(
        SiteTrust(Path(os.environ.get("NBFED_TRUST_DIR", "/trust")), policy), os.environ.get("NBFED_SITE", "site")
    )
    if policy == "any":
        log("NBFED_APP_TRUST=any: this SuperNode runs any app it is sent, unsigned ones too (one-machine trials only)")
    supernode._pull_and_store_message = gate.wrap(supernode._pull_and_store_message)
    return gate
