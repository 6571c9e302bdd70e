"""What every command shares: one-line errors and quiet third-party logging."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import TypeVar

import click

from splade_es.errors import SpladeError

F = TypeVar("F", bound=Callable)


def friendly_errors(command: F) -> F:
    """Turn :class:`SpladeError` into ``Error: <one line>`` and exit status 1, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpladeError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def quiet_libraries() -> None:
    """Keep stderr for our progress bars and errors, not library chatter."""
    for name in ("transformers", "peft", "bitsandbytes", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
