"""``python -m sdeflow_bench``: the same as ``sdeflow bench``."""

from .cli import main

raise SystemExit(main())
