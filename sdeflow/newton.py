"""Batched Jacobians and simplified Newton for the implicit solvers (docs/math.md §13.3).

A state ``x`` is split into ``B`` independent systems ("paths") of size ``D``:

* ``x.shape == ()``: one system, ``D = 1``; ``x.shape == (d,)``: one system, ``D = d``;
* ``x.dim() >= 2``: ``B = x.shape[0]`` systems of ``D = prod(x.shape[1:])`` (the paths of the
  adaptive error norm).

Every linear algebra call works on ``B`` matrices ``D x D`` at once (``torch.linalg.lu_factor``
/ ``lu_solve`` on a ``(B, D, D)`` stack), never on one ``BD x BD`` system.

:class:`Jacobian` evaluates ``J = du/dx`` per path: the user's ``ODE(..., jacobian=J)`` when
given (its shape checked on the first call), else autograd: for ``D <= 16`` one reverse pass per
state component of the field summed over the paths (exact because the paths are independent,
and fewer kernel launches than vmap), for larger systems ``torch.func.jacrev`` vectorised over
the paths with ``torch.func.vmap`` (the summed form if vmap fails). ``du/dt`` (Rosenbrock
methods) comes from forward-mode autograd, else a forward difference.

:class:`Newton` holds the Jacobian and the LU factors of ``M = I - c J`` between steps and
solves ``z = r + c u(t, z)`` by simplified Newton with the convergence-rate test of Hairer &
Wanner (II, §IV.8): with ``theta_k = ||dz_k|| / ||dz_{k-1}||`` the iteration stops when
``theta_k / (1 - theta_k) ||dz_k|| <= kappa`` and fails when ``theta_k >= 1`` or when the
predicted error after the remaining iterations still exceeds ``kappa``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

#: systems up to this size get their Jacobian from one reverse pass per component (fewer
#: kernel launches than vmap(jacrev) there); larger ones from vmap(jacrev)
SUMMED_MAX_D = 16


def layout(x: Tensor) -> tuple[int, int]:
    """``(B, D)``: the number of independent systems and their size (module docstring)."""
    if x.dim() <= 1:
        return 1, max(1, x.numel())
    return x.shape[0], x[0].numel()


class Jacobian:
    """``J(t, x) -> (B, D, D)`` per path (plus ``du/dt`` on request), counted.

    Args:
        field: the raw vector field ``u(t, x)`` (not the counted one: Jacobian evaluations are
            counted in ``njac``, not in ``nfe``).
        user: ``ODE.jacobian`` or ``None``.
        name: the argument named in error messages.
    """

    def __init__(self, field: Field, user: Callable[[Tensor, Tensor], Tensor] | None,
                 name: str = "jacobian") -> None:
        self.field, self.user, self.name = field, user, name
        self.checked = False
        self.use_vmap = True
        self.count = 0
        self.nfe = 0  # field evaluations outside nfe (finite differences, a dependence probe)

    def __call__(self, t: Tensor, x: Tensor, with_t: bool = False
                 ) -> tuple[Tensor, Tensor | None]:
        """``(J, u_t)``: ``J`` of shape ``(B, D, D)``; ``u_t = du/dt`` of shape ``(B, D)`` when
        ``with_t`` (else ``None``)."""
        self.count += 1
        b, d = layout(x)
        xd = x.detach()
        if self.user is not None:
            jac = self._user(t, xd, b, d)
        else:
            try:
                jac = self._autograd(t, xd, b, d)
            except (RuntimeError, TypeError, ValueError, NotImplementedError) as e:
                if isinstance(e, ValueError) and str(e).startswith(self.name):
                    raise
                raise ValueError(
                    f"{self.name}: the vector field is not differentiable by autograd "
                    f"(the Jacobian failed at t={float(t):.6g}: {type(e).__name__}: {e}); "
                    f"pass ODE(..., jacobian=J) with J(t, x) returning du/dx, or use an "
                    f"explicit solver") from e
        return jac, (self._time(t, xd, b, d) if with_t else None)

    # ------------------------------------------------------------------------------ sources
    def _user(self, t: Tensor, x: Tensor, b: int, d: int) -> Tensor:
        jac = self.user(t, x)  # type: ignore[misc]
        want = ((d, d) if x.dim() <= 1 else (b, d, d))
        if not self.checked:
            if not isinstance(jac, Tensor):
                raise TypeError(f"{self.name}: expected a tensor from J(t, x), got "
                                f"{type(jac).__name__}")
            if tuple(jac.shape) != want:
                raise ValueError(
                    f"{self.name}: J(t, x) returned shape {tuple(jac.shape)}, expected {want} "
                    f"for a state of shape {tuple(x.shape)} (at t={float(t):.6g})")
            if jac.dtype != x.dtype or jac.device != x.device:
                raise ValueError(f"{self.name}: J(t, x) returned {jac.dtype} on {jac.device}, "
                                 f"expected the state's {x.dtype} on {x.device}")
            self.checked = True
        return jac.reshape(b, d, d)

    def _time(self, t: Tensor, x: Tensor, b: int, d: int) -> Tensor:
        """``du/dt`` per path: forward-mode autograd, else a forward difference."""
        try:
            import torch.autograd.forward_ad as fwad  # noqa: PLC0415

            with torch.no_grad(), fwad.dual_level():
                td = fwad.make_dual(t.detach(), torch.ones_like(t))
                tangent = fwad.unpack_dual(self.field(td, x)).tangent
            if tangent is None:
                return torch.zeros(b, d, dtype=x.dtype, device=x.device)
            return tangent.reshape(b, d)
        except (RuntimeError, TypeError, NotImplementedError):
            pass
        eps = torch.finfo(x.dtype).eps
        dt = math.sqrt(eps) * max(1.0, abs(float(t)))
        self.nfe += 2
        with torch.no_grad():
            u0 = self.field(t, x)
            u1 = self.field(t + dt, x)
        return ((u1 - u0) / dt).reshape(b, d)

    def _autograd(self, t: Tensor, x: Tensor, b: int, d: int) -> Tensor:
        """Small systems: one reverse pass per component of the summed field; larger ones:
        ``vmap(jacrev)`` over the paths (falling back to the summed form if vmap fails)."""
        if d <= SUMMED_MAX_D or not self.use_vmap:
            return self._summed(t, x, b, d)
        u = self.field
        if x.dim() <= 1:
            shape = x.shape

            def one(xf: Tensor) -> Tensor:
                return u(t, xf.reshape(shape)).reshape(-1)

            return torch.func.jacrev(one)(x.reshape(-1)).reshape(1, d, d)
        rest = x.shape[1:]

        def row(xr: Tensor) -> Tensor:
            return u(t, xr.reshape(1, *rest)).reshape(d)

        try:
            return torch.func.vmap(torch.func.jacrev(row))(x.reshape(b, d))
        except (RuntimeError, TypeError, NotImplementedError):
            self.use_vmap = False  # e.g. data-dependent control flow: the summed field
        return self._summed(t, x, b, d)

    def _summed(self, t: Tensor, x: Tensor, b: int, d: int) -> Tensor:
        """``J[p, i, :] = d(sum_p u[p, i]) / dx[p, :]`` (paths independent): D reverse passes."""
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            out = self.field(t.detach(), xr).reshape(b, d)
            if not out.requires_grad:
                # no graph from x: either u does not depend on x (J = 0), or it left autograd
                # (NumPy, detach): a perturbed state tells them apart
                self.nfe += 1
                with torch.no_grad():
                    moved = self.field(t.detach(), x + (x.abs() + 1.0) * 1e-3).reshape(b, d)
                if not torch.equal(moved, out.detach()):
                    raise RuntimeError("the field's output depends on x but carries no "
                                       "autograd graph (computed outside torch, or detached)")
                return torch.zeros(b, d, d, dtype=x.dtype, device=x.device)
            rows = []
            for i in range(d):
                gx, = torch.autograd.grad(out[:, i].sum(), (xr,), retain_graph=i < d - 1,
                                          allow_unused=True)
                rows.append(torch.zeros(b, d, dtype=x.dtype, device=x.device) if gx is None
                            else gx.reshape(b, d))
        return torch.stack(rows, dim=1)


class Newton:
    """Jacobian and LU reuse plus the simplified Newton iteration, for one solve.

    Counters (merged into ``Solution.stats`` by the solver): ``njac`` Jacobians, ``nlu`` LU
    factorisations, ``nnewton`` Newton iterations, ``nnewton_fail`` failed iterations.

    Args:
        jac: the :class:`Jacobian` source.
        kappa: stop when the predicted remaining error is below ``kappa`` (in units of the
            tolerance-scaled norm).
        max_iter: iterations per stage before it counts as a failure.
    """

    def __init__(self, jac: Jacobian, kappa: float = 0.03, max_iter: int = 10) -> None:
        self.jac_source, self.kappa, self.max_iter = jac, kappa, max_iter
        self.reset()

    def reset(self) -> None:
        self.J: Tensor | None = None
        self.J_t: Tensor | None = None
        self.J_key: tuple[float, Any] | None = None
        self.fresh = False  # J was evaluated at the current step's start
        self.stale = True   # re-evaluate J at the next step's start
        self.lu: tuple[Tensor, Tensor] | None = None
        self.lu_c: float | None = None
        self.eta = 1.0
        self.nlu = self.nnewton = self.nfail = 0
        self.jac_source.count = self.jac_source.nfe = 0
        self.eye: Tensor | None = None

    def stats(self) -> dict[str, int]:
        out = {"njac": self.jac_source.count, "nlu": self.nlu, "nnewton": self.nnewton,
               "nnewton_fail": self.nfail}
        if self.jac_source.nfe:
            out["nfe_jac"] = self.jac_source.nfe  # evaluations spent on derivatives
        return out

    # --------------------------------------------------------------------------- Jacobian
    def jacobian(self, t: Tensor, x: Tensor, with_t: bool = False) -> Tensor:
        """Evaluate and keep ``J`` at ``(t, x)`` (reused for a retry from the same point)."""
        key = (float(t), x)
        if self.J is not None and self.J_key is not None and self.J_key[0] == key[0] and \
                self.J_key[1] is x and (self.J_t is not None or not with_t):
            self.fresh = True
            return self.J
        self.J, self.J_t = self.jac_source(t, x, with_t)
        self.J_key = key
        self.fresh, self.stale = True, False
        self.lu = None
        return self.J

    def prepare(self, t: Tensor, x: Tensor) -> None:
        """At a step's start: a new Jacobian when the last one was judged stale."""
        self.fresh = False
        if self.J is None or self.stale:
            self.jacobian(t, x)

    def factor(self, c: float) -> tuple[Tensor, Tensor]:
        """LU factors of ``M = I - c J`` (``B`` matrices at once), reused while ``c`` holds."""
        if self.lu is not None and self.lu_c == c:
            return self.lu
        J = self.J
        if J is None:
            raise RuntimeError("Newton.factor: no Jacobian yet (call prepare or jacobian)")
        if self.eye is None or self.eye.shape != J.shape[-2:] or self.eye.dtype != J.dtype:
            self.eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
        M = torch.add(self.eye, J, alpha=-c)
        self.lu = torch.linalg.lu_factor(M)
        self.lu_c = c
        self.nlu += 1
        return self.lu

    def solve(self, rhs: Tensor) -> Tensor:
        """``M^{-1} rhs`` for ``rhs`` of shape ``(B, D)``."""
        lu, piv = self.lu  # type: ignore[misc]
        return torch.linalg.lu_solve(lu, piv, rhs.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------------------ Newton
    def iterate(self, g: Callable[[Tensor], Tensor], z: Tensor, c: float, r: Tensor,
                scale: Tensor) -> tuple[Tensor, bool, float, Tensor | None]:
        """Solve ``z = r + c g(z)`` from the guess ``z``.

        Args:
            g: ``z -> u(t_i, z)`` (state-shaped).
            z, r: guess and constant part (state-shaped).
            c: ``h * gamma``.
            scale: ``atol + rtol |x|`` (state-shaped): the norm is the per-path RMS of
                ``dz / scale``, maximised over the paths.

        Returns:
            ``(z, converged, last increment norm, g(z_last))``.
        """
        b, d = layout(z)
        shape = z.shape
        self.factor(c)
        prev = math.inf
        eta = max(self.eta, 1e-16) ** 0.8
        kappa = self.kappa
        inv = 1.0 / scale.reshape(b, d)
        for k in range(self.max_iter):
            gz = g(z)
            self.nnewton += 1
            res = (r - z).add_(gz, alpha=c)
            dz = self.solve(res.reshape(b, d))
            n = float(((dz.detach() * inv) ** 2).mean(-1).amax().sqrt())
            z = z + dz.reshape(shape)
            if not math.isfinite(n):
                self.nfail += 1
                return z, False, n, None
            if k > 0:
                theta = n / prev
                if theta >= 0.99:
                    self.nfail += 1
                    return z, False, n, None
                eta = theta / (1.0 - theta)
                if theta ** (self.max_iter - 1 - k) / (1.0 - theta) * n > kappa:
                    self.nfail += 1
                    return z, False, n, None
                self.theta = max(self.theta, theta)
            if eta * n <= kappa or n <= 1e-14:
                self.eta = eta
                return z, True, n, gz
            prev = n
        self.nfail += 1
        return z, False, prev, None

    theta = 0.0
