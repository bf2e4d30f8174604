"""`nbfed review | approve | revoke | audit` on a site host: the site's operator decides what runs.

    nbfed review              the apps that reached this site: pending (they wait for a
                              decision), signed, refused, approved or revoked
    nbfed review APP          one app: its notebook's cells, requirements, settings and the
                              diff against the last app this site approved
    nbfed approve APP         sign APP with this site's approver key: its runs go on
    nbfed revoke APP          refuse APP from now on, also in a run that is going on
    nbfed audit               every decision made here

APP is an app id (or a unique prefix of one), as `nbfed review` and the playbook print it.
The site role installs `nbfed` on the host as a wrapper that runs this module in the site
image with the trust directory mounted (nbfed.site_trust) and the operator's name passed in.
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import hashlib
import json
import os
import shutil
import sys
import tomllib
from pathlib import Path

from nbfed.app_signing import Statement, load_private_key, sign
from nbfed.site_trust import SiteTrust, fab_files, now

SHOWN = ("task.py", "pyproject.toml")  # the notebook's cells and the app's requirements and settings


class ReviewError(RuntimeError):
    """What the operator asked cannot be done; the message says why and what to do."""


class Operator:
    """The decisions of one person at one site, appended to the site's audit log."""

    def __init__(self, trust: SiteTrust, name: str) -> None:
        self.trust, self.name = trust, name
        self.key_path = trust.root / "approver.key"
        self.audit_log = trust.root / "audit.log"

    # -- what is there ----------------------------------------------------------------------
    def received(self) -> dict[str, dict]:
        """Every app that reached the site, by app id, oldest first."""
        paths = sorted(self.trust.received.glob("*.json"), key=lambda p: p.stat().st_mtime)
        return {p.stem: json.loads(p.read_text()) for p in paths}

    def state(self, app: str) -> str:
        """revoked or approved (the operator's decisions), else what the SuperNode decided when
        the app last came: pending (it waits for a decision), signed (a trusted key signed it)
        or refused."""
        if (self.trust.revoked / f"{app}.json").exists():
            return "revoked"
        if (self.trust.approvals / f"{app}.json").exists():
            return "approved"
        last = self.last_verdicts().get(app, {"waiting": True})
        return "pending" if last.get("waiting") else "signed" if last.get("accepted") else "refused"

    def last_verdicts(self) -> dict[str, dict]:
        """The SuperNode's last decision on each app (received/verdicts.jsonl)."""
        log = self.trust.received / "verdicts.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return {line["app"]: line for line in map(json.loads, lines)}

    def find(self, prefix: str) -> str:
        matches = [app for app in self.received() if app.startswith(prefix.lower())]
        if len(matches) != 1:
            found = "no app" if not matches else f"{len(matches)} apps ({', '.join(matches)})"
            raise ReviewError(f"{found} here starts with {prefix!r}; `nbfed review` lists the apps")
        return matches[0]

    def fab(self, app: str) -> bytes:
        return (self.trust.received / f"{app}.fab").read_bytes()

    def last_approved(self, but: str) -> str | None:
        approved = sorted(self.trust.approvals.glob("*.fab"), key=lambda p: p.stat().st_mtime)
        return next((p.stem for p in reversed(approved) if p.stem != but), None)

    # -- decisions --------------------------------------------------------------------------
    def approve(self, app: str) -> Statement:
        entry, fab = self.received()[app], self.fab(app)
        statement = Statement(entry["statement"]["fab-sha256"], entry["statement"]["run-config"])
        if statement.app_id != app or hashlib.sha256(fab).hexdigest() != statement.fab_sha256:
            raise ReviewError(f"app {app}'s files in {self.trust.received} do not match its id; nothing approved")
        if not self.key_path.exists():
            raise ReviewError(f"this site has no approver key ({self.key_path}); deploy the site again to make it")
        record = {"statement": entry["statement"], "signature": sign(load_private_key(self.key_path), statement)}
        self.trust.approvals.mkdir(exist_ok=True)
        shutil.copyfile(self.trust.received / f"{app}.fab", self.trust.approvals / f"{app}.fab")
        self.trust.write_record(self.trust.approvals, app, record | {"time": now(), "operator": self.name})
        (self.trust.revoked / f"{app}.json").unlink(missing_ok=True)
        self._audit("approved", app, entry)
        return statement

    def revoke(self, app: str) -> None:
        entry = self.received()[app]
        self.trust.write_record(self.trust.revoked, app, {"time": now(), "operator": self.name})
        (self.trust.approvals / f"{app}.json").unlink(missing_ok=True)
        self._audit("revoked", app, entry)

    def _audit(self, decision: str, app: str, entry: dict) -> None:
        line = {"time": now(), "operator": self.name, "decision": decision, "app": app}
        line |= {"fab-sha256": entry["statement"]["fab-sha256"], "notebook": entry.get("notebook", "")}
        line["notebook-sha256"] = entry.get("notebook-sha256", "")
        fd = os.open(self.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        with os.fdopen(fd, "a") as log:
            log.write(json.dumps(line) + "\n")


# -- what the operator reads --------------------------------------------------------------
def describe(operator: Operator, app: str) -> str:
    entry, files = operator.received()[app], fab_files(operator.fab(app))
    lines = [f"app {app}: {operator.state(app)}", f"  notebook  {entry.get('notebook', '?')}"]
    lines += [f"  sha256    {entry.get('notebook-sha256', '?')}", f"  FAB       {entry['statement']['fab-sha256']}"]
    pyproject = tomllib.loads(files.get("pyproject.toml", b"").decode())
    lines.append("  requirements: " + (", ".join(pyproject.get("project", {}).get("dependencies", [])) or "none"))
    lines.append("  run config (signed): " + json.dumps(entry["statement"]["run-config"], sort_keys=True))
    task = next((name for name in files if name.endswith("/task.py")), None)
    if task:
        lines += ["", f"--- the notebook's cells ({task}) ---", files[task].decode()]
    before = operator.last_approved(but=app)
    if before is None:
        lines.append("(no earlier app approved here to compare with)")
    else:
        old = fab_files((operator.trust.approvals / f"{before}.fab").read_bytes())
        lines.append(f"--- changes since app {before}, the last this site approved ---")
        for name in sorted(set(old) | set(files)):
            if name.startswith(".info/"):
                continue
            a, b = (f.get(name, b"").decode(errors="replace").splitlines() for f in (old, files))
            lines += difflib.unified_diff(a, b, f"{before}/{name}", f"{app}/{name}", lineterm="")
    return "\n".join(lines)


def listing(operator: Operator) -> str:
    rows = [
        f"{app}  {operator.state(app):8}  {entry.get('notebook', '?')}  FAB {entry['statement']['fab-sha256'][:12]}"
        for app, entry in operator.received().items()
    ]
    pending = sum(operator.state(app) == "pending" for app in operator.received())
    head = f"{pending} app(s) wait for a decision here; `nbfed review APP` shows one, `nbfed approve APP` approves it"
    return "\n".join([head, *rows]) if rows else "no app has reached this site yet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbfed", description="Review the apps that reach this site.")
    parser.add_argument("--trust", type=Path, default=Path(os.environ.get("NBFED_TRUST_DIR", "/trust")))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("review").add_argument("app", nargs="?")
    commands.add_parser("approve").add_argument("app")
    commands.add_parser("revoke").add_argument("app")
    commands.add_parser("audit")
    args = parser.parse_args(argv)
    operator = Operator(SiteTrust(args.trust, "manual"), os.environ.get("NBFED_OPERATOR") or getpass.getuser())
    try:
        if args.command == "review":
            print(describe(operator, operator.find(args.app)) if args.app else listing(operator))
        elif args.command == "approve":
            app = operator.find(args.app)
            operator.approve(app)
            print(f"approved app {app} as {operator.name}: its runs go on at this site (audit: {operator.audit_log})")
        elif args.command == "revoke":
            app = operator.find(args.app)
            operator.revoke(app)
            print(f"revoked app {app} as {operator.name}: this site refuses it from its next message on")
        else:
            log = operator.audit_log
            print(log.read_text() if log.exists() else "no decision made here yet\n", end="")
    except ReviewError as err:
        print(f"nbfed: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
