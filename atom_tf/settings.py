"""Settings declared once. A run's settings are fields of a dataclass (`TrainConfig`,
`AttackSettings`), each made by `setting(default, help)`; a unit's own settings (a method's
constants, a scorer's options) are `Setting`s it declares. The command lines generate their
flags from these declarations (`atom_tf.cli.define_flags`), so a default and a help string are
written in one place."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import Any

KEY = "atom_tf.setting"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    """One setting: its name, default, help and command-line flag.

    `help` may hold "{choices}", replaced by the names `choices` lists (a registry, an enum or
    a tuple of strings) when the flag is defined, so a help string never lists names by hand.
    `added_later`: runs written before this setting existed lack it, and config.json leaves
    it out while it holds its default (those runs stay resumable). `normalize` maps a given
    value to the one recorded (e.g. a negative η to None: "choose it")."""

    name: str
    default: Any
    help: str
    flag: str = ""  # '' = the name
    kind: str = ""  # 'str', 'int', 'float', 'bool', 'list'; '' = from the default's type
    choices: Any = None
    added_later: bool = False
    positive: bool = False  # must be > 0 (checked before any work starts)
    normalize: Callable[[Any], Any] | None = None

    @property
    def flag_name(self) -> str:
        return self.flag or self.name

    @property
    def value_kind(self) -> str:
        if self.kind:
            return self.kind
        if isinstance(self.default, bool):
            return "bool"
        for kind in (int, float, str):
            if isinstance(self.default, kind):
                return kind.__name__
        if isinstance(self.default, tuple | list):
            return "list"
        raise TypeError(f"setting {self.name}: give its kind (default {self.default!r})")

    def choice_names(self) -> list[str]:
        if self.choices is None:
            return []
        if isinstance(self.choices, type) and issubclass(self.choices, enum.Enum):
            return [str(member.value) for member in self.choices]
        names = self.choices.names() if hasattr(self.choices, "names") else self.choices
        return [str(name) for name in names]

    def help_text(self) -> str:
        return self.help.replace("{choices}", ", ".join(self.choice_names()))

    def value(self, given: Any) -> Any:
        return self.normalize(given) if self.normalize is not None else given


def setting(default: Any, help: str, **options: Any) -> Any:
    """A dataclass field declared with its help (and `Setting`'s other options)."""
    declared = {"default": default, "help": help, **options}
    return dataclasses.field(default=default, metadata={KEY: declared})


def settings_of(cls: type) -> list[Setting]:
    """The `setting(...)` fields of a dataclass, as Settings named after the fields."""
    return [
        Setting(name=f.name, **f.metadata[KEY])
        for f in dataclasses.fields(cls)
        if KEY in f.metadata
    ]


def with_defaults(settings: Iterable[Setting], given: dict) -> dict[str, Any]:
    """{name: the given value, else the default} for each setting."""
    return {s.name: given.get(s.name, s.default) for s in settings}


def identity_of(settings: Any) -> dict[str, Any]:
    """A settings dataclass as the record that results are keyed by: every field, less the
    settings added after results were first saved while they hold their default (so those
    results keep their identity)."""
    later = {s.name: s.default for s in settings_of(type(settings)) if s.added_later}
    return {k: v for k, v in dataclasses.asdict(settings).items()
            if k not in later or v != later[k]}  # fmt: skip
