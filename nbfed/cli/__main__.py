"""`python -m nbfed.cli ...`: the same as `nbfed ...`."""

from nbfed.cli import app

app()
