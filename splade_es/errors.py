"""Errors users can act on: every message is one line that names what is wrong."""


class SpladeError(Exception):
    """Base class: the CLI prints these as a one-line error instead of a traceback."""


class ConfigError(SpladeError):
    """A splade_config.json (or an option) is invalid."""


class ModelLoadError(SpladeError):
    """A model, adapter or tokenizer could not be found or loaded."""


class InputError(SpladeError):
    """Input texts or files are malformed."""


class EncodingError(SpladeError):
    """The model produced something that cannot become a sparse vector (e.g. NaN)."""
