"""User-facing errors: each carries one actionable line; entry points print it and exit 2."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing data, wrong file). Never a bug."""


class DatasetNotFoundError(UserError):
    """A dataset is neither on disk nor downloadable."""


class InvalidConfigError(UserError):
    """Flags or arguments that cannot work together."""


class NonFiniteLossError(UserError):
    """Training diverged; the last good checkpoint is kept."""
