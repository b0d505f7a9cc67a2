"""One fused forward pass for BERT sentence encoders: the ``bf16`` backend's fast path.

:class:`FusedBert` runs a ``BertModel`` plus mean pooling (all-MiniLM, BGE, E5 and every
encoder distilled from them) as straight tensor code on the same weights: one QKV product per
layer, scaled-dot-product attention with an additive padding mask, exact GELU, post-layer-norm
residuals, mean pooling over the mask. :func:`why_not_fusable` says whether an encoder has
exactly this shape; anything else keeps the sentence-transformers modules. Being a second
forward pass to keep in step with transformers, it is checked against sentence-transformers'
own output by the tests; docs/ATTRIBUTION.md says why it is kept (its speed against the module
tree, ``torch.compile`` and ONNX Runtime).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def why_not_fusable(model) -> str | None:
    """Why :class:`FusedBert` would not compute exactly what the sentence-transformers
    ``model`` does, or None when it would (the model can be fused)."""
    from transformers import BertModel

    names = [type(m).__name__ for m in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"modules {names} are not Transformer, Pooling[, Normalize]"
    hf = getattr(model[0], "auto_model", None)
    if not isinstance(hf, BertModel):
        return f"the transformer is a {type(hf).__name__}, not a BertModel"
    config = hf.config
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position embeddings are {config.position_embedding_type!r}"
    if config.hidden_act != "gelu" or config.is_decoder or config.add_cross_attention:
        return "not a plain encoder with exact GELU"
    if getattr(model[1], "pooling_mode", None) != "mean":
        return f"pooling is {getattr(model[1], 'pooling_mode', None)!r}, not 'mean'"
    return None


class FusedBert:
    """Token ids -> mean-pooled last hidden states (``float32``, not normalised) of a BERT
    sentence encoder, in ``dtype``.

    Args:
        model: a sentence-transformers model for which :func:`why_not_fusable` returns None.
        dtype: the dtype of weights and activations (``torch.bfloat16`` for speed).
    """

    def __init__(self, model, dtype: torch.dtype = torch.bfloat16):
        reason = why_not_fusable(model)
        if reason is not None:
            raise ValueError(f"cannot fuse this encoder: {reason}")
        hf = model[0].auto_model
        config = hf.config
        self.heads = config.num_attention_heads
        self.eps = config.layer_norm_eps
        self.device = hf.device

        def own(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dtype=dtype).clone()

        emb = hf.embeddings
        self.word = own(emb.word_embeddings.weight)
        self.position = own(emb.position_embeddings.weight)
        self.token_type = own(emb.token_type_embeddings.weight)
        self.emb_norm = (own(emb.LayerNorm.weight), own(emb.LayerNorm.bias))
        self.layers = []
        for layer in hf.encoder.layer:
            att = layer.attention
            qkv = [att.self.query, att.self.key, att.self.value]
            self.layers.append(
                (
                    own(torch.cat([m.weight for m in qkv])),
                    own(torch.cat([m.bias for m in qkv])),
                    own(att.output.dense.weight),
                    own(att.output.dense.bias),
                    own(att.output.LayerNorm.weight),
                    own(att.output.LayerNorm.bias),
                    own(layer.intermediate.dense.weight),
                    own(layer.intermediate.dense.bias),
                    own(layer.output.dense.weight),
                    own(layer.output.dense.bias),
                    own(layer.output.LayerNorm.weight),
                    own(layer.output.LayerNorm.bias),
                )
            )

    @torch.inference_mode()
    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        batch, length = input_ids.shape
        hidden = self.word.shape[1]
        heads, eps = self.heads, self.eps
        x = F.embedding(input_ids, self.word) + self.position[:length]
        if token_type_ids is None:
            x = x + self.token_type[0]
        else:
            x = x + F.embedding(token_type_ids.to(self.device), self.token_type)
        x = F.layer_norm(x, (hidden,), *self.emb_norm, eps)
        keep = attention_mask.bool()
        mask = None
        if not bool(keep.all()):
            mask = torch.zeros((batch, 1, 1, length), dtype=x.dtype, device=x.device)
            mask.masked_fill_(~keep[:, None, None, :], torch.finfo(x.dtype).min)
        for (
            qkv_w,
            qkv_b,
            out_w,
            out_b,
            norm1_w,
            norm1_b,
            up_w,
            up_b,
            down_w,
            down_b,
            norm2_w,
            norm2_b,
        ) in self.layers:
            q, k, v = (
                F.linear(x, qkv_w, qkv_b)
                .view(batch, length, 3, heads, hidden // heads)
                .permute(2, 0, 3, 1, 4)
            )
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            att = att.transpose(1, 2).reshape(batch, length, hidden)
            x = F.layer_norm(F.linear(att, out_w, out_b) + x, (hidden,), norm1_w, norm1_b, eps)
            up = F.gelu(F.linear(x, up_w, up_b))
            x = F.layer_norm(F.linear(up, down_w, down_b) + x, (hidden,), norm2_w, norm2_b, eps)
        weights = keep.unsqueeze(-1).float()
        return (x.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
