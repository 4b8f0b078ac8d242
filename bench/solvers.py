"""Whole regularisation paths of the probe heads' linear models, solved at once for inner CV.

Choosing a head's regularisation by inner cross-validation fits one model per (strength, fold):
7 Cs x 5 folds for the logistic head, 17 alphas x 5 folds for ridge, in every setting of a
probe grid. One scikit-learn fit on a hundred rows costs milliseconds of argument checking and
optimiser start-up for microseconds of arithmetic, so the grid's heads cost more than the
encoder's embedding pass. Here one fold's training matrix is factorised once (a thin SVD) and
every strength is solved from it:

* ridge: in closed form, the same solution as ``sklearn.linear_model.Ridge`` (centred, intercept
  unpenalised) to rounding;
* binary logistic regression: Newton's method on all Cs together, in the span of the training
  rows (where the L2-penalised optimum lies), run to convergence. scikit-learn's L-BFGS stops
  at ``tol=1e-4``: close to this optimum for small C, visibly short of it for C >= 10.

* the Cox model of lifelines' ``CoxPHFitter(penalizer)``: Newton's method on Efron's partial
  likelihood, vectorised over event times (lifelines spends most of a fit summarising the
  training table, which a probe never reads).

The ridge head fits its final model with scikit-learn at the chosen alpha; the logistic head
uses the exact binary solution for its final two-class model too, so that the model it keeps
is the one its inner CV scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


def _row_space(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, V) with ``z = F @ V.T``: coordinates of the rows in an orthonormal basis V of their span.

    A model ``z @ w`` with an L2 penalty on w has its optimum in that span, so it can be solved
    with min(n, d) unknowns instead of d (a 387-feature sequence probe on 100 subjects: 100).
    """
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    return u * s, vt.T


def ridge_path(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray,
               alphas: np.ndarray) -> np.ndarray:
    """(len(alphas), n_test) predictions of ridge regression with an unpenalised intercept.

    The model ``sklearn.linear_model.Ridge(alpha)`` fits: centre z and y on the training rows,
    minimise ``||zc w - yc||^2 + alpha ||w||^2``, intercept ``mean(y) - mean(z) w``.
    """
    mean_z, mean_y = z_train.mean(axis=0), y_train.mean()
    f, v = _row_space(z_train - mean_z)
    u_s = np.linalg.norm(f, axis=0)                           # singular values
    uty = (f / np.where(u_s > 0, u_s, 1.0)).T @ (y_train - mean_y)
    shrink = u_s[None, :] / (u_s[None, :] ** 2 + np.asarray(alphas, float)[:, None])
    coef = (shrink * uty[None, :]) @ v.T                      # (n_alphas, d)
    return coef @ (np.asarray(z_test, float) - mean_z).T + mean_y


def binary_logistic_path(z_train: np.ndarray, positive: np.ndarray, Cs, *, tol: float = 1e-10,
                         max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2-penalised binary logistic regression for every C: (coef (m, d), intercept (m,)).

    Minimises ``C * sum_i log(1 + exp(-s_i (z_i w + b))) + ||w||^2 / 2`` (s_i = +-1), the
    objective of ``sklearn.linear_model.LogisticRegression(C=C)`` for two classes. Damped Newton
    steps (backtracking on the objective) from w = 0, all Cs in one batch, until the Newton
    decrement is below ``tol`` relative to the objective.
    """
    f, v = _row_space(np.asarray(z_train, float))
    y = np.asarray(positive, float)
    n, r = f.shape
    a = np.hstack([f, np.ones((n, 1))])                       # coordinates + intercept column
    penalised = np.r_[np.ones(r), 0.0]
    c = np.asarray(Cs, float)[:, None]
    theta = np.zeros((len(c), r + 1))

    def objective(th: np.ndarray) -> np.ndarray:
        raw = th @ a.T
        return c[:, 0] * (np.logaddexp(0.0, raw) - y * raw).sum(axis=1) + 0.5 * (penalised * th ** 2).sum(axis=1)

    value = objective(theta)
    for _ in range(max_iter):
        p = expit(theta @ a.T)                                # (m, n)
        grad = c * ((p - y) @ a) + penalised * theta
        hess = (a.T[None] * (c * p * (1 - p))[:, None, :]) @ a
        hess[:, np.arange(r), np.arange(r)] += 1.0
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        decrement = (grad * step).sum(axis=1)
        done = decrement <= tol * (1.0 + np.abs(value))
        if done.all():
            break
        t = np.where(done, 0.0, 1.0)                          # converged Cs stay where they are
        for _ in range(60):                                   # Armijo backtracking, per C
            candidate = theta - t[:, None] * step
            trial = objective(candidate)
            ok = done | (trial <= value - 1e-4 * t * decrement)
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        theta, value = candidate, trial
    return theta[:, :r] @ v.T, theta[:, r]


@dataclass(frozen=True)
class _Efron:
    """The risk-set layout of a survival sample for Efron's partial likelihood (rows latest exit first)."""

    x: np.ndarray           # (n, d) rows, latest exit first
    e: np.ndarray           # (n,) event indicator
    x_ev: np.ndarray        # the event rows
    group: np.ndarray       # tie group (event time) of each event row
    n_groups: int
    last: np.ndarray        # per group: the last row at risk at its time
    frac: np.ndarray        # Efron's l / m of each event row

    @classmethod
    def of(cls, z: np.ndarray, time: np.ndarray, event: np.ndarray) -> "_Efron":
        order = np.argsort(-np.asarray(time, float), kind="stable")         # latest exit first
        x, t, e = z[order], np.asarray(time, float)[order], np.asarray(event, float)[order] > 0
        event_times, group = np.unique(t[e], return_inverse=True)           # group of each event row
        # rows at risk at an event time: every row up to the last one leaving at that time
        last = np.searchsorted(-t, -event_times, side="right") - 1
        tie_size = np.bincount(group)
        rank = np.empty(len(group), int)                                    # 0..m-1 within each tie group
        for g in range(len(event_times)):
            rank[group == g] = np.arange(tie_size[g])
        return cls(x, e, x[e], group, len(event_times), last, rank / tie_size[group])

    def terms(self, beta: np.ndarray, derivatives: bool):
        """Efron log partial likelihood, its gradient and its information matrix (minus the Hessian).

        Per event row i of a tie group g: phi_i = R0(g) - frac_i D0(g), with R the sums over
        the rows at risk and D over the group's events. The information's sum over groups of
        the at-risk second moments, weighted by sum_i 1/phi_i, is one x^T diag(.) x: each row
        collects the weights of every group it is at risk in (a suffix sum).
        """
        x, e, x_ev, group, last, frac = self.x, self.e, self.x_ev, self.group, self.last, self.frac
        n, d = x.shape
        w = np.exp(x @ beta)
        w_ev = w[e]
        r0, r1 = np.cumsum(w), np.cumsum(w[:, None] * x, axis=0)
        d0 = np.bincount(group, w_ev)
        d1 = np.zeros((self.n_groups, d))
        np.add.at(d1, group, w_ev[:, None] * x_ev)
        phi = r0[last[group]] - frac * d0[group]
        ll = float((x_ev @ beta).sum() - np.log(phi).sum())
        if not derivatives:
            return ll, None, None
        mean = (r1[last[group]] - frac[:, None] * d1[group]) / phi[:, None]
        grad = x_ev.sum(axis=0) - mean.sum(axis=0)
        at_last = np.zeros(n)
        np.add.at(at_last, last, np.bincount(group, 1.0 / phi))
        risk_weight = np.cumsum(at_last[::-1])[::-1]                     # sum over groups row j is at risk in
        tie_weight = np.bincount(group, frac / phi)[group]
        info = ((w * risk_weight)[:, None] * x).T @ x - ((w_ev * tie_weight)[:, None] * x_ev).T @ x_ev - mean.T @ mean
        return ll, grad, info


def cox_efron(z: np.ndarray, time: np.ndarray, event: np.ndarray, penalizer: float, *, tol: float = 1e-10,
              max_iter: int = 50) -> np.ndarray | None:
    """Coefficients of the L2-penalised Cox model that lifelines' ``CoxPHFitter(penalizer)`` fits.

    Same model and optimum: Efron's partial likelihood for tied event times, on the columns
    standardised by their mean and sample standard deviation (ddof 1), with the penalty
    ``n * penalizer * ||beta||^2 / 2`` on those standardised coefficients. Returns ``beta`` on the
    standardised scale (the log partial hazard of x is ``((x - mean) / std) @ beta``), or None
    when Newton's method does not converge. lifelines itself spends most of a fit on summaries
    of the training table the probe never reads; a probe grid fits this model about 80 times.
    """
    z = np.asarray(z, float)
    n, d = z.shape
    efron = _Efron.of(z, time, event)
    penalty = n * penalizer
    beta = np.zeros(d)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        try:
            ll, grad, info = efron.terms(beta, True)
            value = -ll + 0.5 * penalty * beta @ beta
            for _ in range(max_iter):
                g = -grad + penalty * beta
                h = info + penalty * np.eye(d)
                step = np.linalg.solve(h, g)
                decrement = g @ step
                if decrement <= tol * (1.0 + abs(value)):
                    return beta
                step_size = 1.0                                         # Armijo backtracking
                while step_size > 1e-10:
                    candidate = beta - step_size * step
                    trial = -efron.terms(candidate, False)[0] + 0.5 * penalty * candidate @ candidate
                    if trial <= value - 1e-4 * step_size * decrement:
                        break
                    step_size /= 2
                beta = candidate
                ll, grad, info = efron.terms(beta, True)
                value = -ll + 0.5 * penalty * beta @ beta
        except (FloatingPointError, np.linalg.LinAlgError):
            return None
    return None
    return None
