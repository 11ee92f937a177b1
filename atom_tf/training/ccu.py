"""Certified Certain Uncertainty (Meinke & Hein, 2019): a classifier combined with Gaussian
mixture densities on inputs for the in- and the out-distribution,

    p(y|x) = (p(y|x, i) p(x|i) p(i) + (1/K) p(x|o) p(o)) / (p(x|i) p(i) + p(x|o) p(o)),

so that far from the in-distribution's mixture the prediction becomes uniform whatever the
network says. Each mixture: p(x|·) = Σ_k w_k exp(-d(x, μ_k)² / 2σ_k²) / σ_k^D, equal weights
and priors p(i) = p(o), with Meinke & Hein's PCA metric d(x, y) = ‖Λ^{-1/4} Vᵀ(x - y)‖ (V, Λ
the principal axes and variances of in-distribution training images, Λ floored at 1e-6 of
its largest value). Before the first epoch: centres by k-means on 10,000 training images and
10,000 pool images, half of each as the training augmentation makes them and half clean (as
test images come: fitted on augmented images alone, 22 % of clean CIFAR-10 test images fell
to the out-mixture, 14 % this way), one σ per mixture (the root mean squared distance to the
assigned centre per dimension). Training (their released code): CE on in-distribution images
and λ · uniform CE on outliers of the combined prediction, plus the negative log-likelihood
-log(p(x|i) p(i) + p(x|o) p(o)) of both batches (outliers × λ); centres and σ's train jointly
at their own learning rate (1e-5, decayed with the base schedule; at the
base rate the log-densities, whose gradients grow with the 3,072 input dimensions, made the
loss NaN within three steps), without weight decay. The network outputs log p(y|x) (valid
logits: MSP and eq. 115 read it as is).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from atom_tf.data.augment import random_crop_flip, seed_for

CENTRES = 100
FIT_SAMPLES = 10_000
EIGENVALUE_FLOOR = 1e-6
MIXTURE_LEARNING_RATE = 1e-5  # Meinke & Hein's lr_gmm
GRADIENT_SCALE = MIXTURE_LEARNING_RATE / 0.1  # at the base learning rate 0.1


def scale_gradient(value: tf.Tensor, scale: float) -> tf.Tensor:
    """`value` in the forward pass, its gradient × `scale` in the backward pass: a variable
    read through it trains at `scale` × the optimizer's learning rate (schedule included)."""
    if scale == 1.0:
        return value
    return scale * value + (1.0 - scale) * tf.stop_gradient(value)


class InputDensities(keras.layers.Layer):
    """log p(x|i), log p(x|o) of flattened images (up to the metric's shared constant)."""

    def __init__(
        self, dim: int, centres: int = CENTRES, gradient_scale: float = GRADIENT_SCALE, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.dim, self.centres, self.gradient_scale = dim, centres, gradient_scale
        self.shift = self.add_weight((dim,), initializer="zeros", trainable=False, name="shift")
        self.metric = self.add_weight((dim, dim), initializer="identity", trainable=False,
                                      name="metric")  # fmt: skip
        self.mixtures = {}
        for side in ("in", "out"):
            self.mixtures[side] = (
                self.add_weight((centres, dim), initializer="random_normal", name=f"{side}_mu"),
                self.add_weight((centres,), initializer="zeros", name=f"{side}_log_sigma"),
            )

    @property
    def mixture_variables(self) -> list:
        """Centres and σ's: trained at the mixture learning rate, without weight decay."""
        return [v for pair in self.mixtures.values() for v in pair]

    def transform(self, flat: tf.Tensor) -> tf.Tensor:
        """Coordinates in which the metric is Euclidean."""
        return tf.matmul(flat - self.shift, self.metric)

    def call(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        z = self.transform(tf.reshape(tf.cast(images, tf.float32), [-1, self.dim]))
        return tuple(self._log_density(z, *self.mixtures[side]) for side in ("in", "out"))

    def _log_density(self, z, mu, log_sigma) -> tf.Tensor:
        mu = scale_gradient(mu, self.gradient_scale)
        log_sigma = scale_gradient(log_sigma, self.gradient_scale)
        squared = (tf.reduce_sum(z * z, -1, keepdims=True) - 2.0 * tf.matmul(z, mu, transpose_b=True)
                   + tf.reduce_sum(mu * mu, -1)[None])  # fmt: skip
        log_components = (-self.dim * log_sigma[None]
                          - tf.nn.relu(squared) / (2.0 * tf.exp(2.0 * log_sigma))[None])  # fmt: skip
        return tf.reduce_logsumexp(log_components, axis=-1) - math.log(self.centres)


class CCUNetwork(keras.Model):
    """Outputs log p(y|x) of the combined model (Meinke & Hein, eq. 2)."""

    def __init__(
        self,
        base: keras.Model,
        num_classes: int,
        centres: int = CENTRES,
        gradient_scale: float = GRADIENT_SCALE,
        **kwargs,
    ) -> None:
        super().__init__(name="ccu", **kwargs)
        self.base, self.num_classes = base, num_classes
        dim = int(np.prod(base.inputs[0].shape[1:]))
        # float32 under mixed precision too: log-densities of 3,072-dimensional inputs
        self.density = InputDensities(dim, centres, gradient_scale, dtype="float32")

    @property
    def undecayed_variables(self) -> list:
        return self.density.mixture_variables

    def _log_joint(self, images) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """log p(x|i), log p(x|o) and log(p(x|i) + p(x|o)) (equal priors, up to log 2)."""
        log_in, log_out = self.density(images)
        return log_in, log_out, tf.reduce_logsumexp(tf.stack([log_in, log_out], axis=-1), -1)

    def log_posteriors(self, images) -> tuple[tf.Tensor, tf.Tensor]:
        """(log p(i|x), log p(o|x)) with equal priors."""
        log_in, log_out, log_total = self._log_joint(images)
        return log_in - log_total, log_out - log_total

    def logits_and_nll(self, images, training=False) -> tuple[tf.Tensor, tf.Tensor]:
        """The outputs log p(y|x) and, from the same densities, each image's negative
        log-likelihood -log(p(x|i) p(i) + p(x|o) p(o)) (the mixtures' generative loss)."""
        log_classifier = tf.nn.log_softmax(
            tf.cast(self.base(images, training=training), tf.float32)
        )
        log_in, log_out, log_total = self._log_joint(images)
        log_p_in, log_p_out = log_in - log_total, log_out - log_total  # posteriors first: exact
        uniform = -math.log(self.num_classes)  # 1/K where p(o|x) = 1 (log-densities ~ -1e3)
        logits = tf.reduce_logsumexp(
            tf.stack([log_classifier + log_p_in[:, None],
                      tf.broadcast_to((uniform + log_p_out)[:, None], tf.shape(log_classifier))]),
            axis=0,
        )  # fmt: skip
        return logits, math.log(2.0) - log_total

    def call(self, images, training=False):
        return self.logits_and_nll(images, training)[0]


def wrap_ccu(
    base: keras.Model,
    num_classes: int,
    centres: int = CENTRES,
    gradient_scale: float = GRADIENT_SCALE,
) -> CCUNetwork:
    network = CCUNetwork(base, num_classes, centres, gradient_scale)
    network(
        tf.zeros([1, *base.inputs[0].shape[1:]])
    )  # builds every variable (weights load by order)
    return network


def _kmeans(points: np.ndarray, centres: int, seed: int) -> tuple[np.ndarray, float]:
    """k-means centres and the mixture's σ (root mean squared distance to the assigned
    centre, per dimension)."""
    from sklearn.cluster import KMeans

    fit = KMeans(centres, n_init=1, max_iter=50, random_state=seed).fit(points)
    squared = ((points - fit.cluster_centers_[fit.labels_]) ** 2).sum(-1)
    return fit.cluster_centers_, float(np.sqrt(max(squared.mean(), 1e-12) / points.shape[1]))


def _half_augmented(images: np.ndarray, seed: int) -> np.ndarray:
    """Every other image as the training augmentation makes it (random crop with 4-pixel zero
    padding, flip), the others clean as test images come; flattened, in [0, 1]."""
    augmented = random_crop_flip(tf.constant(images), tf.constant(seed_for(seed, 424242)))
    augmented = augmented.numpy()
    augmented[::2] = images[::2]
    return augmented.reshape(len(images), -1).astype(np.float64) / 255.0


def initialise_ccu(
    network: CCUNetwork, in_images: np.ndarray, outliers: np.ndarray, seed: int
) -> None:
    """Metric from in-distribution training images, mixtures by k-means on them and on pool
    images, half of each augmented (before the first epoch; a resumed run restores them with
    the weights)."""
    rng = np.random.default_rng(seed)
    take = rng.choice(len(in_images), min(FIT_SAMPLES, len(in_images)), replace=False)
    flat_in = _half_augmented(in_images[take], seed)
    flat_out = _half_augmented(outliers[:FIT_SAMPLES], seed + 1)
    mean = flat_in.mean(0)
    values, vectors = np.linalg.eigh(np.cov(flat_in - mean, rowvar=False))
    values = np.maximum(values, EIGENVALUE_FLOOR * values.max())
    metric = vectors / values**0.25
    density = network.density
    density.shift.assign(mean.astype(np.float32))
    density.metric.assign(metric.astype(np.float32))
    centres = min(density.centres, len(flat_in), len(flat_out))
    for side, points in (("in", flat_in), ("out", flat_out)):
        mu, sigma = _kmeans((points - mean) @ metric, centres, seed)
        mu_var, log_sigma = density.mixtures[side]
        mu_var.assign(np.resize(mu, (density.centres, mu.shape[1])).astype(np.float32))
        log_sigma.assign(np.full(density.centres, np.log(sigma), np.float32))
