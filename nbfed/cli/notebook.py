"""The researcher's commands: check, convert, build the images, synthetic data, run locally, report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from nbfed.check import CheckFailed, check
from nbfed.cli.common import NotebookArg, SetOpt, console, err, fail, finish, parse_settings
from nbfed.notebook import NotebookError, read_notebook


def check_cmd(notebook: NotebookArg) -> None:
    """Validate a notebook against the contract; report every problem, by cell."""
    try:
        nb = read_notebook(notebook)
    except NotebookError as e:
        raise fail(str(e)) from None
    violations = check(nb)
    if violations:
        err.print(str(CheckFailed(nb, violations)), highlight=False, markup=False)
        raise typer.Exit(1)
    tags = ", ".join(dict.fromkeys(c.tag for c in nb.cells))
    console.print(f"{notebook}: OK ({len(nb.cells)} tagged cells: {tags})")


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
        raise fail(str(e)) from None
    refs = {
        f"NBFED_{(i.kind + ('_' + i.flavour if i.kind == 'site' and i.flavour != 'cpu' else '')).upper()}_IMAGE": i.ref
        for i in images
    }
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(refs.items())))
    out.print(f"image references written to {env_file}")
    if json_:
        print(json.dumps({"images": refs, "built": [i.ref for i in images if i.built]}))


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
            raise fail(str(e), 2) from None
    for site, info in manifest["sites"].items():
        console.print(
            f"{site}: "
            + ", ".join(f"{split} {c['tumor']} tumour / {c['normal']} normal" for split, c in info["counts"].items())
        )
    console.print(f"synthetic data in {out} (not medical data)")


def run_local_cmd(
    notebook: NotebookArg,
    data: Annotated[Path, typer.Option("--data", help="Directory with one subdirectory per site (train/ and test/).")],
    results: Annotated[
        Path | None, typer.Option("--results", help="Results directory (default results/<notebook>-<time>).")
    ] = None,
    set_: SetOpt = [],
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
        generated, results_dir = run_local(notebook, data, results, parse_settings(set_), console, timeout)
        if baselines:
            from nbfed.baselines import run_baselines

            run_baselines(generated, results_dir, data, console)
    except (NotebookError, CheckFailed) as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (RunFailed, FileNotFoundError, FileExistsError, KeyError) as e:
        raise fail(str(e).strip("'\"")) from None
    except KeyboardInterrupt:
        raise fail("interrupted; every process was stopped", 130) from None
    finish(results_dir, started)


def report_cmd(results: Annotated[Path, typer.Argument(help="A run's results directory.")]) -> None:
    """Write report.md and metrics.png for a finished run, and show its table."""
    from nbfed.report import render_table, write_report

    try:
        report = write_report(results)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    console.print(render_table(results))
    console.print(f"report: {report}")
