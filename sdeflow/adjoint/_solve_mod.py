"""The module ``sdeflow.solve`` (the package re-exports a function of the same name)."""

import importlib

SOLVE = importlib.import_module("sdeflow.solve")
