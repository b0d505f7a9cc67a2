"""Settings of the encoder layer: the bundled encoder, the inference back ends, how vectors are
compared. Importing this module is cheap (no torch): the CLI reads its choices from here.
"""

from __future__ import annotations

from typing import Literal, get_args

DEFAULT_ENCODER = "all-minilm-l6-v2"

#: The card a distilled encoder's directory holds (settings, ground truth, head, fidelity);
#: :mod:`influcoder.distillation.trainer` writes it.
CARD_NAME = "influcoder_distill.json"

#: Encoder inference back ends (see :mod:`influcoder.encoders.backends`).
Backend = Literal["auto", "torch", "bf16", "onnx", "int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)

#: Texts per encoder forward pass.
DEFAULT_BATCH_SIZE = 32

#: How an encoder's vectors are compared: ``cosine`` (unit vectors, the default) or ``dot``
#: (the vectors as the encoder emits them, e.g. a linear head's, whose lengths carry how sure
#: it is; see docs/DISTILLATION.md). sentence-transformers records it as
#: ``similarity_fn_name`` in ``config_sentence_transformers.json``.
SIMILARITIES = ("cosine", "dot")
