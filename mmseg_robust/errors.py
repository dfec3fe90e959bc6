"""Exceptions for expected failures: the CLI turns them into one line and a non-zero exit."""


class MMRobustError(Exception):
    """An expected, user-facing error (bad input, missing configuration).

    The message must be one line that names the culprit (file, case or variable) and the problem.
    """


class DatasetError(MMRobustError):
    """A dataset folder cannot be found or read as any supported layout."""


class ConfigurationError(MMRobustError):
    """A required setting (environment variable, flag) is missing or invalid."""


class TrainingConfigError(MMRobustError):
    """An inconsistent training setting or results folder (either application's)."""


class NetworkError(MMRobustError, ValueError):
    """A network (or fusion) that cannot be built from the given configuration, or inputs it cannot take."""


class StrategyError(MMRobustError, ValueError):
    """A strategy that cannot be built as asked, or a model it cannot train."""
