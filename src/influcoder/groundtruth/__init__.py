"""Ground truth (stage 1, offline): per-sample gradients of the response-only loss with respect
to LoRA adapter weights, CountSketched and L2-normalised; influence = cosine.

``settings`` (defaults, choices, :class:`CollectArguments`), ``decoder`` (loading the model),
``tokenize`` (response-only masks), ``lora`` (attach, load, warm up), ``loss`` (padded batches,
per-sample response losses), ``gradients`` (the batched fast path), ``sketch`` (CountSketch),
``collect`` (a data set -> a gradient store), ``influence`` (cosine scores, top-k).
"""
