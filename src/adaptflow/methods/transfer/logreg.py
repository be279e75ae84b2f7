"""Multinomial logistic regression on frozen features: the classical linear-probe baseline."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_logreg(
    f_train: np.ndarray, y_train: np.ndarray, *, C: float, seed: int, max_iter: int = 1000
) -> Pipeline:
    """Standardised features -> L2-regularised logistic regression (inverse strength C), one fit."""
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    )
    return model.fit(f_train, y_train)
