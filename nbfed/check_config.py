"""The notebook contract's rules for the 'config' cell: one literal CONFIG dict that Flower can
carry as its run config (flat keys of bool, int, float and str; nested dicts flatten to dotted keys)."""

from __future__ import annotations

import ast
import re
from typing import Any

from nbfed.contract import CONFIG_NAME, ROUNDS_KEY, TOOLKIT_KEY

# Run-config keys travel through `flwr run --run-config key=value`, so keep them simple.
CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
CONFIG_SCALARS = (bool, int, float, str)


def config_cell_problems(tree: ast.Module) -> list[tuple[str, str]]:
    """What is wrong with a parsed 'config' cell, as (problem, fix) pairs."""
    out: list[tuple[str, str]] = []
    assigns = [n for n in tree.body if isinstance(n, ast.Assign) and _assigns(n, CONFIG_NAME)]
    if not assigns:
        return [
            (
                f"no '{CONFIG_NAME} = {{...}}' assignment",
                f"write {CONFIG_NAME} = {{'{ROUNDS_KEY}': 3, 'local_epochs': 1}}",
            )
        ]
    others = [n for n in tree.body if not (isinstance(n, ast.Assign) and _assigns(n, CONFIG_NAME))]
    if others:
        out.append(
            (
                f"line {others[0].lineno}: the 'config' cell holds more than the {CONFIG_NAME} assignment",
                "move other code to a 'helpers' cell",
            )
        )
    try:
        value = ast.literal_eval(assigns[-1].value)
    except ValueError:
        node = _first_non_literal(assigns[-1].value)
        return [
            *out,
            (
                f"{CONFIG_NAME} is not a literal: '{ast.unparse(node)}' at line {node.lineno} "
                "is computed, not written out",
                f"write {CONFIG_NAME} with literal values only: numbers, strings, booleans and nested dicts; "
                "no names or calls",
            ),
        ]
    return out + config_problems(value)


def _first_non_literal(node: ast.expr) -> ast.expr:
    """The outermost sub-expression that `ast.literal_eval` refuses."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            try:
                ast.literal_eval(child)
            except ValueError:
                return (
                    _first_non_literal(child) if isinstance(child, (ast.Dict, ast.List, ast.Tuple, ast.Set)) else child
                )
    return node


def _assigns(node: ast.Assign, name: str) -> bool:
    return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)


def config_problems(value: Any, path: str = CONFIG_NAME) -> list[tuple[str, str]]:
    """Why `value` cannot be a Flower run config (flat keys of bool, int, float, str)."""
    if not isinstance(value, dict):
        return [(f"{path} is a {type(value).__name__}, not a dict", f"write {CONFIG_NAME} = {{...}}")]
    out: list[tuple[str, str]] = []
    if path == CONFIG_NAME:
        rounds = value.get(ROUNDS_KEY)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            out.append(
                (f"{CONFIG_NAME}['{ROUNDS_KEY}'] must be a positive int (found {rounds!r})", f"add '{ROUNDS_KEY}': 3")
            )
        if TOOLKIT_KEY in value:
            out.append((f"the key '{TOOLKIT_KEY}' is reserved for the toolkit's own settings", "rename the key"))
    for key, item in value.items():
        where = f"{path}['{key}']"
        if not isinstance(key, str) or not CONFIG_KEY.match(key):
            out.append((f"{path} key {key!r} is not a simple name", "use letters, digits, '_' and '-' only"))
        elif isinstance(item, dict):
            out += config_problems(item, where)
        elif not isinstance(item, CONFIG_SCALARS):
            out.append(
                (
                    f"{where} is a {type(item).__name__}; "
                    "run config values are numbers, strings, booleans or nested dicts",
                    "write a list as a comma-separated string and split it in your code; "
                    "write None as a string or leave the key out",
                )
            )
    return out
