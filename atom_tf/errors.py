"""User-facing errors: each carries one actionable line; entry points print it and exit 2."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing data, wrong file). Never a bug."""


class DatasetNotFoundError(UserError):
    """A dataset is neither on disk nor downloadable."""


class InvalidConfigError(UserError):
    """Flags or arguments that cannot work together."""


class NonFiniteLossError(UserError):
    """Training diverged; the last good checkpoint is kept."""


def describe_cause(error: BaseException, limit: int = 160) -> str:
    """'Type: first line' of the innermost exception in `error`'s chain (what really went
    wrong, e.g. "ConnectionRefusedError: [Errno 111] Connection refused" under a library's
    retry wrapper), shortened to `limit` characters."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    line = (str(error).strip().splitlines() or [""])[0].rstrip(":")
    text = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidInputError(InvalidConfigError, ValueError):
    """Arrays handed to the library that it cannot score as they are (shape, dtype, range)."""
