"""A sentence-transformers module that applies a head saved by influcoder, so that a distilled
encoder directory loads with ``SentenceTransformer(path, trust_remote_code=True)``.

This file is copied as it is into such a directory (``modules.json`` names it
``influcoder_head.InflucoderHead``) and needs only torch and safetensors, not influcoder. It
computes what :class:`influcoder.encoders.heads.SavedHead` computes: the pooled embedding scaled
to unit length, then ``x @ weight.T + bias`` (linear) or ``exp(-gamma ||x - anchors||^2) @ coef
+ bias`` (kernel, in float64), then unit length again unless the similarity is ``dot``.
"""

from __future__ import annotations

import json
import os

import torch

CONFIG_FILE, TENSORS_FILE = "influcoder_head.json", "head.safetensors"


class InflucoderHead(torch.nn.Module):
    def __init__(self, kind: str, tensors: dict, gamma: float | None, similarity: str):
        super().__init__()
        if kind not in ("linear", "kernel") or similarity not in ("cosine", "dot"):
            raise ValueError(f"unknown head kind {kind!r} or similarity {similarity!r}")
        self.kind, self.gamma, self.similarity = kind, gamma, similarity
        for name, value in tensors.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

    def forward(self, features: dict) -> dict:
        x = torch.nn.functional.normalize(features["sentence_embedding"].float(), dim=1)
        if self.kind == "linear":
            out = x @ self.weight.T + self.bias
        else:
            x, anchors = x.double(), self.anchors.double()
            sq = (x * x).sum(1)[:, None] + (anchors * anchors).sum(1)[None, :] - 2 * x @ anchors.T
            kernel = torch.exp(-self.gamma * sq.clamp(min=0.0))
            out = (kernel @ self.coef.double() + self.bias.double()).float()
        if self.similarity == "cosine":
            out = torch.nn.functional.normalize(out, dim=1)
        return {**features, "sentence_embedding": out}

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.bias.shape[0])

    def save(self, output_path: str, *args, **kwargs) -> None:
        from safetensors.torch import save_file

        os.makedirs(output_path, exist_ok=True)
        names = ("weight", "bias") if self.kind == "linear" else ("anchors", "coef", "bias")
        save_file(
            {n: getattr(self, n).detach().cpu().contiguous() for n in names},
            os.path.join(output_path, TENSORS_FILE),
        )
        config = {"kind": self.kind, "gamma": self.gamma, "similarity": self.similarity}
        with open(os.path.join(output_path, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> InflucoderHead:
        from safetensors.torch import load_file

        def path(name: str) -> str:
            local = os.path.join(model_name_or_path, subfolder, name)
            if os.path.isdir(model_name_or_path):
                return local
            from huggingface_hub import hf_hub_download

            hub = {k: kwargs.get(k) for k in ("revision", "token", "cache_folder")}
            return hf_hub_download(
                model_name_or_path,
                name,
                subfolder=subfolder or None,
                revision=hub["revision"],
                token=hub["token"],
                cache_dir=hub["cache_folder"],
            )

        with open(path(CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
        return cls(
            config["kind"], load_file(path(TENSORS_FILE)), config["gamma"], config["similarity"]
        )
