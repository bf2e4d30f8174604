"""Notebook Federator: a Jupyter notebook to a cross-silo Flower federation."""

__version__ = "0.1.0"
