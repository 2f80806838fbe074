"""The scaling study: generator size presets, parameter counts, the study and its report.

* :mod:`goalrank_jax.scaling.presets`: the named generator sizes (0.01m .. 300m) and the
  parameter counts (``jax.eval_shape``, nothing allocated);
* :mod:`goalrank_jax.scaling.param_count`: ``python -m goalrank_jax.scaling.param_count``
  prints the counts (``--table``: every preset and variant);
* :mod:`goalrank_jax.scaling.study`: every (size, variant) run, its cache and the report;
  ``python -m goalrank_jax.scaling`` (goalrank_jax/scaling/__main__.py) is its command line;
* :mod:`goalrank_jax.scaling.report`: ``scaling.md``, ``scaling.json`` and ``scaling.png``.

This file imports nothing: the two commands define different absl flags (both a ``--config``),
so neither may be imported by the package itself.
"""
