"""atom_tf.registry: named entries, one-line errors listing the choices, a name claimed once,
built-in entries loaded from the modules the registry names (never by a side-effect import)."""

import subprocess
import sys

import pytest

from atom_tf.errors import InvalidConfigError
from atom_tf.registry import Registry
from tests.conftest import REPO


def test_entries_are_found_by_name_and_listed_sorted():
    registry: Registry[int] = Registry("colour")
    registry.register("red")(1)
    assert registry.register("blue")(2) == 2  # the decorator returns what it registers
    assert registry.get("red") == 1 and "blue" in registry and "green" not in registry
    assert registry.names() == ["blue", "red"] == list(registry)
    assert registry.choices() == "blue, red"


def test_an_unknown_name_is_one_line_listing_the_choices():
    registry: Registry[int] = Registry("colour")
    registry.register("red")(1)
    with pytest.raises(
        InvalidConfigError, match=r"^unknown colour 'green'; choose one of \['red'\]$"
    ):
        registry.get("green")


def test_a_name_is_registered_once():
    registry: Registry[int] = Registry("colour")
    registry.register("red")(1)
    registry.register("red")(1)  # the same entry again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="'red' is registered twice"):
        registry.register("red")(2)


def test_builtins_are_imported_on_the_first_read(tmp_path, monkeypatch):
    (tmp_path / "colour_entries.py").write_text(
        "from tests_registry_target import COLOURS\nCOLOURS.register('teal')(7)\n"
    )
    (tmp_path / "tests_registry_target.py").write_text(
        "from atom_tf.registry import Registry\n"
        "COLOURS = Registry('colour', builtins=('colour_entries',))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import tests_registry_target

    assert "colour_entries" not in sys.modules  # nothing imported until the registry is read
    assert tests_registry_target.COLOURS.get("teal") == 7
    assert "colour_entries" in sys.modules


def test_every_registry_is_complete_in_a_process_that_imports_only_its_module():
    """No lookup depends on another module having been imported first."""
    script = (
        "from atom_tf.evaluation.threats import threat_names\n"
        "from atom_tf.evaluation.scorers import scorer_names\n"
        "from atom_tf.data.download import REMOTE_FILES\n"
        "print(threat_names(), scorer_names(), REMOTE_FILES.names())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True).stdout  # fmt: skip
    assert "'compositional', 'corruption'" in out and "'mahalanobis'" in out
    assert "'tiny_images_300k'" in out
