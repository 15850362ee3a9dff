"""Embedded Runge--Kutta pairs for adaptive step-size control (docs/math.md §3.3, §4.1), as data.

Each pair is a :class:`~sdeflow.solvers.rk.ButcherTableau` with

* ``b``: weights of the propagated (higher-order) solution, ``x_new = x + h sum_i b_i k_i``;
* ``b_err = b - b_hat``: ``err = h sum_i b_err_i k_i`` estimates the local error of the embedded
  lower-order solution (local extrapolation: the higher-order one is propagated);
* ``fsal``: the last stage is ``u(t + h, x_new)``, so an accepted step hands its last stage to the
  next one as its first (dopri5 and tsit5: 7 stages, 6 evaluations per step);
* ``dense``: the continuous extension ``x(t + theta h) ~ x + h sum_i b_i(theta) k_i`` with
  ``b_i(theta) = sum_q dense[i][q] theta^(q+1)``, used for output at times between steps.

==============  =======  ========  =====  =================================================
name            order    embedded  FSAL   dense output
==============  =======  ========  =====  =================================================
``heun_euler``  2        1         no     cubic Hermite (from x, x_new, u at both ends)
``bosh3``       3        2         yes    cubic Hermite, written as a ``dense`` table
``dopri5``      5        4         yes    Shampine's quartic (4th order), ``dense`` table
``tsit5``       5        4         yes    Tsitouras' quartic (4th order), ``dense`` table
==============  =======  ========  =====  =================================================

The one engine (:class:`~sdeflow.solvers.rk.RungeKutta`) runs all of them: fixed steps through
``build`` (only the stages the propagated solution needs), adaptive steps through
``embedded_step`` (driven by the one loop, :mod:`sdeflow.integrate`).

Sources: Bogacki & Shampine (1989); Dormand & Prince (1980) with Shampine's (1986) dense output
(the same polynomial as Hairer's DOPRI5 ``CONTD5``); Tsitouras (2011) with its interpolant.
"""

from __future__ import annotations

from .rk import ButcherTableau, RungeKutta

# --------------------------------------------------------------------------------- Heun-Euler 2(1)
HEUN_EULER = ButcherTableau(
    c=[0.0, 1.0],
    a=[[], [1.0]],
    b=[0.5, 0.5],
    order=2,
    b_err=[-0.5, 0.5],  # b - b_hat, b_hat = (1, 0): forward Euler
    embedded_order=1,
)

# ------------------------------------------------------------------------- Bogacki-Shampine 3(2)
# Cubic Hermite through (x, h u0) and (x_new, h u1), u1 = k4 (FSAL):
#   b_i(theta) = b_i (3 theta^2 - 2 theta^3) + [i = 1] (theta - 2 theta^2 + theta^3)
#                + [i = 4] (theta^3 - theta^2).
BOSH3 = ButcherTableau(
    c=[0.0, 0.5, 0.75, 1.0],
    a=[[], [0.5], [0.0, 0.75], [2 / 9, 1 / 3, 4 / 9]],
    b=[2 / 9, 1 / 3, 4 / 9, 0.0],
    order=3,
    b_err=[2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8],
    embedded_order=2,
    fsal=True,
    dense=[
        [1.0, -2.0 + 3 * 2 / 9, 1.0 - 2 * 2 / 9],
        [0.0, 3 * 1 / 3, -2 * 1 / 3],
        [0.0, 3 * 4 / 9, -2 * 4 / 9],
        [0.0, -1.0, 1.0],
    ],
)

# ----------------------------------------------------------------------------- Dormand-Prince 5(4)
_DP_B = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
# The embedded 4th-order weights of Dormand, Prince & Shampine (as torchdiffeq and diffrax), so
# that tolerances mean what they mean there. (Hairer's DOPRI5 and scipy's RK45 use
# 5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40, whose estimate is about
# 1.5 times larger: about 8% more steps at the same tolerance, and smaller errors.)
_DP_BHAT = [1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60]
DOPRI5 = ButcherTableau(
    c=[0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
    a=[
        [],
        [1 / 5],
        [3 / 40, 9 / 40],
        [44 / 45, -56 / 15, 32 / 9],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
        _DP_B[:6],
    ],
    b=_DP_B,
    order=5,
    b_err=[b - bh for b, bh in zip(_DP_B, _DP_BHAT)],
    embedded_order=4,
    fsal=True,
    # Shampine's quartic: the polynomial through x, x_new, the midpoint value
    # x + h sum_i c_mid_i k_i, and the slopes k1, k7, expanded in powers theta^1..theta^4
    # (identical to Hairer's CONTD5). Exact rationals.
    dense=[
        [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 131558114200 / 32700410799, -68118460800 / 10900136933,
         87487479700 / 32700410799],
        [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
        [0.0, 127303824393 / 49829197408, -318862633887 / 49829197408,
         701980252875 / 199316789632],
        [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ],
)

# ------------------------------------------------------------------------------- Tsitouras 5(4)
_TS_A = [
    [],
    [0.161],
    [-0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943,
     0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569],
    [2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
     -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
     4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077],
    [5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
     -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
     7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
     -0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635],
    [5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
     -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
     8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
     -0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835,
     -0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206],
    [0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
     0.01,
     0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
     1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
     -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
     2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841],
]
_TS_B = [*_TS_A[6], 0.0]
_TS_BHAT = [
    0.09468075576583945807478876255758922856117527357724631226139574065785592789071067303271,
    0.009183565540343253096776363936645313759813746240984095238905939532922955247253608687270,
    0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813,
    1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761,
    -2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702,
    1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089,
    1 / 66,
]
TSIT5 = ButcherTableau(
    c=[0.0, 0.161, 0.327, 0.9, 0.9800255409045096857298102862870245954942137979563024768854764293,
       1.0, 1.0],
    a=_TS_A,
    b=_TS_B,
    order=5,
    b_err=[b - bh for b, bh in zip(_TS_B, _TS_BHAT)],
    embedded_order=4,
    fsal=True,
    # Tsitouras' interpolant (the factored b_i(theta) of the paper, expanded).
    dense=[
        [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
        [0.0, 0.1317, -0.2234, 0.1017],
        [0.0, 3.930296236894751, -5.941033872131505, 2.490627285651253],
        [0.0, -12.411077166933676, 30.338188630282318, -16.548102889244902],
        [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
        [0.0, -27.896526289197286, 65.09189467479368, -34.87065786149661],
        [0.0, 1.5, -4.0, 2.5],
    ],
)


class EmbeddedRungeKutta(RungeKutta, register=False):
    """An explicit Runge--Kutta pair with an error estimate: an adaptive solver.

    Given without ``steps``/``dt``, ``solve`` runs it adaptively with the default tolerances
    (see ``docs/adaptive.md``). With ``steps`` or ``dt`` it is an ordinary fixed-step method of
    its ``order``.
    """


class HeunEuler(EmbeddedRungeKutta, name="heun_euler"):
    """Heun--Euler 2(1): Heun's method with forward Euler as the embedded estimate."""

    tableau = HEUN_EULER


class Bosh3(EmbeddedRungeKutta, name="bosh3"):
    """Bogacki--Shampine 3(2), FSAL (3 evaluations per accepted step), Hermite dense output."""

    tableau = BOSH3


class Dopri5(EmbeddedRungeKutta, name="dopri5"):
    """Dormand--Prince 5(4), FSAL (6 evaluations per step), 4th-order dense output."""

    tableau = DOPRI5


class Tsit5(EmbeddedRungeKutta, name="tsit5"):
    """Tsitouras 5(4), FSAL (6 evaluations per step), 4th-order dense output."""

    tableau = TSIT5


__all__ = [
    "EmbeddedRungeKutta", "HeunEuler", "Bosh3", "Dopri5", "Tsit5",
    "HEUN_EULER", "BOSH3", "DOPRI5", "TSIT5",
]
