"""Evaluation: how well a method ranks like the gradient ground truth, and what it costs.

``metrics`` (Spearman variants, NDCG, recall, AUPRC through scikit-learn, bootstrap
intervals), ``baselines`` (random, TF-IDF, BM25, encoders, re-sketched gradients),
``evaluate`` (one row of figures per method), ``figures`` (the report's plots), ``report``
(the HTML report, a jinja2 template).
"""
