"""Exception hierarchy for user mistakes.

Every error a user can cause derives from :class:`BenchError`; the CLI edge prints its message
as one line (the message must say what was wrong and how to fix it) and exits non-zero.
"""

from __future__ import annotations


class BenchError(Exception):
    """Base class: a problem the user can fix; its message is shown as one line."""

    exit_code = 2


class ConfigError(BenchError):
    """A config value or combination that cannot work."""


class UnknownOptionError(ConfigError):
    """A name (dataset flag, model, config option) that is not one of the valid ones."""


class DatasetNotFoundError(BenchError):
    """A data file or folder is absent and could not be downloaded."""


class DataFormatError(BenchError):
    """A data file exists but its content is wrong (keys, dtype, shapes, labels)."""


class CorruptFileError(DataFormatError):
    """A file is truncated or not in the format its name promises."""


class ModelDataMismatchError(ConfigError):
    """The chosen model cannot consume the chosen dataset."""


class WeightsError(BenchError):
    """A weights file cannot be loaded into the model."""


class PretrainedUnavailableError(WeightsError):
    """Pretrained weights could not be downloaded (usually: offline)."""


class OutputPathError(BenchError):
    """An output folder is not writable or lies outside the allowed root."""


class RecordWriteError(BenchError):
    """A run record could not be written (for example: disk full); nothing half-written is left."""


class NonFiniteLossError(BenchError):
    """The training loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (a scheduler's time limit, ``kill``); the run stops resumable."""


def one_line(exc: BaseException) -> str:
    """Render an exception as ``TypeName: first line of message``."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
