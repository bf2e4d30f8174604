"""The `nbfed` command line: one Typer app; the commands live beside this file by who runs them
(notebook.py: the researcher's; aggregator.py: the aggregator stack's runner and the dry run)."""

from __future__ import annotations

import typer

from nbfed.cli import aggregator, notebook

app = typer.Typer(
    help="Notebook Federator: a Jupyter notebook to a cross-silo Flower federation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for name, command in {
    "check": notebook.check_cmd,
    "convert": notebook.convert_cmd,
    "build-images": notebook.build_images_cmd,
    "synth-data": notebook.synth_data_cmd,
    "run-local": notebook.run_local_cmd,
    "register": aggregator.register_cmd,
    "sign": aggregator.sign_cmd,
    "submit": aggregator.submit_cmd,
    "status": aggregator.status_cmd,
    "pki": aggregator.pki_cmd,
    "report": notebook.report_cmd,
}.items():
    app.command(name)(command)
