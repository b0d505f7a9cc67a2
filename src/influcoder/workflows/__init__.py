"""Workflows: the one place that chains stages. The CLI and the demo call these; nothing else
strings stages together.

``fit``: a training file and the outputs to explain -> gradients, encoder and index in one
folder; ``evaluation``: score methods against the ground truth, judge them, write results and
report; ``demo``: the whole journey on the bundled models and data; ``datasets``: the demo's data.
"""
