"""Freezing the encoder's lower layers during distillation (``--freeze-layers N``).

With the embeddings and the first ``N`` transformer layers frozen, autograd stops below layer
``N``: the backward pass skips those layers altogether (neither weight nor activation
gradients), so a step costs about ``1 + 2 (L - N) / L`` forward passes instead of 3. The
frozen weights are saved unchanged with the rest.
"""

from __future__ import annotations

from torch import nn


def transformer_layers(encoder) -> tuple[nn.Module, nn.ModuleList]:
    """``(embeddings, layers)`` of a sentence-transformers encoder's first module: its
    embedding block and its list of ``num_hidden_layers`` transformer layers."""
    model = getattr(encoder[0], "auto_model", None)
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if model is None or not isinstance(count, int):
        raise ValueError(
            "freeze_layers needs a transformer encoder (a sentence-transformers "
            "Transformer module whose config has num_hidden_layers)"
        )
    layers = next(
        (m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count), None
    )
    if layers is None:
        raise ValueError(
            f"found no list of the {count} transformer layers in {type(model).__name__}"
        )
    embeddings = getattr(model, "embeddings", None) or model.get_input_embeddings()
    return embeddings, layers


class frozen_layers:
    """Context manager: ``requires_grad`` off for the embeddings and the first ``n`` layers
    (``n = 0``: nothing), restored on exit."""

    def __init__(self, encoder, n: int):
        self.params = []
        if n:
            embeddings, layers = transformer_layers(encoder)
            if n > len(layers):
                raise ValueError(f"freeze_layers={n}, but the encoder has {len(layers)} layers")
            self.params = [p for module in (embeddings, *layers[:n]) for p in module.parameters()]

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for p, flag in zip(self.params, self.flags):
            p.requires_grad_(flag)
        return False
