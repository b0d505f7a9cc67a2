"""Validation: does removing what a method flags change the model? (``influcoder validate``)

``settings`` (``ValidateArguments``), ``retrain`` (the pool store's model and adapter,
retrained on part of the pool; per-sample response losses), ``effects`` (removal sets,
removal effects paired by seed, the linear datamodeling score), ``run`` (the runs a validation
needs, saved and resumed one by one; the rows), ``report`` (table, targets, results files,
figure, HTML page from ``templates/``). ``docs/VALIDATION.md`` explains and measures it.
"""
