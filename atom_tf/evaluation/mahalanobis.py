"""The Mahalanobis detector (Lee et al., 2018) as a fitted scorer, with its attack objective
(paper eq. 116), differentiable end to end in TensorFlow.

Features: the spatially averaged input of every pooling layer of the network (the end of each
stage: three for small_cnn, the dense blocks and the last block for DenseNet). Per layer ℓ:
class means μ_c and one tied covariance Σ from the training set, confidence
M_ℓ(x) = max_c -(f_ℓ(x) - μ_c)ᵀ Σ⁻¹ (f_ℓ(x) - μ_c), computed on the pre-processed input
x̃ = x + η sign(∇_x M_ℓ(x)). A logistic regression over (M_1, ..., M_L) separates 1,000
in-distribution test images from their FGSM (ε = 0.05) versions; η is the value of
MAHALANOBIS_ETAS with the lowest FPR95 on a held-out half of them (paper Appendix B.3).
Score: the regressor's log-odds Σ α_ℓ M_ℓ(x̃) + b. Attack (eq. 116): maximise
log σ(Σ α_ℓ M_ℓ(x') + b) over the L∞ ball.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from atom_tf.attacks.objectives import label_ce
from atom_tf.errors import InvalidConfigError
from atom_tf.evaluation.metrics import fpr_at_tpr
from atom_tf.evaluation.scorers import Scorer, register_scorer

MAHALANOBIS_ETAS = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)  # B.3's grid
FGSM_EPSILON = 0.05
POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
           keras.layers.GlobalAveragePooling2D)  # fmt: skip


def feature_model(network: keras.Model) -> keras.Model:
    """The network's feature layers: the inputs of its pooling layers, in order."""
    tensors = [layer.input for layer in network.layers if isinstance(layer, POOLING)]
    if not tensors:
        raise InvalidConfigError(f"{network.name} has no pooling layer to take features from")
    inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs
    return keras.Model(inputs, tensors, name=f"{network.name}_features")


def pooled_features(features: keras.Model, images: tf.Tensor) -> list[tf.Tensor]:
    """[B, D_ℓ] per feature layer: the spatial mean of each map (inference mode)."""
    maps = features(images, training=False)
    maps = maps if isinstance(maps, list | tuple) else [maps]
    return [tf.reduce_mean(m, axis=[1, 2]) if m.shape.rank == 4 else m for m in maps]


def layer_confidence(feature: tf.Tensor, means: tf.Tensor, precision: tf.Tensor) -> tf.Tensor:
    """M(x) = max_c -(f - μ_c)ᵀ P (f - μ_c) for features [B, D], means [K, D], precision [D, D]."""
    diff = tf.cast(feature, tf.float32)[:, None, :] - means[None]
    distances = tf.einsum("bkd,de,bke->bk", diff, precision, diff)
    return -tf.reduce_min(distances, axis=-1)


@dataclasses.dataclass
class MahalanobisStatistics:
    features: keras.Model
    means: list[tf.Tensor]  # per layer [K, D]
    precisions: list[tf.Tensor]  # per layer [D, D]

    def confidences(self, images: tf.Tensor) -> tf.Tensor:
        """[B, L]: M_ℓ(x) per layer, no pre-processing."""
        feats = pooled_features(self.features, images)
        return tf.stack(
            [layer_confidence(f, m, p) for f, m, p in zip(feats, self.means, self.precisions,
                                                          strict=True)], axis=1
        )  # fmt: skip

    def preprocessed_confidences(self, images: tf.Tensor, eta: float) -> tf.Tensor:
        """[B, L]: M_ℓ(x̃_ℓ), x̃_ℓ = clip(x + η sign(∇_x M_ℓ(x)), 0, 1), one x̃ per layer."""
        if isinstance(eta, float) and eta == 0.0:
            return self.confidences(images)
        images = tf.convert_to_tensor(images, tf.float32)
        layers = range(len(self.means))
        with tf.GradientTape(persistent=True) as tape:  # one forward pass, a backward per layer
            tape.watch(images)
            clean = self.confidences(images)
            totals = [tf.reduce_sum(clean[:, layer]) for layer in layers]
        columns = []
        for layer in layers:
            step = eta * tf.sign(tape.gradient(totals[layer], images))
            columns.append(self.confidences(tf.clip_by_value(images + step, 0.0, 1.0))[:, layer])
        del tape
        return tf.stack(columns, axis=1)


def class_statistics(
    features: list[np.ndarray], labels: np.ndarray, num_classes: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: class means [K, D] and the precision (pseudo-inverse) of the tied covariance
    Σ = (1/N) Σ_i (f_i - μ_{y_i})(f_i - μ_{y_i})ᵀ, in float64."""
    means, precisions = [], []
    for f in features:
        f = f.astype(np.float64)
        mu = np.stack([f[labels == c].mean(axis=0) for c in range(num_classes)])
        centred = f - mu[labels]
        means.append(mu)
        precisions.append(np.linalg.pinv(centred.T @ centred / len(f), hermitian=True))
    return means, precisions


def _statistics(network: keras.Model, params: dict) -> MahalanobisStatistics:
    return MahalanobisStatistics(
        feature_model(network),
        [tf.constant(m, tf.float32) for m in params["means"]],
        [tf.constant(p, tf.float32) for p in params["precisions"]],
    )


def _fgsm(calibration) -> np.ndarray:
    """FGSM (ε = 0.05) on the classifier's loss for the calibration's in-distribution images."""
    labels = tf.constant(calibration.in_labels)

    def attack(batch_and_labels):
        x, y = batch_and_labels
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(label_ce(calibration.logits(x)[:, : calibration.num_classes], y))
        return tf.clip_by_value(x + FGSM_EPSILON * tf.sign(tape.gradient(loss, x)), 0.0, 1.0)

    images = tf.cast(calibration.in_images, tf.float32) / 255.0
    out = [attack((images[i : i + 256], labels[i : i + 256])) for i in range(0, len(images), 256)]
    return np.round(np.concatenate(out) * 255.0).astype(np.uint8)


def _fit_regression(positive: np.ndarray, negative: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([positive, negative]).astype(np.float64)
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return LogisticRegression(max_iter=5000).fit(x, y)


def _fit(calibration, options: dict) -> dict:
    features = feature_model(calibration.network)
    sizes = [int(t.shape[-1]) for t in features.outputs]
    train = calibration.apply(
        lambda x: tf.concat(pooled_features(features, x), axis=1), calibration.train_images
    )
    split = np.cumsum(sizes)[:-1]
    means, precisions = class_statistics(
        np.split(train, split, axis=1), calibration.train_labels, calibration.num_classes
    )
    params = {"means": [m.tolist() for m in means], "precisions": [p.tolist() for p in precisions]}
    stats = _statistics(calibration.network, params)
    adversarial = _fgsm(calibration)
    half = len(adversarial) // 2
    fprs, columns = {}, {}
    eta_variable = tf.Variable(0.0)  # one traced function for the whole grid

    def confidences(x):
        return stats.preprocessed_confidences(x, eta_variable)

    for eta in MAHALANOBIS_ETAS:
        eta_variable.assign(eta)
        clean = calibration.apply(confidences, calibration.in_images)
        attacked = calibration.apply(confidences, adversarial)
        columns[eta] = clean, attacked
        model = _fit_regression(clean[:half], attacked[:half])
        fprs[eta] = 100 * fpr_at_tpr(
            model.decision_function(clean[half:]), model.decision_function(attacked[half:])
        )
    eta = min(MAHALANOBIS_ETAS, key=lambda e: fprs[e])  # first of equals in B.3's order
    model = _fit_regression(*columns[eta])
    return {
        **params,
        "alpha": model.coef_[0].tolist(),
        "bias": float(model.intercept_[0]),
        "epsilon": eta,
        "layers": len(sizes),
        "validation_fpr95": {str(e): f for e, f in fprs.items()},
    }


def _bind(params: dict, network: keras.Model, num_classes: int) -> Scorer:
    stats = _statistics(network, params)
    alpha = tf.constant(params["alpha"], tf.float32)
    bias, eta = float(params["bias"]), float(params["epsilon"])

    def log_odds(images: tf.Tensor) -> tf.Tensor:
        return tf.linalg.matvec(stats.confidences(images), alpha) + bias

    def score(logits_fn, images, k):
        return tf.linalg.matvec(stats.preprocessed_confidences(images, eta), alpha) + bias

    return dataclasses.replace(
        MAHALANOBIS, score=score, attack_outputs=log_odds,
    )  # fmt: skip


def _unfitted(logits_fn, images, num_classes):
    raise InvalidConfigError(
        "the mahalanobis scorer needs its statistics: load it with atom_tf.load_detector"
    )


MAHALANOBIS = register_scorer(
    Scorer(
        name="mahalanobis",
        score=_unfitted,
        objective=lambda log_odds, k: tf.math.log_sigmoid(log_odds),  # eq. 116
        adaptive_objective=lambda log_odds, k: log_odds,
        # log P(OOD): unlike -log P(in), its gradient does not vanish on confident inputs
        in_objective=lambda log_odds, k: tf.math.log_sigmoid(-log_odds),
        fit=_fit,
        bind=_bind,
        input_gradient=True,
    )
)
