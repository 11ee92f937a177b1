"""The numbers oneDNN may change, from one trained run's weights, printed as JSON: run by
tests/test_cpu.py with oneDNN on and off.

    python tests/numerics_job.py RUN_DIR

Prints the loss of one ATOM training step (64 in-distribution images + 128 outliers, PGD-5
on half of them) and the weights it leaves, and the scores of 64 letters clean and after
PGD-10. The same weights and seeds in both processes: only the kernels differ.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atom_tf  # first: it chooses the CPU kernels


def main() -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from atom_tf.cpu import numerics
    from atom_tf.data.ood_sets import load_ood_set
    from atom_tf.evaluation.threats import AttackSettings, ThreatContext, get_threat
    from atom_tf.training.methods import get_method
    from atom_tf.training.train_step import RobustOODModel

    detector = atom_tf.load_detector(sys.argv[1])
    letters = load_ood_set("letters", max_images=192).astype(np.float32) / 255
    keras.utils.set_random_seed(0)
    context = ThreatContext(detector.logits, detector.scorer, detector.num_classes,
                            AttackSettings(steps=10, step_size=2 / 255), detector.score,
                            batch_size=64, verbose=False)  # fmt: skip
    attacked = get_threat("linf")(letters[:64], context)
    scores = {"clean_scores": detector.score(letters[:64]).tolist(),
              "attacked_scores": detector.score(attacked).tolist()}  # fmt: skip
    model = RobustOODModel(detector.network, get_method("atom"), detector.num_classes)
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
    rng = np.random.default_rng(0)
    batch = (rng.random((64, 32, 32, 3), np.float32), rng.integers(0, 10, 64), letters[64:])
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    weights = np.concatenate([w.numpy().ravel() for w in detector.network.trainable_weights])
    print(json.dumps({"numerics": numerics(), "loss": history.history["loss"][0],
                      "weights": weights.tolist(), **scores}))  # fmt: skip


if __name__ == "__main__":
    main()
