"""The robust training step: eq. (4) as a `keras.Model.train_step`, compiled with XLA; the
baselines of atom_tf.training.methods are variations of the same step.

One step: PGD (inference-mode model) on half of the outlier batch, then a single
training-mode forward pass over [in-distribution, clean outliers, attacked outliers], so that
batch-norm statistics come from the mixed batch (docs/protocol.md §2). Loss = mean CE(in, y) +
λ · mean ℓ_out(out) (+ a method's in-distribution regulariser and density loss), with
PyTorch-style weight decay added to every gradient but a density model's (`undecayed_variables`).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from atom_tf.attacks.objectives import label_ce
from atom_tf.attacks.pgd import pgd_attack, random_start_noise
from atom_tf.training.methods import Method

TRAIN_ATTACKS = ("pgd", "fgsm_rs")


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Training attack (docs/protocol.md §2): ε 8/255, 5 steps of 2/255, random start, the
    best iterate kept. `kind="fgsm_rs"` is fast adversarial training instead (§12, Wong et al.,
    2020): a uniform start in the ε-ball, one signed step of 1.25 ε, the result as it lands
    (`steps` and `step_size` are then unused)."""

    epsilon: float = 8 / 255
    steps: int = 5
    step_size: float = 2 / 255
    kind: str = "pgd"

    def __post_init__(self):
        if self.kind not in TRAIN_ATTACKS:
            raise ValueError(f"training attack must be one of {TRAIN_ATTACKS}, not {self.kind!r}")


def _kl(target: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """KL(target ‖ softmax(logits)) per sample (TRADES' robustness term)."""
    log_target = tf.math.log(tf.maximum(target, 1e-12))
    return tf.reduce_sum(target * (log_target - tf.nn.log_softmax(logits, axis=-1)), axis=-1)


def _logs(values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """A step's logs. Keras reduces them over MultiWorkerMirroredStrategy's replicas with
    `reduce("MEAN", axis=0)`, which fails on scalars: there they go as shape [1]."""
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {name: tf.reshape(value, [1]) for name, value in values.items()}
    return values


class RobustOODModel(keras.Model):
    """Wraps a network (logits model) with the training step of a method (ATOM, NTOM, OE and
    the baselines of atom_tf.training.methods)."""

    def __init__(
        self,
        network: keras.Model,
        method: Method,
        num_classes: int,
        weight_decay: float = 1e-4,
        attack: AttackConfig | None = None,
        seed: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.network, self.method, self.num_classes = network, method, num_classes
        self.weight_decay, self.attack, self.seed = weight_decay, attack or AttackConfig(), seed
        names = ["loss", "in_loss", "out_loss", "in_accuracy"]
        if method.trades_beta > 0:
            names.append("trades_loss")
        if method.kplus1 and method.uses_outliers:
            names.append("out_accuracy")
        if method.density_loss is not None:
            names.append("density_loss")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

    def call(self, images, training=False):
        return self.network(images, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras reads a batch to build a model created under a distribution strategy. Built
        models skip it: the peek would take a training batch before epoch 1 is mined (and it
        fails on MultiWorkerMirroredStrategy's per-replica values)."""
        optimizer_built = self.optimizer is None or self.optimizer.built
        if all(layer.built for layer in self._flatten_layers()) and optimizer_built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _in_accuracy(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        predicted = tf.argmax(logits[:, : self.num_classes], axis=-1)
        return tf.cast(tf.equal(predicted, tf.cast(labels, predicted.dtype)), tf.float32)

    def _attack(self, images: tf.Tensor, objective, salt: int) -> tf.Tensor:
        """PGD (inference mode) on `images`. Random starts are drawn for the global batch, this
        replica taking its share: N replicas attack exactly as one device does (the feed gives
        each replica its share of both halves of the outlier batch)."""
        seed = tf.stack(
            [tf.constant(self.seed + salt, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]
        )
        share = tf.shape(images)[0]
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        fgsm = self.attack.kind == "fgsm_rs"
        noise = random_start_noise(
            seed, tf.concat([[share * replicas], tf.shape(images)[1:]], 0), self.attack.epsilon,
            quantize=not fgsm,
        )  # fmt: skip
        if replicas > 1:
            first = tf.cast(context.replica_id_in_sync_group, tf.int32) * share
            noise = noise[:, first : first + share]
        attacked, _ = pgd_attack(
            lambda x: self.network(x, training=False),
            images,
            objective,
            epsilon=self.attack.epsilon,
            steps=1 if fgsm else self.attack.steps,
            step_size=1.25 * self.attack.epsilon if fgsm else self.attack.step_size,
            seed=seed,
            unroll=True,
            start_noise=noise,
            keep_best=not fgsm,
        )
        return attacked

    @staticmethod
    def _first_attacked(size: int, share: float) -> int:
        """Where the attacked last `share` of a static batch of `size` begins."""
        return size - round(size * share)

    def attack_in_distribution(
        self, images: tf.Tensor, labels: tf.Tensor, attack=None, share: float | None = None
    ) -> tf.Tensor:
        """The attacked last `share` (default: the method's `in_attacked_share`: all of it for
        ROWL and ALOE, half for atom_adv) of the in-distribution batch, split in equal parts
        over the method's in-distribution objectives (`Method.in_distribution_objectives`).
        `attack(images, objective, salt)` defaults to the training attack."""
        attack = attack or self._attack
        share = self.method.in_attacked_share if share is None else share
        size = images.shape[0]
        if size is None:
            raise ValueError("in-distribution attacks need a static batch size")
        first = self._first_attacked(size, share)
        parts = len(self.method.in_distribution_objectives(labels))
        bounds = [first + (size - first) * i // parts for i in range(parts + 1)]
        attacked = []
        for i in range(parts):  # part i: its images, its labels, objective i
            low, high = bounds[i], bounds[i + 1]
            objective = self.method.in_distribution_objectives(labels[low:high])[i]
            attacked.append(attack(images[low:high], objective, 7919 + i))
        return tf.concat(attacked, axis=0)

    def trades_attack(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """x' of TRADES' KL term for the last `in_attacked_share` of the batch: maximising
        KL(f(x) ‖ f(x')) in the ε-ball, f(x) fixed (inference mode; the engine's uniform random
        start), or (`trades_adversary` other than "kl") the attack of the method's
        in-distribution objectives (`attack_in_distribution`)."""
        if self.method.trades_adversary != "kl":
            return self.attack_in_distribution(images, labels)
        first = self._first_attacked(images.shape[0], self.method.in_attacked_share)
        target = tf.stop_gradient(tf.nn.softmax(self.network(images[first:], training=False)))
        return self._attack(images[first:], lambda logits: _kl(target, logits), 7919)

    def attack_outliers(self, outliers: tf.Tensor) -> tf.Tensor:
        """Replaces the last `attacked_share` of the outlier batch (half for ATOM and ACET) by
        its PGD worst case under the method's objective."""
        share = self.method.attacked_share
        size = outliers.shape[0]
        if size is not None:  # static batch (always with the training feed): static slices
            clean = self._first_attacked(size, share)
        else:
            size = tf.shape(outliers)[0]
            clean = size - tf.cast(tf.round(tf.cast(size, tf.float32) * share), tf.int32)
        attacked = self._attack(outliers[clean:], self.method.pgd_objective(), 0)
        return tf.concat([outliers[:clean], attacked], axis=0)

    def train_step(self, data):
        x_in, y_in, x_out = data
        method = self.method
        x_trades = None
        if method.trades_beta > 0:  # TRADES: x' joins the batch beside the clean images
            x_trades = self.trades_attack(x_in, y_in)
        elif method.attack_in:  # adversarial training: the attacked part replaces its images
            attacked = self.attack_in_distribution(x_in, y_in)
            x_in = tf.concat([x_in[: x_in.shape[0] - attacked.shape[0]], attacked], axis=0)
        if method.attack:
            x_out = self.attack_outliers(x_out)
        n_in = tf.shape(x_in)[0]
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            images = tf.concat([x_in, x_out], axis=0) if method.uses_outliers else x_in
            if x_trades is not None:
                images = tf.concat([images, x_trades], axis=0)
            if method.density_loss is None:
                logits = self.network(images, training=True)
            else:  # CCU: the densities behind the outputs give the mixtures' loss too
                logits, nll = method.density_loss(self.network, images, training=True)
            if x_trades is not None:
                n_trades = x_trades.shape[0]
                logits, trades_logits = logits[:-n_trades], logits[-n_trades:]
            in_logits, out_logits = logits[:n_in], logits[n_in:]
            in_loss = tf.reduce_mean(label_ce(in_logits, y_in))
            out_loss = tf.zeros([])
            if method.uses_outliers:
                out_loss = tf.reduce_mean(method.outlier_loss(out_logits))
            if method.in_regularizer is not None:
                out_loss += tf.reduce_mean(method.in_regularizer(in_logits))
            loss = in_loss + method.outlier_weight * out_loss
            if x_trades is not None:  # β · KL(f(x) ‖ f(x')), gradients through both sides
                clean = tf.nn.softmax(in_logits[-n_trades:])
                trades_loss = tf.reduce_mean(_kl(clean, trades_logits))
                loss += method.trades_beta * trades_loss
                self.trackers["trades_loss"].update_state(trades_loss)
            if method.density_loss is not None:  # CCU's mixtures: their negative log-likelihood
                density = tf.reduce_mean(nll[:n_in])
                if method.uses_outliers:
                    density += method.outlier_weight * tf.reduce_mean(nll[n_in:])
                loss += density
                self.trackers["density_loss"].update_state(density)
            # Gradients are summed over replicas: scale so their sum is the global mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(loss / replicas)  # mixed_float16: × scale
        grads = tape.gradient(scaled_loss, variables)
        # Weight decay joins the still-scaled per-replica gradients (summed over replicas, then
        # unscaled by apply()).
        decay = self.weight_decay * getattr(self.optimizer, "dynamic_scale", 1.0) / replicas
        undecayed = {v.path for v in getattr(self.network, "undecayed_variables", ())}
        grads = [g if v.path in undecayed else g + decay * v
                 for g, v in zip(grads, variables, strict=True)]  # fmt: skip
        self.optimizer.apply(grads, variables)
        self.trackers["loss"].update_state(loss)
        self.trackers["in_loss"].update_state(in_loss)
        self.trackers["out_loss"].update_state(out_loss)
        self.trackers["in_accuracy"].update_state(self._in_accuracy(in_logits, y_in))
        if method.kplus1 and method.uses_outliers:
            is_ood = tf.argmax(out_logits, axis=-1) >= self.num_classes
            self.trackers["out_accuracy"].update_state(tf.cast(is_ood, tf.float32))
        return _logs({name: t.result() for name, t in self.trackers.items()})

    def test_step(self, data):
        images, labels = data
        logits = self.network(images, training=False)
        self.trackers["in_loss"].update_state(
            tf.reduce_mean(label_ce(logits[:, : self.num_classes], labels))
        )
        self.trackers["in_accuracy"].update_state(self._in_accuracy(logits, labels))
        return _logs({n: self.trackers[n].result() for n in ("in_loss", "in_accuracy")})
