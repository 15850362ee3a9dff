"""Brownian motion: a stored path, a virtual tree, and the seeded noise of fixed-step solves.

* :class:`BrownianPath` -- exact at every time it was asked about, stores what it was asked.
* :class:`BrownianTree` -- W_t a pure function of (seed, t), bounded memory.
* :class:`SeededNoise` -- the increments behind ``solve(..., seed=)``.
* :func:`check_compatible` -- the checks a solve runs on ``brownian=``.

All three generate their numbers counter-based from (seed, ids, row), so rows ``a:b`` of the
batch (``batch_slice=slice(a, b)``, a and b multiples of :data:`BLOCK_ROWS` or b the full size)
equal those rows of the full object bit for bit.
"""

from ._common import check_compatible
from ._random import BLOCK_ROWS
from .noise import SeededNoise
from .path import BrownianPath
from .tree import BrownianTree

__all__ = ["BrownianPath", "BrownianTree", "SeededNoise", "check_compatible", "BLOCK_ROWS"]
