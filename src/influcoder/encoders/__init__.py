"""The encoder layer: an encoder directory (a sentence-transformers model, or influcoder's
multi-view format with a head), loading it, and running it fast on CPU (torch, bf16, ONNX,
int8, and a torch-free ONNX query path). Distillation writes encoders; attribution and
evaluation read them; nothing here imports from those layers.
"""
