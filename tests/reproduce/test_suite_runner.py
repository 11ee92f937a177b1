import json

from atom_tf.reproduce.suite import get_suite_entry
from atom_tf.reproduce.suite_runner import Timings, run_train_seconds


def test_training_time_comes_from_the_run_across_resumes(tmp_path):
    """A run's training seconds are its summary's (every epoch, a killed process's included),
    marked a lower bound where the run could not time them all; the suite's own timer only for
    runs whose summary has none."""
    timings = Timings(str(tmp_path / "timings.json"))
    timings.add("atom", "train", 500.0)  # the suite timed only the last, resumed process
    run = tmp_path / "atom"
    run.mkdir()
    entry = get_suite_entry("atom")

    def summary(**values):
        (run / "summary.json").write_text(
            json.dumps({"test_accuracy": 0.8, "epochs": 10, **values})
        )
        return run_train_seconds(str(tmp_path), entry, timings)

    assert summary(train_seconds=1200.0, resumed_from_epoch=4, train_seconds_complete=True) == {
        "train": 1200.0}  # fmt: skip
    assert summary(train_seconds=900.0, resumed_from_epoch=4, train_seconds_complete=False) == {
        "train": 900.0, "train_lower_bound": True}  # fmt: skip
    assert summary(train_seconds=700.0, resumed_from_epoch=0) == {"train": 700.0}
    assert summary() == {"train": 500.0}
