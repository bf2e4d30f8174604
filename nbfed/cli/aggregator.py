"""The deployment's commands: sign (the control node); register, submit, status, pki (the
aggregator stack's runner and the dry run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from nbfed.check import CheckFailed
from nbfed.cli.common import CaOpt, NotebookArg, SetOpt, SuperLinkOpt, console, err, fail, finish, parse_settings
from nbfed.notebook import NotebookError


def register_cmd(
    keys: Annotated[list[Path], typer.Argument(help="Sites' public keys, SITE.pub (the file name names the site).")],
    superlink: SuperLinkOpt,
    ca: CaOpt = None,
    inventory: Annotated[
        list[str] | None,
        typer.Option("--inventory", help="A site of the inventory (repeat it for each); other sites are unregistered."),
    ] = None,
) -> None:
    """Register each site's current public key with SuperLink, named after the site: its old
    key, if it made a new one, is unregistered (one node per site), and with --inventory so is
    every site the inventory no longer names."""
    from nbfed.node_registry import plan
    from nbfed.superlink import RunFailed, connect

    by_site = {key.name.removesuffix(".pub"): key for key in keys}
    with connect(superlink, ca) as client:
        try:
            registry = client.registry(list(by_site.values()))
            current = {site: registry["keys"][str(key)] for site, key in by_site.items()}
            todo = plan(registry["nodes"], current, inventory)
            for site, why in todo.refused.items():
                err.print(f"site {site}: {why}")
            if todo.refused:
                raise fail("some sites' keys cannot be registered (above); nothing was changed")
            for site in by_site:
                fresh = site in todo.register and client.register(by_site[site], site)
                said = f"site {site}: public key {'registered' if fresh else 'already registered'}"
                console.print(said, soft_wrap=True)  # one line each: the deploy selects them by their end
            for node_id, why in todo.unregister.items():  # after the new keys: a site is never without one
                client.unregister(node_id)
                console.print(f"{why}: node {node_id} unregistered", soft_wrap=True)
        except RunFailed as e:
            raise fail(str(e)) from None


def submit_cmd(
    notebook: NotebookArg,
    superlink: SuperLinkOpt,
    ca: CaOpt = None,
    results_root: Annotated[Path, typer.Option(help="Where the ServerApp writes results (a volume it shares).")] = Path(
        "results"
    ),
    name: Annotated[str | None, typer.Option(help="Run name (default <notebook>-<time>).")] = None,
    set_: SetOpt = [],
    timeout: Annotated[float, typer.Option(help="Seconds before the run is abandoned.")] = 3600,
    resume: Annotated[
        bool, typer.Option(help="Go on with the run --name from its last checkpoint (same app, same settings).")
    ] = False,
    signed: Annotated[
        bool, typer.Option(help="The run --name was prepared and signed on the control node (`nbfed sign`).")
    ] = False,
) -> None:
    """Submit the notebook's app to a running SuperLink, follow it, write the report.

    A run whose ServerApp is lost (the aggregator restarted under it) goes on from its last
    checkpoint by itself; --resume goes on with one whose runner was lost too."""
    from nbfed.submit import default_results_dir, submit
    from nbfed.superlink import RunFailed, connect

    started = time.monotonic()
    results = results_root / name if name else default_results_dir(notebook, results_root)  # "" counts as unset
    try:
        with connect(superlink, ca) as client:
            run = submit(
                notebook, client, results, parse_settings(set_), console, timeout, resume=resume, signed=signed
            )
    except (NotebookError, CheckFailed) as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (RunFailed, FileExistsError, FileNotFoundError, KeyError) as e:
        raise fail(str(e).strip("'\"")) from None
    finish(run.results, started)


def sign_cmd(
    notebook: NotebookArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where the signed run goes (the app, app.fab, overrides.toml).")
    ],
    key: Annotated[Path, typer.Option(help="The consortium's Ed25519 signing key (OpenSSH format).")],
    results_dir: Annotated[str, typer.Option(help="The results directory as the aggregator's ServerApp sees it.")],
    set_: SetOpt = [],
) -> None:
    """Prepare a run on the control node and sign its app and run config for the sites.

    Prints the app id, its FAB's sha256 and the key id as JSON, for the playbook."""
    from nbfed.app_signing import key_id, load_private_key
    from nbfed.submit import sign_run

    settings = {**parse_settings(set_), "nbfed.results-dir": results_dir}
    try:
        _, statement = sign_run(notebook, out, settings, key)
    except (NotebookError, CheckFailed) as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (FileExistsError, FileNotFoundError, KeyError, ValueError) as e:
        raise fail(str(e).strip("'\"")) from None
    signer = key_id(load_private_key(key).public_key())
    print(json.dumps({"app": statement.app_id, "fab-sha256": statement.fab_sha256, "key": signer}))


def status_cmd(
    superlink: SuperLinkOpt,
    ca: CaOpt = None,
    runs: Annotated[int, typer.Option(help="How many of the newest runs to list.")] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print the SuperNodes and runs as JSON.")] = False,
) -> None:
    """The SuperNodes SuperLink knows (online, offline, registered) and its newest runs."""
    from rich.markup import escape
    from rich.table import Table

    from nbfed.superlink import RunFailed, connect

    try:
        with connect(superlink, ca) as client:
            nodes, recent = client.nodes(), client.runs()
    except RunFailed as e:
        raise fail(str(e)) from None
    recent = sorted(recent, key=lambda r: str(r.get("pending-at") or ""))[-runs:] if runs else []
    if json_:
        print(json.dumps({"nodes": nodes, "online": sum(n["status"] == "online" for n in nodes), "runs": recent}))
        return
    table = Table("site", "node", "status", "registered", "online since", title="SuperNodes")
    for n in nodes:
        times = (str(n[at] or "")[:19].replace("T", " ") for at in ("created-at", "online-at"))
        table.add_row(escape(n["name"]), str(n["node-id"]), n["status"], *times)
    console.print(table)
    table = Table("run", "app", "submitted", "status", "elapsed", title="Runs")
    for r in recent:
        table.add_row(
            r["run-id"],
            r["fab-name"],
            str(r.get("pending-at") or "")[:19],
            r["status"],
            f"{float(r['elapsed'] or 0):.0f} s",
        )
    console.print(table)


def pki_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the CA, certificate and node keys.")],
    san: Annotated[
        list[str], typer.Option(help="A name or address of the aggregator (repeatable; the first is the CN).")
    ],
    site: Annotated[list[str], typer.Option(help="A site that gets a node key (repeatable).")] = [],
    uid: Annotated[int | None, typer.Option(help="Give every file to this uid (the containers' user).")] = None,
) -> None:
    """A throw-away PKI for the dry run: CA, SuperLink certificate, one node key per site."""
    from nbfed.pki import make_pki

    if (out / "ca.crt").exists():
        console.print(f"{out} already holds a PKI; kept")
        return
    make_pki(out, san, site, uid)
    console.print(f"PKI in {out}: CA, certificate for {', '.join(san)}, node keys for {', '.join(site) or 'no site'}")
