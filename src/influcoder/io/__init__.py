"""The io layer: everything that reads or writes files.

``samples`` (JSONL/JSON/CSV/Parquet/HF data, chat messages, typed errors with file:line:field),
``stores`` (per-sample vectors + manifest, resumable, checked), ``atomic`` (temp name, fsync,
rename), ``layout`` (file names), ``models`` (locating and fingerprinting model files),
``tables`` (result tables for people and files), ``job`` (the protocol every store-filling
stage follows).
"""
