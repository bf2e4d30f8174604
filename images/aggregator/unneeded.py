"""Print the names of torch's dependencies that the aggregator image drops (its Dockerfile).

sympy, mpmath and networkx: about 100 MB with their bytecode. torch imports them for
torch.compile/export, fx's symbolic shapes and, through torch._dynamo, an optimizer's first
step; the aggregator only builds the model and averages, saves and loads state dicts. Kept
when another installed package requires them (not just as an extra of it), or when the
notebook names them in its requirements (NBFED_KEEP: names, space-separated, from nbfed).
"""

import importlib.metadata
import os
import re

OPTIONAL = {"sympy", "mpmath", "networkx"}


def name(requirement: str) -> str:
    return re.split(r"[^A-Za-z0-9_.-]", requirement, maxsplit=1)[0].lower()


needed = {
    name(r)
    for d in importlib.metadata.distributions()
    if name(d.metadata["Name"]) not in OPTIONAL | {"torch"}
    for r in d.requires or ()
    if "extra ==" not in r
} & OPTIONAL
needed |= set(os.environ.get("NBFED_KEEP", "").split())
if "sympy" in needed:
    needed.add("mpmath")  # sympy's own dependency
print(*sorted(OPTIONAL - needed))
