"""Read a notebook and select the cells the contract exports.

Each step is a small nbconvert preprocessor with one job, so they compose the way
nbconvert's own do: select the contract's cells, then turn `requirements` cells into
requirement lines.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor

from nbfed.contract import TAGS


class NotebookError(Exception):
    """The notebook cannot be read at all (not a file, not JSON, not a notebook)."""


@dataclass(frozen=True)
class TaggedCell:
    """A code cell carrying exactly one contract tag."""

    number: int  # 1-based position among all cells, as a user counts them in Jupyter
    tag: str
    source: str

    @property
    def label(self) -> str:
        return f"cell {self.number} [{self.tag}]"


@dataclass(frozen=True)
class ForeignTag:
    """A tag that is not the contract's, kept so `check` can spot misspellings."""

    number: int
    tag: str


@dataclass(frozen=True)
class Notebook:
    path: Path
    sha256: str
    cells: tuple[TaggedCell, ...]
    foreign_tags: tuple[ForeignTag, ...]
    multi_tagged: tuple[tuple[int, tuple[str, ...]], ...]  # cells with more than one contract tag

    @property
    def name(self) -> str:
        return self.path.name

    def tagged(self, tag: str) -> list[TaggedCell]:
        return [c for c in self.cells if c.tag == tag]

    @property
    def code_cells(self) -> list[TaggedCell]:
        """The cells that become the app's task module, in notebook order."""
        return [c for c in self.cells if c.tag != "requirements"]

    @property
    def requirements(self) -> list[str]:
        return [line for c in self.tagged("requirements") for line in requirement_lines(c.source)]


class SelectContractCells(Preprocessor):
    """Keep the code cells that carry a contract tag; note their position and foreign tags."""

    def preprocess(self, nb, resources):
        resources.setdefault("foreign_tags", [])
        resources.setdefault("multi_tagged", [])
        kept = []
        for number, cell in enumerate(nb.cells, start=1):
            tags = list(cell.get("metadata", {}).get("tags", []))
            ours = [t for t in tags if t in TAGS]
            resources["foreign_tags"].extend((number, t) for t in tags if t not in TAGS)
            if cell.cell_type != "code" or not ours:
                continue
            if len(ours) > 1:
                resources["multi_tagged"].append((number, tuple(ours)))
            cell.metadata["nbfed"] = {"number": number, "tag": ours[0]}
            kept.append(cell)
        nb.cells = kept
        return nb, resources


def requirement_lines(source: str) -> list[str]:
    """Requirement specifiers from a `requirements` cell.

    Accepts plain lines and `%pip install a b` / `!pip install a b` lines; drops comments,
    blank lines and pip options such as `-q`.
    """
    out: list[str] = []
    for raw in source.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for prefix in ("%pip install", "!pip install", "%pip3 install", "!pip3 install"):
            if line.startswith(prefix):
                out.extend(w for w in shlex.split(line[len(prefix) :]) if not w.startswith("-"))
                break
        else:
            out.append(line)
    return out


def read_notebook(path: Path | str) -> Notebook:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise NotebookError(f"{path}: cannot read the notebook ({err.strerror}).") from err
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as err:  # nbformat raises several types for broken JSON/schema
        raise NotebookError(
            f"{path}: not a Jupyter notebook ({err}). Save it from Jupyter as .ipynb and try again."
        ) from err
    nb, resources = SelectContractCells().preprocess(nb, {})
    cells = tuple(TaggedCell(c.metadata["nbfed"]["number"], c.metadata["nbfed"]["tag"], c.source) for c in nb.cells)
    return Notebook(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        cells=cells,
        foreign_tags=tuple(ForeignTag(n, t) for n, t in resources["foreign_tags"]),
        multi_tagged=tuple(resources["multi_tagged"]),
    )
