"""sdeflow_bench: benchmarks against peer libraries, the engine behind ``sdeflow bench``.

``sdeflow bench [--quick] [--out DIR]`` (registered through the entry-point group
``sdeflow.plugins``, see :data:`SUBCOMMANDS`), or ``python -m sdeflow_bench``. Needs the
``[bench]`` extra (torchdiffeq, torchsde, matplotlib, tqdm); a missing peer is skipped with a
note.

Everything is measured in one process, on the same problems, with the same callables handed to
every library. Because this kind of machine drifts by +-30% (and more when it is shared), timed
runs are *interleaved*: round after round every variant of a case is run once (A B C, C B A,
then seeded random orders), and the median over rounds is reported. Each
timed measurement repeats a call until it lasts at least ``min_time`` seconds; measurements
shorter than ``CHEAP`` get a few extra rounds. Torch runs on one intra-op thread by default
(``Config.threads``).

Sections:

* ``handloop`` -- the performance target of issue 2: per-step cost of sdeflow's fixed-step loop
  against a minimal hand-written torch loop of the same method (euler and rk4 on a 4-d linear ODE at
  batch 1 and 10,000; Euler--Maruyama on OU, batch 10,000 x 2, at 128 and 1024 steps). The fields
  take a 0-dim time tensor, so the hand loop indexes a precomputed time grid (``t = tg[i]``).
  torchdiffeq, torchode and torchsde run the same cases.
* ``ode_fixed`` -- error against wall time and against NFE of the fixed-step ODE solvers (sdeflow,
  torchdiffeq, torchode) on a linear 4x4 ODE (float64, batch 1 and 10,000), Van der Pol (mu = 1, 5),
  Lotka--Volterra and a curved MLP neural ODE (float32, batch 256 and 4096).
* ``ode_adaptive`` -- the same problems with the embedded pairs (sdeflow bosh3/dopri5/tsit5,
  torchdiffeq, torchode, scipy's ``solve_ivp``) at matched tolerances, plus every peer at its own
  defaults. Runs only when sdeflow registers ``dopri5``; skipped with a note otherwise.
* ``sde`` -- strong and weak error against wall time and NFE (batch 10,000): OU and GBM with
  Euler--Maruyama against torchsde's Euler with its ``BrownianInterval``; Milstein (GBM, Ito) and
  stochastic Heun (GBM, Stratonovich) against torchsde's; sra1 against torchsde's srk on an
  additive-noise SDE with a nonlinear drift; torchsde at its defaults (srk, dt = 1e-3) on OU and
  GBM. SDE states are float32.

Errors. ODE: relative RMS error of the final state against the exact solution (linear) or
scipy's DOP853 at rtol = atol = 1e-12 in float64. SDE: strong error ``E|X_T - X^h_T|`` (Euclidean
norm over the state) on the same Brownian path as the reference: exact for GBM (a function of
``W_T``); for OU the exact transition with the stochastic integral expanded on the finest grid of
the path (:func:`.problems.ou_exact_path`, error ~1e-8); for the additive SDE the library's own
strong-order-1.5 scheme (sdeflow sra1 / torchsde srk) on a 16x finer grid of the same path; weak
error ``|E phi(X^h_T) - E phi(X_T)|`` for ``phi(x) = |x|^2 / d``, estimated
on the same paths (a coupled estimator: its Monte Carlo noise is the spread of the difference, far
below that of either term). Errors are measured in untimed accuracy passes that share a path
object (sdeflow: ``BrownianPath``, in batch chunks; torchsde: one ``BrownianInterval``); the timed
runs call each library the way a user would (sdeflow ``seed=``, torchsde ``sdeint`` with its default
``BrownianInterval``). The error of a scheme at a step count is a property of the scheme, so it is
attributed to the timed run of the same library, method and step count.

A peer that is missing or fails is skipped with a note, never an error. ``torchode`` is imported
lazily (it is not a dependency).

Modules: :mod:`.config` (presets), :mod:`.timing`, :mod:`.peers`, :mod:`.problems`,
:mod:`.records`, the sections :mod:`.handloop`, :mod:`.ode`, :mod:`.sde`, then :mod:`.ratios`,
:mod:`.report`, :mod:`.plots`, :mod:`.output` (the output folder), :mod:`.suite` (a whole run)
and :mod:`.cli`.
"""

from __future__ import annotations

from .cli import HELP, add_arguments, build_parser, main, run
from .config import Config
from .output import OutputFolder
from .peers import Counter, peer_versions
from .problems import CurvedMLP, linear_field, linear_matrix, ou_exact_path
from .ratios import equal_error_ratio
from .records import Notes, Record
from .suite import load_result, run_suite, write_json
from .timing import Timed, interleave

SUBCOMMANDS = {"bench": (HELP, add_arguments, run)}
"""The subcommands this plugin adds to ``sdeflow``: name -> (help, add_arguments, run)."""

__all__ = [
    "SUBCOMMANDS", "Config", "run_suite", "load_result", "write_json", "main", "run",
    "add_arguments", "build_parser", "OutputFolder", "Record", "Notes", "Timed", "interleave",
    "equal_error_ratio", "peer_versions", "Counter", "linear_field", "linear_matrix",
    "CurvedMLP", "ou_exact_path",
]
