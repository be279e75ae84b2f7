"""PCA baseline (sklearn): the linear autoencoder to beat at the same code size."""

from __future__ import annotations

import numpy as np

from adaptflow.methods.ae.base import FitContext, Options
from adaptflow.methods.ae.registry import AE_METHODS


@AE_METHODS.register("pca")
class PCABaseline:
    name = "pca"
    Config = Options
    is_torch = False

    def __init__(self, spec, options=None):
        from sklearn.decomposition import PCA

        self.spec = spec
        self.input_shape = tuple(spec.input_shape)
        self.pca = PCA(n_components=spec.code_size, svd_solver="randomized", random_state=0)

    def fit(self, x_train: np.ndarray, x_val: np.ndarray, ctx: FitContext) -> None:
        n_features = int(np.prod(self.input_shape))
        if self.pca.n_components > min(len(x_train), n_features):
            raise ValueError(
                f"pca: code_size {self.pca.n_components} exceeds min(n_train, features) = "
                f"{min(len(x_train), n_features)}; lower ae.code_size"
            )
        self.pca.set_params(random_state=ctx.seed)
        self.pca.fit(x_train.reshape(len(x_train), -1))
        return None

    def encode_np(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(x.reshape(len(x), -1)).astype(np.float32)

    def reconstruct_np(self, x: np.ndarray) -> np.ndarray:
        flat = self.pca.inverse_transform(self.encode_np(x))
        return np.clip(flat, 0, 1).astype(np.float32).reshape(len(x), *self.input_shape)
