"""Attribution (stage 3, online): encoder back ends, embedding stores, the FAISS index, the
attributor that answers queries, and filtering a training file by what it finds.

``settings`` holds every default and choice; ``backends`` runs the encoder (torch, bf16, ONNX);
``encode`` fills an embedding store; ``index``/``build`` read and build the index;
``attributor`` ranks pool samples for queries; ``filter`` removes the most influential ones.
"""
