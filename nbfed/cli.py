"""The `nbfed` command line."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from nbfed.check import CheckFailed, check
from nbfed.notebook import NotebookError, read_notebook

app = typer.Typer(
    help="Notebook Federator: a Jupyter notebook to a cross-silo Flower federation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay one line each, for logs and grep

NotebookArg = Annotated[Path, typer.Argument(help="The notebook (.ipynb) with tagged cells.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _finish(results: Path, started: float) -> None:
    """Write the report of a finished run and show its Table-2-style table."""
    from nbfed.report import render_table, write_report

    report = write_report(results)
    console.print(render_table(results))
    console.print(f"finished in {time.monotonic() - started:.0f} s; report: {report}")


def _parse_settings(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE run-config overrides; values are Python/JSON literals, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--set expects KEY=VALUE, got '{pair}'", 2)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False}.get(raw.lower(), raw)
        out[key.strip()] = value
    return out


@app.command("check")
def check_cmd(notebook: NotebookArg) -> None:
    """Validate a notebook against the contract; report every problem, by cell."""
    try:
        nb = read_notebook(notebook)
    except NotebookError as e:
        raise _fail(str(e)) from None
    violations = check(nb)
    if violations:
        err.print(str(CheckFailed(nb, violations)), highlight=False, markup=False)
        raise typer.Exit(1)
    tags = ", ".join(dict.fromkeys(c.tag for c in nb.cells))
    console.print(f"{notebook}: OK ({len(nb.cells)} tagged cells: {tags})")


@app.command("convert")
def convert_cmd(
    notebook: NotebookArg, out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the Flower app.")]
) -> None:
    """Generate the Flower app (pyproject.toml, task.py, client_app.py, server_app.py)."""
    from nbfed.convert import convert

    try:
        generated = convert(notebook, out)
    except (NotebookError, CheckFailed) as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None
    console.print(f"{notebook} -> {out} (package {generated.package}); `flwr build --app {out}` bundles it")


@app.command("build-images")
def build_images_cmd(
    notebook: NotebookArg,
    flavour: Annotated[list[str], typer.Option(help="Site image flavour: cpu and/or cuda (repeatable).")] = ["cpu"],
    base_image: Annotated[
        str,
        typer.Option(
            envvar="NBFED_BASE_IMAGE",
            help="Python 3.11 base image (images/base/build.sh makes nbfed/base:bookworm where nothing can be pulled).",
        ),
    ] = "python:3.11-slim-bookworm",
    tools_image: Annotated[
        str | None,
        typer.Option(
            envvar="NBFED_TOOLS_IMAGE",
            show_default=False,
            help="The base's Debian release with binutils, to strip the libraries "
            "(default: python:X-Y for python:X-slim-Y, else BASE-tools as images/base/build.sh makes).",
        ),
    ] = None,
    build_dir: Annotated[Path, typer.Option(help="Build tree: wheelhouse and contexts, reused between builds.")] = Path(
        "build"
    ),
    env_file: Annotated[Path, typer.Option(help="Write the image references here for compose.")] = Path("compose/.env"),
    json_: Annotated[
        bool, typer.Option("--json", help="Progress to stderr; the images as JSON on stdout (for the playbook).")
    ] = False,
) -> None:
    """Build the aggregator, proxy and site images for a notebook's requirements (cached by content)."""
    from nbfed.images import ImagesError, build_images

    out = err if json_ else console
    try:
        nb = read_notebook(notebook)
        images = build_images(
            nb.requirements,
            flavours=flavour,
            base_image=base_image,
            tools_image=tools_image,
            build_dir=build_dir,
            labels={"notebook": nb.name, "notebook_sha256": nb.sha256},
            console=out,
        )
    except (NotebookError, ImagesError) as e:
        raise _fail(str(e)) from None
    refs = {
        f"NBFED_{(i.kind + ('_' + i.flavour if i.kind == 'site' and i.flavour != 'cpu' else '')).upper()}_IMAGE": i.ref
        for i in images
    }
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(refs.items())))
    out.print(f"image references written to {env_file}")
    if json_:
        print(json.dumps({"images": refs, "built": [i.ref for i in images if i.built]}))


@app.command("synth-data")
def synth_data_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output directory (one subdirectory per site).")],
    scale: Annotated[float | None, typer.Option(help="Fraction of the paper's Table 1 patch counts.")] = None,
    size: Annotated[int | None, typer.Option(help="Patch size in pixels (224 as in the paper).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Write synthetic H&E-like patches for three sites (synthetic, not medical data)."""
    from rich.progress import Progress

    from nbfed import synth

    kwargs: dict[str, Any] = {"seed": seed}
    if scale is not None:
        kwargs["scale"] = scale
    if size is not None:
        kwargs["size"] = size
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("writing patches", total=None)
        try:
            manifest = synth.generate(
                out, progress=lambda done, total: progress.update(task, completed=done, total=total), **kwargs
            )
        except ValueError as e:
            raise _fail(str(e), 2) from None
    for site, info in manifest["sites"].items():
        console.print(
            f"{site}: "
            + ", ".join(f"{split} {c['tumor']} tumour / {c['normal']} normal" for split, c in info["counts"].items())
        )
    console.print(f"synthetic data in {out} (not medical data)")


@app.command("run-local")
def run_local_cmd(
    notebook: NotebookArg,
    data: Annotated[Path, typer.Option("--data", help="Directory with one subdirectory per site (train/ and test/).")],
    results: Annotated[
        Path | None, typer.Option("--results", help="Results directory (default results/<notebook>-<time>).")
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a run-config key: --set num_rounds=5.")] = [],
    baselines: Annotated[
        bool, typer.Option("--baselines", help="Also train each site alone and compare (Table 2).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds before the run is abandoned.")] = 3600,
) -> None:
    """Run a real Flower federation on this machine: SuperLink + one SuperNode per site."""
    from nbfed.local import run_local
    from nbfed.superlink import RunFailed

    started = time.monotonic()
    try:
        generated, results_dir = run_local(notebook, data, results, _parse_settings(set_), console, timeout)
        if baselines:
            from nbfed.baselines import run_baselines

            run_baselines(generated, results_dir, data, console)
    except (NotebookError, CheckFailed) as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (RunFailed, FileNotFoundError, FileExistsError, KeyError) as e:
        raise _fail(str(e).strip("'\"")) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; every process was stopped", 130) from None
    _finish(results_dir, started)


@app.command("register")
def register_cmd(
    keys: Annotated[list[Path], typer.Argument(help="Sites' public keys, SITE.pub (the file name names the site).")],
    superlink: Annotated[str, typer.Option(help="SuperLink Control API as host:port (the aggregator's loopback).")],
    ca: Annotated[
        Path | None, typer.Option(help="Consortium CA certificate; without it, plain HTTP (loopback only).")
    ] = None,
) -> None:
    """Register sites' SuperNode public keys with SuperLink (already registered keys are kept)."""
    from nbfed.superlink import RunFailed, connect

    with connect(superlink, ca) as client:
        for key in keys:
            site = key.name.removesuffix(".pub")
            try:
                fresh = client.register(key, site)
            except RunFailed as e:
                raise _fail(str(e)) from None
            console.print(f"site {site}: public key {'registered' if fresh else 'already registered'}")


@app.command("submit")
def submit_cmd(
    notebook: NotebookArg,
    superlink: Annotated[str, typer.Option(help="SuperLink Control API as host:port (the aggregator's loopback).")],
    ca: Annotated[
        Path | None, typer.Option(help="Consortium CA certificate; without it, plain HTTP (loopback only).")
    ] = None,
    results_root: Annotated[Path, typer.Option(help="Where the ServerApp writes results (a volume it shares).")] = Path(
        "results"
    ),
    name: Annotated[str | None, typer.Option(help="Run name (default <notebook>-<time>).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a run-config key: --set num_rounds=5.")] = [],
    timeout: Annotated[float, typer.Option(help="Seconds before the run is abandoned.")] = 3600,
    resume: Annotated[
        bool, typer.Option(help="Go on with the run --name from its last checkpoint (same app, same settings).")
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
            run = submit(notebook, client, results, _parse_settings(set_), console, timeout, resume=resume)
    except (NotebookError, CheckFailed) as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (RunFailed, FileExistsError, FileNotFoundError, KeyError) as e:
        raise _fail(str(e).strip("'\"")) from None
    _finish(run.results, started)


@app.command("status")
def status_cmd(
    superlink: Annotated[str, typer.Option(help="SuperLink Control API as host:port (the aggregator's loopback).")],
    ca: Annotated[
        Path | None, typer.Option(help="Consortium CA certificate; without it, plain HTTP (loopback only).")
    ] = None,
    runs: Annotated[int, typer.Option(help="How many of the newest runs to list.")] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print the SuperNodes and runs as JSON.")] = False,
) -> None:
    """The SuperNodes SuperLink knows (online, offline, registered) and its newest runs."""
    from rich.table import Table

    from nbfed.superlink import RunFailed, connect

    try:
        with connect(superlink, ca) as client:
            nodes, recent = client.nodes(), client.runs()
    except RunFailed as e:
        raise _fail(str(e)) from None
    recent = sorted(recent, key=lambda r: str(r.get("pending-at") or ""))[-runs:] if runs else []
    if json_:
        print(json.dumps({"nodes": nodes, "online": sum(n["status"] == "online" for n in nodes), "runs": recent}))
        return
    table = Table("node", "status", "registered", "online since", title="SuperNodes")
    for n in nodes:
        table.add_row(n["node-id"], n["status"], n["created-at"], n["online-at"])
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


@app.command("pki")
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


@app.command("report")
def report_cmd(results: Annotated[Path, typer.Argument(help="A run's results directory.")]) -> None:
    """Write report.md and metrics.png for a finished run, and show its table."""
    from nbfed.report import render_table, write_report

    try:
        report = write_report(results)
    except FileNotFoundError as e:
        raise _fail(str(e)) from None
    console.print(render_table(results))
    console.print(f"report: {report}")


if __name__ == "__main__":
    app()
