"""Validate a notebook against the contract; report every violation at once, by cell."""

from __future__ import annotations

import ast
import difflib
import re
from collections import defaultdict
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from nbfed.check_config import config_cell_problems
from nbfed.contract import (
    CONFIG_NAME,
    FLWR_REQUIREMENT,
    FUNCTIONS,
    REQUIRED_TAGS,
    ROUNDS_KEY,
    TAGS,
)
from nbfed.notebook import Notebook, TaggedCell, requirement_lines


@dataclass(frozen=True)
class Violation:
    where: str  # "cell 4 [model]" or "notebook"
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}\n    fix: {self.fix}"


class CheckFailed(Exception):
    def __init__(self, notebook: Notebook, violations: list[Violation]):
        self.notebook = notebook
        self.violations = violations
        n = len(violations)
        lines = [f"{notebook.path}: {n} problem{'s' if n != 1 else ''} with the notebook contract"]
        lines += [f"  {v}" for v in violations]
        super().__init__("\n".join(lines))


def check(nb: Notebook) -> list[Violation]:
    """All contract violations of `nb`, in notebook order (empty when it converts)."""
    found: list[Violation] = []
    found += _tags(nb)
    trees: dict[int, ast.Module] = {}
    for cell in nb.cells:
        if cell.tag == "requirements":
            found += _requirements(cell)
            continue
        tree, problems = _parse(cell)
        found += problems
        if tree is not None:
            trees[cell.number] = tree
    found += _config(nb, trees)
    found += _functions(nb, trees)
    found += _duplicates(nb, trees)
    return sorted(found, key=lambda v: _order(v.where))


def check_or_raise(nb: Notebook) -> None:
    violations = check(nb)
    if violations:
        raise CheckFailed(nb, violations)


def _order(where: str) -> tuple[int, int]:
    m = re.match(r"cell (\d+)", where)
    return (1, int(m.group(1))) if m else (0, 0)


def _tags(nb: Notebook) -> list[Violation]:
    out: list[Violation] = []
    for ft in nb.foreign_tags:
        close = difflib.get_close_matches(ft.tag.lower(), TAGS, n=1, cutoff=0.75)
        if close:
            out.append(
                Violation(
                    f"cell {ft.number} [{ft.tag}]",
                    f"unknown tag '{ft.tag}', spelled like the contract's '{close[0]}'",
                    f"rename the tag to '{close[0]}' (cells with other tags are ignored by the converter)",
                )
            )
    for number, tags in nb.multi_tagged:
        out.append(
            Violation(
                f"cell {number} [{'/'.join(tags)}]",
                f"one cell carries several contract tags ({', '.join(tags)})",
                "split it into one cell per tag; only the first tag was read",
            )
        )
    present = {c.tag for c in nb.cells}
    for tag in REQUIRED_TAGS:
        if tag not in present:
            out.append(
                Violation(
                    "notebook",
                    f"no code cell is tagged '{tag}'",
                    f"add a code cell with the tag '{tag}' ({_what(tag)})",
                )
            )
    return out


def _what(tag: str) -> str:
    if tag == "config":
        return f"{CONFIG_NAME} = {{'{ROUNDS_KEY}': 3, ...}}"
    return "; ".join(f.signature for f in FUNCTIONS if f.tag == tag) or "see notebook/template.ipynb"


def _requirements(cell: TaggedCell) -> list[Violation]:
    out: list[Violation] = []
    for line in requirement_lines(cell.source):
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            out.append(
                Violation(
                    cell.label,
                    f"'{line}' is not a pip requirement ({err})",
                    "write one requirement per line, e.g. 'numpy>=1.26'",
                )
            )
            continue
        if req.name.lower() == "flwr" and str(req) != FLWR_REQUIREMENT:
            out.append(
                Violation(
                    cell.label,
                    f"'{line}': the toolkit provides Flower itself ({FLWR_REQUIREMENT})",
                    "remove the flwr line; every component must run the same Flower version",
                )
            )
    return out


def _parse(cell: TaggedCell) -> tuple[ast.Module | None, list[Violation]]:
    """Parse a code cell; report IPython magics and shell lines, then syntax errors."""
    out: list[Violation] = []
    for lineno, line in enumerate(cell.source.splitlines(), start=1):
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            kind = "a shell line" if stripped.startswith("!") else "an IPython magic"
            out.append(
                Violation(
                    cell.label,
                    f"line {lineno} is {kind} ('{stripped[:40]}'), which plain Python in the app cannot run",
                    "move it to an untagged cell, or write it as Python "
                    "(pip requirements go in the 'requirements' cell)",
                )
            )
    if out:
        return None, out
    try:
        return ast.parse(cell.source, filename=cell.label), []
    except SyntaxError as err:
        text = (err.text or "").strip()
        return None, [
            Violation(
                cell.label,
                f"syntax error at line {err.lineno}: {err.msg}" + (f" ('{text[:60]}')" if text else ""),
                "fix the line so the cell runs in Jupyter",
            )
        ]


def _config(nb: Notebook, trees: dict[int, ast.Module]) -> list[Violation]:
    cells = nb.tagged("config")
    out: list[Violation] = []
    if len(cells) > 1:
        out.append(
            Violation(
                cells[1].label,
                f"a second 'config' cell (the first is cell {cells[0].number})",
                f"keep one {CONFIG_NAME} in one 'config' cell",
            )
        )
    for cell in cells[:1]:
        if (tree := trees.get(cell.number)) is not None:
            out += [Violation(cell.label, problem, fix) for problem, fix in config_cell_problems(tree)]
    return out


def _functions(nb: Notebook, trees: dict[int, ast.Module]) -> list[Violation]:
    defined: dict[str, list[tuple[TaggedCell, ast.FunctionDef]]] = defaultdict(list)
    for cell in nb.code_cells:
        for node in trees.get(cell.number, ast.Module(body=[])).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defined[node.name].append((cell, node))
    out: list[Violation] = []
    for fn in FUNCTIONS:
        cells = nb.tagged(fn.tag)
        in_tag = [(c, n) for c, n in defined.get(fn.name, []) if c.tag == fn.tag]
        elsewhere = [c for c, _ in defined.get(fn.name, []) if c.tag != fn.tag]
        if not in_tag:
            if not fn.required and not cells:
                continue
            if any(c.number not in trees for c in cells):
                continue  # the cell did not parse; that is already reported
            if not cells and fn.tag in REQUIRED_TAGS:
                continue  # already reported as a missing tag
            where = cells[0].label if cells else "notebook"
            hint = f" (it is defined in {elsewhere[0].label}; move it)" if elsewhere else ""
            out.append(
                Violation(where, f"the '{fn.tag}' cells define no function '{fn.name}'{hint}", f"write {fn.signature}")
            )
            continue
        cell, node = in_tag[-1]
        if isinstance(node, ast.AsyncFunctionDef):
            out.append(Violation(cell.label, f"'{fn.name}' is async", f"write a plain function: {fn.signature}"))
            continue
        args = node.args
        positional = args.posonlyargs + args.args
        required = len(positional) - len(args.defaults)
        takes = len(positional) if args.vararg is None else float("inf")
        if not (required <= len(fn.params) <= takes):
            have = ", ".join(a.arg for a in positional)
            out.append(
                Violation(
                    cell.label,
                    f"line {node.lineno}: '{fn.name}({have})' takes {len(positional)} argument(s); "
                    f"the toolkit passes {len(fn.params)}",
                    f"write {fn.signature}",
                )
            )
    return out


def _duplicates(nb: Notebook, trees: dict[int, ast.Module]) -> list[Violation]:
    first: dict[str, TaggedCell] = {}
    out: list[Violation] = []
    for cell in nb.code_cells:
        for name, lineno in _top_level_names(trees.get(cell.number)):
            if name in first and first[name].number != cell.number:
                out.append(
                    Violation(
                        cell.label,
                        f"line {lineno}: '{name}' is already defined in {first[name].label}",
                        "define each name once across the tagged cells "
                        "(the app is one module, the later one would silently win)",
                    )
                )
            first.setdefault(name, cell)
    return out


def _top_level_names(tree: ast.Module | None) -> list[tuple[str, int]]:
    if tree is None:
        return []
    names: list[tuple[str, int]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.name, node.lineno))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [(t.id, node.lineno) for t in targets if isinstance(t, ast.Name)]
    return names
