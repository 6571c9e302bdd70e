"""What every command shares: one-line errors and quiet third-party logging."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click
from click.core import ParameterSource

from splade_es.errors import SpladeError

if TYPE_CHECKING:
    from splade_es.toolkit.query.forms import TokenPruning

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


def engine_options(command: F) -> F:
    """--url / --sniff / --engine / --data-dir and credentials, with SPLADE_ES_* environment defaults."""
    options = [
        click.option("--url", envvar="SPLADE_ES_URL", metavar="URL", multiple=True,
                     help="Elasticsearch/OpenSearch URL (env SPLADE_ES_URL). Several nodes of one cluster: repeat "
                          "--url or separate URLs with commas; requests fail over when a node is down. "
                          "Without it: the local engine."),
        click.option("--sniff", envvar="SPLADE_ES_SNIFF", is_flag=True, expose_value=False, callback=_remember_sniff,
                     help="Also send requests to the cluster's other nodes, read from _nodes/http at the start and "
                          "when a node fails (env SPLADE_ES_SNIFF=1)."),
        click.option("--engine", "engine_kind", type=click.Choice(["opensearch", "elasticsearch", "local"]),
                     help="Insist on an engine kind (default: detected from the server)."),
        click.option("--data-dir", envvar="SPLADE_ES_DATA_DIR", type=click.Path(file_okay=False),
                     help="Where the local engine keeps its indices (env SPLADE_ES_DATA_DIR)."),
        click.option("--api-key", envvar="SPLADE_ES_API_KEY",
                     help="API key (env SPLADE_ES_API_KEY; '-' reads it from standard input); never printed."),
        click.option("--username", envvar="SPLADE_ES_USERNAME", help="Basic-auth user (env SPLADE_ES_USERNAME)."),
        click.option("--password", envvar="SPLADE_ES_PASSWORD",
                     help="Basic-auth password (env SPLADE_ES_PASSWORD; '-' reads it from standard input)."),
        click.option("--ca-certs", envvar="SPLADE_ES_CA_CERTS", type=click.Path(dir_okay=False),
                     help="CA bundle to verify the server's certificate (env SPLADE_ES_CA_CERTS)."),
        click.option("--insecure", is_flag=True, help="Skip TLS certificate verification (not recommended)."),
    ]
    return _with(options, command)


def _remember_sniff(context: click.Context, _: click.Parameter, value: bool) -> None:
    """``--sniff`` reaches :func:`open_engine` through the context, so no command repeats it."""
    context.meta[_SNIFF] = value


_SNIFF = "splade_es.sniff"


def _with(options: list[Callable[[F], F]], command: F) -> F:
    """``command`` with ``options`` in the order listed (decorators apply bottom-up)."""
    for option in reversed(options):
        command = option(command)
    return command


def chunk_options(command: F) -> F:
    """``--chunk-tokens`` / ``--chunk-overlap``: long documents in windows instead of cut."""
    command = click.option("--chunk-overlap", type=click.IntRange(min=0), default=0, show_default=True,
                           help="Tokens that neighbouring windows share (with --chunk-tokens).")(command)
    return click.option("--chunk-tokens", type=click.IntRange(min=1),
                        help="Encode a document longer than N tokens in windows of N tokens (overlapping by "
                             "--chunk-overlap) and max-pool the windows into one vector, instead of cutting it "
                             "at the model's max_length; N is at most what one input holds (max_length, less a "
                             "masked LM's [CLS]/[SEP]).")(command)


def chunking(chunk_tokens: int | None, chunk_overlap: int) -> dict[str, int]:
    """The encoder's chunking arguments (none when --chunk-tokens is not given)."""
    if chunk_tokens is None:
        if chunk_overlap:
            raise click.UsageError("--chunk-overlap goes with --chunk-tokens")
        return {}
    if chunk_overlap >= chunk_tokens:  # checked here, before a model loads or an index is created
        raise click.UsageError(f"--chunk-overlap {chunk_overlap} must be less than --chunk-tokens {chunk_tokens}: "
                               "neighbouring windows share fewer tokens than a window holds")
    return {"chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap}


def query_options(command: F) -> F:
    """How queries are encoded and sent (``search``, ``serve``): the model, its pruning, the query form."""
    from splade_es.toolkit.query.forms import DEFAULT_MAX_CLAUSES, FORMS

    options = [
        click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", metavar="PATH_OR_ID",
                     help="Query model (env SPLADE_ES_MODEL). Default: the model recorded in the index."),
        click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model."),
        *_tuned_options(),
        click.option("--query-form", type=click.Choice(FORMS),
                     help="Force a query form (default: the best the engine has)."),
        click.option("--max-clauses", type=click.IntRange(min=1), default=DEFAULT_MAX_CLAUSES, show_default=True,
                     help="Cap on query terms (the engine's boolean clause limit); a longer query keeps its heaviest."),
        click.option("--device", help="Where queries are encoded: cpu, cuda, cuda:N."),
    ]
    return _with(options, command)


def tuned_query_options(command: F) -> F:
    """Query pruning and two-phase search, whose defaults come from the index's tuned record
    (``splade-es tune``) unless ``--no-tuned``: ``search``, ``serve`` and ``eval``."""
    return _with(_tuned_options(), command)


def _tuned_options() -> list[Callable[[F], F]]:
    return [
        click.option("--query-top-k", type=click.IntRange(min=1),
                     help="Keep the K heaviest query terms (default: the index's tuned setting, else the model's)."),
        click.option("--query-min-weight", type=click.FloatRange(min=0),
                     help="Drop query terms lighter than W (default: the index's tuned setting, else the model's)."),
        click.option("--two-phase", type=click.IntRange(min=0), metavar="N",
                     help="Query with the N heaviest terms, then rescore the top --two-phase-window hits with the "
                          "rest (exact scores in the window, much faster for long queries); 0 turns it off "
                          "(default: the index's tuned setting, else off)."),
        click.option("--two-phase-window", type=click.IntRange(min=1),
                     help="Candidates rescored by the second phase (default: the index's tuned setting, else 100)."),
        click.option("--token-pruning", callback=_token_pruning, metavar="FREQ_RATIO,WEIGHT",
                     help="Elasticsearch 8.15+, sparse_vector fields: the engine leaves out the query tokens whose "
                          "document frequency is over FREQ_RATIO times the field's average and whose weight is "
                          "under WEIGHT times the heaviest, then rescores the top --two-phase-window hits with "
                          "them (exact scores there). FREQ_RATIO is a whole number 1-100, WEIGHT 0-1; Elastic's "
                          "defaults: 5,0.4. Takes the place of a tuned two-phase search (not with --two-phase N); "
                          "hybrid lists keep the full query."),
        click.option("--no-tuned", is_flag=True,
                     help="Ignore the settings 'splade-es tune' recorded in the index: the model's pruning, "
                          "no two-phase search, unless flags say otherwise."),
    ]


def _token_pruning(context: click.Context, parameter: click.Parameter, value: str | None) -> TokenPruning | None:
    """``--token-pruning FREQ_RATIO,WEIGHT`` as a :class:`TokenPruning`, refused in one line."""
    from splade_es.toolkit.query.forms import TokenPruning

    if value is None:
        return None
    try:
        return TokenPruning.parse(value)
    except SpladeError as exc:
        raise click.BadParameter(str(exc), context, parameter) from None


def open_engine(url: str | tuple[str, ...] | None, engine_kind: str | None, data_dir: str | None, api_key: str | None,
                username: str | None, password: str | None, ca_certs: str | None, insecure: bool):
    """The engine the options describe; an unreachable one fails here, before any work."""
    return open_engine_with_secrets(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)[0]


def open_engine_with_secrets(url: str | tuple[str, ...] | None, engine_kind: str | None, data_dir: str | None, api_key: str | None,
                             username: str | None, password: str | None, ca_certs: str | None, insecure: bool):
    """:func:`open_engine`, and every credential it was given (a URL's password included), for a
    long-lived command that must mask them in what it sends out."""
    from splade_es.toolkit.engines.connect import connect, resolve_urls, split_all_credentials
    from splade_es.toolkit.engines.credentials import Credentials

    route_warnings()
    api_key, password = _secret("api_key", api_key), _secret("password", password)
    credentials = Credentials(api_key or None, username or None, password or None, ca_certs or None, not insecure)
    secrets = split_all_credentials(resolve_urls(url), credentials)[1].secrets()
    context = click.get_current_context(silent=True)
    sniff = bool(context and context.meta.get(_SNIFF))
    return connect(url, engine_kind, data_dir, credentials, sniff=sniff), secrets


def _secret(name: str, value: str | None) -> str | None:
    """``-`` reads the secret from standard input; one typed on the command line gets a warning,
    since the process list and the shell history show it to anyone on the machine."""
    if value == "-":
        line = click.get_text_stream("stdin").readline().rstrip("\r\n")
        if not line:
            raise click.UsageError(f"--{name.replace('_', '-')} -: standard input held no value")
        return line
    context = click.get_current_context(silent=True)
    if value and context is not None and context.get_parameter_source(name) == ParameterSource.COMMANDLINE:
        logging.getLogger("splade_es").warning(
            "--%s on the command line is visible in the process list and shell history: set SPLADE_ES_%s "
            "instead, or pass '-' to read it from standard input", name.replace("_", "-"), name.upper())
    return value


def load_encoder(model: str, adapter: str | None = None, device: str | None = None):
    """The sparse encoder for a command, with library chatter silenced."""
    quiet_libraries()
    from splade_es.model.encoder import SparseEncoder

    return SparseEncoder.from_pretrained(model, adapter=adapter, device=device)


class _StderrHandler(logging.Handler):
    """Writes to whatever stderr is current (click resolves it per call)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def route_warnings() -> None:
    """Our own warnings (a capped query, a fallback, a node down) reach stderr as one ``warning:`` line each."""
    from splade_es.toolkit.engines.pool import quiet_client_logs

    quiet_client_logs()
    logger = logging.getLogger("splade_es")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
