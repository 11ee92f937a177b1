"""Certified Certain Uncertainty (Meinke & Hein, 2019): a classifier combined with Gaussian
mixture densities on inputs for the in- and the out-distribution,

    p(y|x) = (p(y|x, i) p(x|i) p(i) + (1/K) p(x|o) p(o)) / (p(x|i) p(i) + p(x|o) p(o)),

so that far from the in-distribution's mixture the prediction becomes uniform whatever the
network says. Each mixture: p(x|·) = Σ_k w_k exp(-‖W(x - m) - μ_k‖² / 2σ_k²) / σ_k^D, with W
the whitening of the in-distribution training images (eigenvalues floored at 1e-3 of the
largest), centres from k-means on whitened training images / pool images, equal priors
p(i) = p(o). The network outputs log p(y|x) (valid logits: MSP and eq. 115 read it as is).
Training: CE on in-distribution and λ · uniform CE on outliers (as OE) of the combined
prediction. The mixtures are fitted before the first epoch and then held fixed: trained jointly
by SGD at the schedule's learning rate 0.1 (Meinke & Hein train them jointly), their
log-densities, whose gradients grow with the input dimension (3,072), made the loss NaN within
three steps.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

CENTRES = 100
FIT_SAMPLES = 10_000


class InputDensities(keras.layers.Layer):
    """log p(x|i), log p(x|o) (up to a shared constant) of flattened images."""

    def __init__(self, dim: int, centres: int = CENTRES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim, self.centres = dim, centres
        self.shift = self.add_weight((dim,), initializer="zeros", trainable=False, name="shift")
        self.whitening = self.add_weight((dim, dim), initializer="identity", trainable=False,
                                         name="whitening")  # fmt: skip
        self.mixtures = {}
        for side in ("in", "out"):
            self.mixtures[side] = (
                self.add_weight((centres, dim), initializer="random_normal", trainable=False,
                                name=f"{side}_mu"),
                self.add_weight((centres,), initializer="zeros", trainable=False,
                                name=f"{side}_log_sigma"),
                self.add_weight((centres,), initializer="zeros", trainable=False,
                                name=f"{side}_logit_w"),
            )  # fmt: skip

    def whiten(self, flat: tf.Tensor) -> tf.Tensor:
        return tf.matmul(flat - self.shift, self.whitening)

    def call(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        z = self.whiten(tf.reshape(tf.cast(images, tf.float32), [-1, self.dim]))
        return tuple(self._log_density(z, *self.mixtures[side]) for side in ("in", "out"))

    def _log_density(self, z, mu, log_sigma, logit_w) -> tf.Tensor:
        squared = (tf.reduce_sum(z * z, -1, keepdims=True) - 2.0 * tf.matmul(z, mu, transpose_b=True)
                   + tf.reduce_sum(mu * mu, -1)[None])  # fmt: skip
        log_components = (tf.nn.log_softmax(logit_w)[None] - self.dim * log_sigma[None]
                          - tf.nn.relu(squared) / (2.0 * tf.exp(2.0 * log_sigma))[None])  # fmt: skip
        return tf.reduce_logsumexp(log_components, axis=-1)


class CCUNetwork(keras.Model):
    """Outputs log p(y|x) of the combined model (Meinke & Hein, eq. 2)."""

    def __init__(
        self, base: keras.Model, num_classes: int, centres: int = CENTRES, **kwargs
    ) -> None:
        super().__init__(name="ccu", **kwargs)
        self.base, self.num_classes = base, num_classes
        self.density = InputDensities(int(np.prod(base.inputs[0].shape[1:])), centres)

    def log_posteriors(self, images) -> tuple[tf.Tensor, tf.Tensor]:
        """(log p(i|x), log p(o|x)) with equal priors."""
        log_in, log_out = self.density(images)
        both = tf.stack([log_in, log_out], axis=-1)
        normaliser = tf.reduce_logsumexp(both, axis=-1)
        return log_in - normaliser, log_out - normaliser

    def call(self, images, training=False):
        log_classifier = tf.nn.log_softmax(
            tf.cast(self.base(images, training=training), tf.float32)
        )
        log_in, log_out = self.log_posteriors(images)
        uniform = -math.log(self.num_classes)
        return tf.reduce_logsumexp(
            tf.stack([log_classifier + log_in[:, None],
                      tf.broadcast_to((uniform + log_out)[:, None], tf.shape(log_classifier))]),
            axis=0,
        )  # fmt: skip


def wrap_ccu(base: keras.Model, num_classes: int, centres: int = CENTRES) -> CCUNetwork:
    network = CCUNetwork(base, num_classes, centres)
    network(
        tf.zeros([1, *base.inputs[0].shape[1:]])
    )  # builds every variable (weights load by order)
    return network


def _kmeans(points: np.ndarray, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and per-centre σ (root mean squared distance per dimension) of k-means."""
    from sklearn.cluster import KMeans

    fit = KMeans(centres, n_init=1, max_iter=50, random_state=seed).fit(points)
    squared = ((points - fit.cluster_centers_[fit.labels_]) ** 2).sum(-1)
    counts = np.bincount(fit.labels_, minlength=centres)
    mean_squared = np.bincount(fit.labels_, squared, minlength=centres) / np.maximum(counts, 1)
    floor = np.median(mean_squared[counts > 1]) if np.any(counts > 1) else 1.0
    sigma = np.sqrt(np.where(counts > 1, mean_squared, floor) / points.shape[1])
    return fit.cluster_centers_, sigma


def initialise_ccu(
    network: CCUNetwork, in_images: np.ndarray, outliers: np.ndarray, seed: int
) -> None:
    """Whitening from the in-distribution training images, mixtures by k-means (before the
    first epoch; a resumed run restores them with the weights)."""
    rng = np.random.default_rng(seed)
    take = rng.choice(len(in_images), min(FIT_SAMPLES, len(in_images)), replace=False)
    flat_in = in_images[take].reshape(len(take), -1).astype(np.float64) / 255.0
    flat_out = outliers[:FIT_SAMPLES].reshape(-1, flat_in.shape[1]).astype(np.float64) / 255.0
    mean = flat_in.mean(0)
    values, vectors = np.linalg.eigh(np.cov(flat_in - mean, rowvar=False))
    values = np.maximum(values, 1e-3 * values.max())
    whitening = vectors / np.sqrt(values)
    density = network.density
    density.shift.assign(mean.astype(np.float32))
    density.whitening.assign(whitening.astype(np.float32))
    centres = min(density.centres, len(flat_in), len(flat_out))
    for side, points in (("in", flat_in), ("out", flat_out)):
        mu, sigma = _kmeans((points - mean) @ whitening, centres, seed)
        mu_var, log_sigma, logit_w = density.mixtures[side]
        full_mu = np.repeat(mu, -(-density.centres // centres), axis=0)[: density.centres]
        full_sigma = np.repeat(sigma, -(-density.centres // centres))[: density.centres]
        mu_var.assign(full_mu.astype(np.float32))
        log_sigma.assign(np.log(full_sigma).astype(np.float32))
        logit_w.assign(np.zeros(density.centres, np.float32))
