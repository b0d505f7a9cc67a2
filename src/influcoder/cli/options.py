"""Option helpers shared by the ``influcoder`` commands, and the one error handler."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import types
import typing

import click

from influcoder.engines import ENGINES
from influcoder.errors import InflucoderError


class RenamedChoice(click.Choice):
    """A choice whose former values (``renamed``: old -> new) are refused with the new name."""

    def __init__(self, choices, renamed: dict[str, str]):
        super().__init__(choices)
        self.renamed = renamed

    def convert(self, value, param, ctx):
        if value in self.renamed:
            self.fail(f"{value!r} is now called {self.renamed[value]!r}", param, ctx)
        return super().convert(value, param, ctx)


def _click_type(hint, renamed: dict[str, str] | None = None):
    """The click type of a one-value setting: a choice for a ``Literal`` (a closed set, checked
    by click; former values in ``renamed`` refused with their new name), the type itself for a
    plain one (``int | None`` gives ``int``), else ``str``."""
    if typing.get_origin(hint) is typing.Literal:
        choices = [str(a) for a in typing.get_args(hint)]
        return RenamedChoice(choices, renamed) if renamed else click.Choice(choices)
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return base[0] if isinstance(base[0], type) and base[0] is not types.NoneType else str


def dataclass_options(cls, exclude: tuple[str, ...] = ()):
    """Click options generated from a settings dataclass: ``--field-name``, with the field's
    default and its ``metadata['help']``. Values left at their default are not passed on."""
    hints = typing.get_type_hints(cls)

    def decorate(f):
        for fld in reversed(dataclasses.fields(cls)):
            if fld.name in exclude:
                continue
            hint = hints[fld.name]
            flag = "--" + fld.name.replace("_", "-")
            help_ = fld.metadata.get("help", "")
            default = fld.default
            if hint is bool:
                opt = click.option(
                    f"{flag}/--no-{flag[2:]}",
                    fld.name,
                    default=None,
                    help=f"{help_} [default: {'on' if default else 'off'}]",
                )
            elif typing.get_origin(hint) is tuple:
                opt = click.option(
                    flag,
                    fld.name,
                    default=None,
                    metavar="A,B,...",
                    help=f"{help_} [default: {','.join(map(str, fld.default))}]",
                )
            else:
                shown = "" if "[default:" in help_ else f" [default: {default}]"
                opt = click.option(
                    flag,
                    fld.name,
                    default=None,
                    type=_click_type(hint, fld.metadata.get("renamed")),
                    help=help_ + shown,
                )
            f = opt(f)
        return f

    return decorate


def settings_from(cls, values: dict):
    """Build ``cls`` from the options that were given (None = not given)."""
    given = {}
    for fld in dataclasses.fields(cls):
        v = values.get(fld.name)
        if v is None:
            continue
        if isinstance(fld.default, tuple) and isinstance(v, str):
            v = tuple(x.strip() for x in v.split(",") if x.strip())
        given[fld.name] = v
    try:
        return cls(**given)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def field_options(f):
    """Options naming the fields of the input data."""
    f = click.option("--limit", type=int, default=None, help="read only the first N samples")(f)
    f = click.option(
        "--messages-field",
        default="messages",
        show_default=True,
        help="field with chat messages (the last assistant turn is the response)",
    )(f)
    f = click.option(
        "--id-field",
        default="id",
        show_default=True,
        help="field with a sample id (missing ids are derived from the content)",
    )(f)
    f = click.option("--response-field", default="response", show_default=True)(f)
    f = click.option("--prompt-field", default="prompt", show_default=True)(f)
    return f


def fields_from(kw: dict):
    from influcoder.io.samples import Fields

    return Fields(
        prompt=kw.pop("prompt_field"),
        response=kw.pop("response_field"),
        id=kw.pop("id_field"),
        messages=kw.pop("messages_field"),
    )


def engine_options(f):
    """Where the parallel stages run: --engine, --ray-address, --num-workers."""
    f = click.option(
        "--num-workers",
        type=int,
        default=None,
        help="Ray actors (default: one per free CPU of the cluster)",
    )(f)
    f = click.option(
        "--ray-address",
        default=None,
        help="join this Ray cluster ('auto', 'ray://head:10001'); default with "
        "--engine ray: start a local Ray instance for the run",
    )(f)
    f = click.option(
        "--engine",
        type=click.Choice(ENGINES),
        default="local",
        show_default=True,
        help="compute shards here, or on Ray workers (needs influcoder[ray])",
    )(f)
    return f


def device_option(f=None, *, default: str | None = None, extra: str = ""):
    """``--device auto|cpu|cuda|cuda:N`` (:mod:`influcoder.io.devices`), checked as it is
    parsed; whether the machine has that device is checked when the model is loaded."""
    from influcoder.io.devices import (
        DEFAULT_DEVICE,
        DEVICE_HELP,
        DeviceError,
        check_device,
    )

    def check(ctx, param, value):
        try:
            return check_device(value)
        except DeviceError as e:
            raise click.BadParameter(f"{value!r}: " + str(e).split(": ", 1)[1]) from None

    def decorate(g):
        return click.option(
            "--device",
            default=default or DEFAULT_DEVICE,
            show_default=True,
            callback=check,
            metavar="auto|cpu|cuda|cuda:N",
            help=DEVICE_HELP + extra,
        )(g)

    return decorate(f) if f is not None else decorate


#: ``--baselines``: the methods ``evaluate``, ``validate`` and ``lds`` run beside the others.
BASELINES_HELP = (
    "baselines as methods, comma separated (random, tfidf, bm25; repsim, repsim-layers: the "
    "decoder's own representations, DATE-LM's Rep-Sim, last or every layer), or 'none'"
)


def query_gradients_option(help: str):
    """``--query-gradients STORE``: each query's own gradient, taken like the gradient store
    STORE (:mod:`influcoder.attribution.query_gradients`)."""
    return click.option(
        "--query-gradients",
        metavar="STORE",
        type=click.Path(exists=True, file_okay=False),
        default=None,
        help=help,
    )


def dry_run_option(f):
    """``--dry-run``: the estimate of a store-filling command instead of the command."""
    return click.option(
        "--dry-run",
        is_flag=True,
        help="write nothing: load the model, time a few samples with these "
        "settings and print the expected time, peak memory and storage "
        "for the whole data set",
    )(f)


def print_estimate(estimate, engine: str = "local") -> None:
    if engine != "local":
        estimate.notes.append(
            f"timed in this process, not on --engine {engine}'s workers: "
            "divide the rows' time by the number of workers"
        )
    for line in estimate.lines():
        click.echo(line)


@contextlib.contextmanager
def quieted(quiet: bool = True):
    """With ``quiet``, no progress bar (ours, transformers' model loading and GGUF conversion,
    huggingface_hub's) and no stage line (warm-up, resumes) for the duration; the libraries'
    settings are restored afterwards. The result lines of a command still print."""
    if not quiet:
        yield
        return
    ours = logging.getLogger("influcoder")
    level = ours.level
    restore = []
    try:
        ours.setLevel(logging.WARNING)
        with contextlib.suppress(ImportError):
            from huggingface_hub import utils as hub_utils

            if not hub_utils.are_progress_bars_disabled():  # restored last, as it was
                hub_utils.disable_progress_bars()
                restore.append(hub_utils.enable_progress_bars)
        with contextlib.suppress(ImportError):
            from transformers.utils import logging as hf_logging

            if hf_logging.is_progress_bar_enabled():
                hf_logging.disable_progress_bar()  # huggingface_hub's bars too
                restore.append(hf_logging.enable_progress_bar)
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            restore.append(functools.partial(hf_logging.set_verbosity, verbosity))
            # the GGUF conversion bar is a bare tqdm; transformers' own tqdm obeys the switch
            from transformers import modeling_gguf_pytorch_utils as gguf

            bare = gguf.tqdm
            gguf.tqdm = hf_logging.tqdm
            restore.append(functools.partial(setattr, gguf, "tqdm", bare))
        yield
    finally:
        ours.setLevel(level)
        for undo in reversed(restore):
            undo()


def handle_errors(f):
    """Prints an :class:`InflucoderError` as one clean line (exit status 2); a command's
    ``quiet`` flag runs it :func:`quieted`."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            with quieted(bool(kwargs.get("quiet"))):
                return f(*args, **kwargs)
        except InflucoderError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


def log(msg: str) -> None:
    click.echo(msg, err=True)


def parse_named(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``NAME=VALUE`` option values as a dict, refusing malformed or repeated names."""
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=option)
        if name.strip() in out:
            raise click.BadParameter(f"the name {name.strip()!r} is used twice", param_hint=option)
        out[name.strip()] = rest.strip()
    return out


#: ``--method`` of evaluate and lds: two stores and, optionally, how they are compared.
STORE_METHOD_METAVAR = "NAME=POOL,QUERIES[,inner]"


def parse_store_methods(
    values: tuple[str, ...], option: str = "--method"
) -> dict[str, tuple[str, str, str]]:
    """``NAME=POOL,QUERIES[,SIMILARITY]`` values as name -> (pool, queries, similarity), the
    similarity ``cosine`` (the default) or ``inner`` (gradients before normalisation)."""
    from influcoder.similarity import SIMILARITIES

    out = {}
    for name, value in parse_named(values, option).items():
        parts = [p.strip() for p in value.split(",")]
        if len(parts) == 2:
            parts.append("cosine")
        if len(parts) != 3 or not all(parts) or parts[2] not in SIMILARITIES:
            raise click.BadParameter(
                f"{name}: expected NAME=POOL_STORE,QUERY_STORE or NAME=POOL_STORE,QUERY_STORE,"
                f"SIMILARITY with SIMILARITY one of {', '.join(SIMILARITIES)}; got {value!r}",
                param_hint=option,
            )
        out[name] = tuple(parts)
    return out


def split_list(value: str) -> list[str]:
    return (
        []
        if value.strip().lower() == "none"
        else [x.strip() for x in value.split(",") if x.strip()]
    )


def encoder_options(f):
    """How embeddings are made; left unset, a new store or index gets the defaults and an
    existing one keeps its own."""
    from influcoder.attribution.settings import STORAGE_DTYPES, EncodeArguments
    from influcoder.encoders.settings import BACKENDS

    default = EncodeArguments()
    f = click.option(
        "--shard-rows",
        type=int,
        default=None,
        help=f"rows per store shard, the unit of resumption [default: {default.shard_rows}]",
    )(f)
    f = click.option(
        "--batch-size",
        type=int,
        default=None,
        help=f"texts per batch [default: {default.batch_size}]",
    )(f)
    f = click.option(
        "--max-seq-length",
        type=int,
        default=None,
        help="tokens per text, longer ones are cut [default: the encoder's own]",
    )(f)
    f = click.option(
        "--dtype",
        type=click.Choice(STORAGE_DTYPES),
        default=None,
        help=f"stored dtype; int8 scales each row to +-127 [default: {default.dtype}]",
    )(f)
    f = click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default=None,
        help=f"encoder inference: torch (float32 reference), bf16, onnx, int8; auto "
        f"= bf16 where the CPU has bf16 units, else torch "
        f"[default: {default.backend}]",
    )(f)
    return f


#: ``-e NAME=ENCODER``, repeatable: a sentence encoder as a method (validate, lds).
encoder_methods_option = click.option(
    "--encoder",
    "-e",
    "encoders",
    multiple=True,
    metavar="NAME=ENCODER",
    help="a sentence encoder (directory or bundled name) as a method; repeatable",
)
