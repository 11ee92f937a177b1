"""The command lines' flags come from the settings' declarations: every setting has its flag
with the field's default, and every help string that lists names lists every registered one."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

DUMP = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("entry", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from absl import flags
print(json.dumps({name: [flag.default, flag.help] for name, flag in flags.FLAGS._flags().items()}))
"""


def entry_flags(script: str) -> dict[str, list]:
    out = subprocess.run([sys.executable, "-c", DUMP, f"{REPO}/bin/{script}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    return json.loads(out.splitlines()[-1])


@pytest.fixture(scope="module")
def train_flags():
    return entry_flags("train.py")


@pytest.fixture(scope="module")
def evaluate_flags():
    return entry_flags("evaluate.py")


def as_flag_default(value):
    return [str(v) for v in value] if isinstance(value, tuple | list) else value


def test_every_training_setting_is_a_flag_with_the_fields_default(train_flags):
    from atom_tf.training.trainer import TrainConfig

    settings = TrainConfig.settings()
    assert {"reject_classes", "margin_in", "margin_out", "mixture_learning_rate"} <= {
        s.name for s in settings
    }  # the methods' own settings are flags too
    for s in settings:
        assert train_flags[s.flag_name][0] == as_flag_default(s.default), s.name
    config = TrainConfig()
    assert train_flags["epochs"][0] == config.epochs and train_flags["seed"][0] == config.seed


def test_every_evaluation_setting_and_scorer_option_is_a_flag_with_its_default(evaluate_flags):
    from atom_tf.evaluation.runner import EvalSettings
    from atom_tf.evaluation.scorers import SCORERS
    from atom_tf.evaluation.threats import AttackSettings
    from atom_tf.settings import settings_of

    assert {s.name for s in settings_of(EvalSettings)} >= {"threats", "batch_size", "seed"}
    for s in [*settings_of(EvalSettings), *settings_of(AttackSettings)]:
        assert evaluate_flags[s.flag_name][0] == as_flag_default(s.default), s.name
    assert evaluate_flags["attack_steps"][0] == AttackSettings().steps == 40
    options = [o for name in SCORERS.names() for o in SCORERS.get(name).options]
    assert {o.flag_name for o in options} >= {"odin_temperature", "odin_epsilon"}
    for o in options:
        assert evaluate_flags[o.flag_name][0] == o.default


def test_help_strings_list_every_registered_name(train_flags, evaluate_flags):
    from atom_tf.data.in_distribution import IN_DISTRIBUTION
    from atom_tf.data.ood_sets import OOD_SETS
    from atom_tf.data.outlier_pools import POOLS
    from atom_tf.evaluation.scorers import SCORERS
    from atom_tf.evaluation.threats import THREATS
    from atom_tf.models import MODELS
    from atom_tf.training.methods import METHODS

    listed = [(train_flags, "dataset", IN_DISTRIBUTION), (train_flags, "model", MODELS),
              (train_flags, "method", METHODS), (train_flags, "pool", POOLS),
              (evaluate_flags, "scorer", SCORERS), (evaluate_flags, "threats", THREATS),
              (evaluate_flags, "ood_sets", OOD_SETS)]  # fmt: skip
    for entry, flag, registry in listed:
        words = set(entry[flag][1].replace(",", " ").replace(".", " ").split())
        assert set(registry.names()) <= words, (flag, set(registry.names()) - words)
    assert {"small_cnn_24", "small_cnn_32"} <= set(MODELS.names())
    assert "images" in POOLS.names()
    mining = train_flags["mining"][1]
    assert all(selection in mining for selection in ("window", "random", "fixed"))


PARSE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("entry", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from absl import flags
failed = {}
for path in sys.argv[2:]:
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS([sys.argv[1], "--flagfile=" + path])
    except flags.Error as error:
        failed[path] = str(error)
print(json.dumps(failed))
"""


def entry_of(path) -> str:
    """The command line a flagfile of configs/ is written for."""
    if path.name.startswith(("reproduce_", "select_quantile_")):
        return "reproduce.py"
    evaluation = path.stem.startswith("evaluate") or path.stem.endswith(("evaluate", "validation"))
    return "evaluate.py" if evaluation else "train.py"


def test_every_flagfile_in_configs_parses_with_its_command_line():
    """A flag renamed or removed in a settings declaration breaks no shipped flagfile."""
    import pathlib

    files = sorted(pathlib.Path(REPO, "configs").rglob("*.flags"))
    by_entry: dict[str, list[str]] = {}
    for path in files:
        by_entry.setdefault(entry_of(path), []).append(str(path))
    assert set(by_entry) == {"train.py", "evaluate.py", "reproduce.py"} and len(files) > 20
    for script, paths in by_entry.items():
        out = subprocess.run([sys.executable, "-c", PARSE, f"{REPO}/bin/{script}", *paths],
                             cwd=REPO, capture_output=True, text=True, timeout=300,
                             check=True).stdout  # fmt: skip
        assert json.loads(out.splitlines()[-1]) == {}, script
