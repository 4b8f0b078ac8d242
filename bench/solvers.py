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

The ridge head fits its final model with scikit-learn at the chosen alpha; the logistic head
uses the exact binary solution for its final two-class model too, so that the model it keeps
is the one its inner CV scored.
"""

from __future__ import annotations

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
