"""Settings of the ground-truth stage: every default and every choice, defined once.

The CLI builds its options and help text from :class:`CollectArguments` (its fields' metadata)
and from the choice tuples here, so a default or a choice is never typed twice. Importing this
module is cheap (no torch): the CLI reads it before it knows which command runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from influcoder.io.devices import PRECISIONS
from influcoder.io.layout import DEFAULT_SHARD_ROWS

DEFAULT_DECODER = "smollm2-135m"
DEFAULT_SKETCH_DIM = 8192
DEFAULT_SKETCH_SEED = 0
DEFAULT_LORA_RANK = 8
DEFAULT_LORA_ALPHA = 16
DEFAULT_MAX_LENGTH = 512
# Padded positions per forward/backward pass. On a CPU a batch buys no throughput once it has
# a few hundred positions (the matrix products are already efficient) and bigger ones run the
# element-wise work out of the caches: measured on SmolLM2-135M, see docs/GROUND_TRUTH.md.
DEFAULT_BATCH_TOKENS = 1024
DEFAULT_BATCH_SIZE = 64
# LoRA targets: every linear projection of the attention and MLP blocks of Llama-like models.
# Embeddings and the LM head are never targets.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: ``--lora-targets auto``: the attention and MLP projections of the model's own architecture,
#: found from its Linear modules' names (:func:`influcoder.groundtruth.lora_targets.find_lora_targets`).
AUTO_LORA_TARGETS = ("auto",)

#: ``--lora-layers``: every transformer block gets LoRA.
ALL_LORA_LAYERS = "all"

AdapterInit = Literal["warmup", "fresh"]
Truncation = Literal["prompt-left", "right", "error"]
Template = Literal["auto", "chat", "plain"]
GradientDtype = Literal["float16", "float32"]
#: Which weights' gradients: the LoRA A and B matrices, B only (a fresh adapter), or every
#: linear weight (for verification).
GradientTarget = Literal["lora", "lora-b", "full"]
#: Per-sample gradients as they are ('none'), divided by sqrt(v) + eps, v the Adam
#: second moments of the adapter's training ('adam': LESS, TrackStar), or multiplied by the
#: damped inverse roots of each module's K-FAC factors ('kfac': Kronfluence, Bergson).
Precondition = Literal["none", "adam", "kfac"]

ADAPTER_INITS: tuple[str, ...] = get_args(AdapterInit)

#: ``adapter_init`` of a run given an ``--adapter``: set for it, never chosen.
GIVEN_ADAPTER = "given"
TRUNCATION_POLICIES: tuple[str, ...] = get_args(Truncation)
TEMPLATES: tuple[str, ...] = get_args(Template)
GRADIENT_DTYPES: tuple[str, ...] = get_args(GradientDtype)
GRADIENT_TARGETS: tuple[str, ...] = get_args(GradientTarget)
PRECONDITIONS: tuple[str, ...] = get_args(Precondition)


@dataclass
class CollectArguments:
    """How ground-truth gradient vectors are taken (``influcoder collect``)."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "decoder: 'smollm2-135m' (bundled), an HF model directory (a merged checkpoint "
            "is one), a .gguf file, a hub id, or a PEFT adapter directory (then its base "
            "model, and it is the --adapter) [default: the --adapter's base model, else "
            "smollm2-135m]"
        },
    )
    adapter: str | None = field(
        default=None,
        metadata={
            "help": "a PEFT LoRA adapter directory (the model you fine-tuned); its base model comes "
            "from its adapter_config.json unless --model is given; overrides adapter_init"
        },
    )
    adapter_init: str = field(
        default="warmup",
        metadata={
            "help": "without --adapter: 'warmup' (a short seeded LoRA warm-up on the data, as LESS "
            "does: the model has then seen the data, as a fine-tuned one has; measured far "
            "better at finding planted harmful samples) or 'fresh' (a seeded untrained "
            "adapter: B = 0, so only the B-gradients, a random low-rank view of the base "
            "model's full weight gradients, carry signal). See docs/GROUND_TRUTH.md"
        },
    )
    warmup_steps: int = field(default=24, metadata={"help": "warm-up optimizer steps"})
    warmup_lr: float = field(default=2e-4, metadata={"help": "warm-up AdamW learning rate"})
    warmup_batch_size: int = field(default=8, metadata={"help": "samples per warm-up step"})
    lora_rank: int = field(default=DEFAULT_LORA_RANK, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=DEFAULT_LORA_ALPHA, metadata={"help": "LoRA alpha"})
    lora_targets: tuple[str, ...] = field(
        default=DEFAULT_LORA_TARGETS,
        metadata={
            "help": "module name suffixes that get LoRA (never embeddings or the LM head), or "
            "'auto': the attention and MLP projections of the model's architecture (Llama, "
            "Qwen2, Mistral, Gemma, Phi, GPT-NeoX naming), recorded resolved in the store"
        },
    )
    lora_layers: str = field(
        default=ALL_LORA_LAYERS,
        metadata={
            "help": "which transformer blocks get LoRA (and so gradients): 'all', 'last:N' (the "
            "last N blocks), or 0-based indices and inclusive ranges, e.g. '0-3,10'; "
            "recorded resolved in the store. Not with --adapter (its own config decides)"
        },
    )
    precondition: str = field(
        default="none",
        metadata={
            "help": "'adam' divides each per-sample gradient elementwise by sqrt(v) + eps before "
            "sketching (LESS, TrackStar), v the warm-up AdamW's bias-corrected second "
            "moments; without a warm-up (--adapter, a fresh adapter) v is the mean squared "
            "mini-batch gradient over a seeded sample of the data. Saved beside the "
            "store's adapter, so --like stores use the same v. 'kfac' turns each module's "
            "gradient G into S^-1/2 G A^-1/2, A and S its K-FAC factors (input and output-"
            "gradient covariances over a seeded sample of the data, damped): inner products "
            "are then influence functions with the K-FAC Fisher (Kronfluence, Bergson). "
            "'none': plain gradients"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the adapter and the warm-up"})
    sketch_dim: int = field(
        default=DEFAULT_SKETCH_DIM,
        metadata={"help": "CountSketch dimension; 0 stores the raw gradient (for verification)"},
    )
    sketch_seed: int = field(default=DEFAULT_SKETCH_SEED, metadata={"help": "CountSketch seed"})
    max_length: int = field(default=DEFAULT_MAX_LENGTH, metadata={"help": "tokens per sample"})
    truncation: str = field(
        default="prompt-left",
        metadata={
            "help": "over-long samples: 'prompt-left' drops prompt tokens first, 'right' cuts the "
            "end, 'error' refuses"
        },
    )
    template: str = field(
        default="auto",
        metadata={
            "help": "'chat' (the model's chat template), 'plain' (prompt, newline, response, EOS) "
            "or 'auto' (chat where the tokenizer has one)"
        },
    )
    bf16: bool = field(
        default=False,
        metadata={
            "help": "bf16 autocast for forward/backward (the same as --precision bf16; for float32 "
            "give --precision fp32)"
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "forward/backward precision: bf16 (autocast), fp32, or auto (a resumed or "
            "--like store's own, else bf16 on a GPU, fp32 on a CPU: there bf16 ranked "
            "short answers' gradients unlike fp32; bf16 is 1.5-1.7x faster on CPUs with "
            "native bf16 and fine for long answers, see docs/GROUND_TRUTH.md)"
        },
    )
    batch_tokens: int = field(
        default=DEFAULT_BATCH_TOKENS,
        metadata={
            "help": "padded token positions per forward/backward (samples sorted by length; the "
            "warm-up's steps are accumulated over such micro-batches): bounds memory "
            "whatever the lengths; halved on a GPU out-of-memory. Raise it on a GPU"
        },
    )
    batch_size: int = field(
        default=DEFAULT_BATCH_SIZE,
        metadata={
            "help": "most samples per forward/backward (a cap; --batch-tokens sizes batches)"
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "recompute each decoder layer's activations in the backward pass: less "
            "memory, more time, the same gradients"
        },
    )
    dtype: str = field(default="float16", metadata={"help": "stored dtype: float16 or float32"})
    shard_rows: int = field(
        default=DEFAULT_SHARD_ROWS,
        metadata={"help": "rows per store shard (the unit of resumption)"},
    )

    def __post_init__(self):
        # one target given as a string is that target ('auto' too), never its letters
        self.lora_targets = (
            (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)
        )
        self.model, self.adapter = resolve_model_and_adapter(self.model, self.adapter)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.bf16 and self.precision == "fp32":
            raise ValueError("bf16 and precision 'fp32' contradict each other; give one")
        if self.adapter is not None:
            self._describe_given_adapter()
        elif self.adapter_init == GIVEN_ADAPTER:
            raise ValueError("adapter_init 'given' stands for an adapter; give one")
        if self.adapter_init not in (*ADAPTER_INITS, GIVEN_ADAPTER):
            raise ValueError(
                f"adapter_init must be one of {ADAPTER_INITS}, got {self.adapter_init!r}"
            )
        if self.precondition not in PRECONDITIONS:
            raise ValueError(
                f"precondition must be one of {PRECONDITIONS}, got {self.precondition!r}"
            )
        if self.truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}")
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}")
        if self.dtype not in GRADIENT_DTYPES:
            raise ValueError(f"dtype must be one of {GRADIENT_DTYPES}")
        for name in (
            "lora_rank",
            "lora_alpha",
            "max_length",
            "batch_size",
            "batch_tokens",
            "shard_rows",
            "warmup_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.sketch_dim < 0 or self.warmup_steps < 0 or self.warmup_lr <= 0:
            raise ValueError("sketch_dim and warmup_steps must be >= 0, warmup_lr > 0")
        if "auto" in self.lora_targets and self.lora_targets != AUTO_LORA_TARGETS:
            raise ValueError(f"lora_targets 'auto' stands alone, got {list(self.lora_targets)}")
        resolve_lora_layers(self.lora_layers, None)
        if self.adapter is not None and self.lora_layers != ALL_LORA_LAYERS:
            raise ValueError(
                "lora_layers: a given adapter's own config says which layers it "
                f"adapts; drop lora_layers {self.lora_layers!r} or the adapter"
            )
        bad = [t for t in self.lora_targets if "embed" in t or "lm_head" in t]
        if bad:
            raise ValueError(f"LoRA targets may not include embeddings or the LM head: {bad}")

    def _describe_given_adapter(self) -> None:
        """With an adapter, the settings say what it is (its own targets, rank and alpha from
        its adapter_config.json, ``adapter_init`` 'given'), not the defaults it overrides; an
        unreadable config is left to the loading to refuse, by name."""
        self.adapter_init = GIVEN_ADAPTER
        try:
            config = read_adapter_config(self.adapter)
        except ValueError:
            return
        targets = config.get("target_modules")
        if isinstance(targets, str):
            self.lora_targets = (targets,)
        elif isinstance(targets, list) and targets:
            self.lora_targets = tuple(sorted(str(t) for t in targets))
        for key, name in (("r", "lora_rank"), ("lora_alpha", "lora_alpha")):
            value = config.get(key)
            if isinstance(value, (int, float)) and value == int(value) and value >= 1:
                setattr(self, name, int(value))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d


def resolve_lora_layers(spec: str, n_layers: int | None) -> list[int] | None:
    """The block indices ``spec`` (:attr:`CollectArguments.lora_layers`) names, sorted; None for
    ``all``. With ``n_layers`` None only the syntax is checked (and ``last:N`` is not
    resolved). ``ValueError`` names what is wrong."""
    spec = spec.strip()
    if spec == ALL_LORA_LAYERS:
        return None
    what = f"lora_layers must be 'all', 'last:N' or indices and ranges like '0-3,10', got {spec!r}"
    if spec.startswith("last:"):
        count = spec[len("last:") :]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(what)
        if n_layers is None:
            return None
        if int(count) > n_layers:
            raise ValueError(f"lora_layers {spec!r}: the model has {n_layers} layers")
        return list(range(n_layers - int(count), n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(what)
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo:
            raise ValueError(f"lora_layers {spec!r}: the range {part.strip()!r} is empty")
        layers.update(range(lo, hi + 1))
    if n_layers is not None and max(layers) >= n_layers:
        raise ValueError(
            f"lora_layers {spec!r}: the model has {n_layers} layers (0 to {n_layers - 1})"
        )
    return sorted(layers)


def read_adapter_config(adapter: str) -> dict:
    """A PEFT adapter directory's ``adapter_config.json``; a ValueError naming the file when
    there is none or it is not a readable JSON object."""
    import json
    from pathlib import Path

    path = Path(adapter, "adapter_config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{adapter}: not a PEFT adapter directory (no adapter_config.json)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    return config if isinstance(config, dict) else {}


def read_adapter_base(adapter: str) -> str | None:
    """``base_model_name_or_path`` of a PEFT adapter directory's ``adapter_config.json``."""
    base = read_adapter_config(adapter).get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None


def absolute_local(name: str | None) -> str | None:
    """``name`` as an absolute path where it names an existing local file or folder (so a
    store's manifest names it from anywhere); a bundled alias or hub id as it is."""
    from pathlib import Path

    if name is None:
        return None
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _is_adapter_dir(path: str) -> bool:
    from pathlib import Path

    folder = Path(path)
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def resolve_model_and_adapter(model: str | None, adapter: str | None) -> tuple[str, str | None]:
    """The decoder and adapter a run uses, from what was given.

    ``model`` may be a PEFT adapter directory (it then is the adapter, and its base the
    model). Without a model, the adapter's ``base_model_name_or_path`` is the model, and
    without an adapter the bundled decoder. Given both, ``model`` wins; a different base in
    the adapter's config is warned about (a local copy of the same model is named otherwise).
    """
    import logging

    model, adapter = absolute_local(model), absolute_local(adapter)
    if model is not None and _is_adapter_dir(model):
        if adapter is not None:
            raise ValueError(
                f"model {model!r} is a PEFT adapter directory and an adapter "
                f"({adapter!r}) is given too; pass the base model as model"
            )
        model, adapter = None, model
    if adapter is None:
        return model or DEFAULT_DECODER, None
    if model is not None:
        # best effort: a store being resumed keeps its adapter, wherever the original went
        from pathlib import Path

        if Path(adapter, "adapter_config.json").is_file():
            base = read_adapter_base(adapter)
            if base is not None and base != model:
                logging.getLogger(__name__).warning(
                    f"the adapter {adapter} was trained on '{base}' (its adapter_config.json); "
                    f"using --model '{model}' as its base"
                )
        return model, adapter
    base = read_adapter_base(adapter)
    if base is None:
        raise ValueError(
            f"{adapter}/adapter_config.json names no base_model_name_or_path; "
            f"give the base model with --model"
        )
    from pathlib import Path

    if base.startswith(("/", ".", "~")) and not Path(base).expanduser().exists():
        raise ValueError(
            f"{adapter}/adapter_config.json names the base model {base!r} "
            f"(base_model_name_or_path), which does not exist here; give the base model "
            f"with --model"
        )
    return absolute_local(base), adapter
