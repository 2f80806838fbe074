"""Serving: export a finished run's greedy ranker and rank requests with it.

* :mod:`goalrank_jax.serving.export` (``python -m goalrank_jax.serving.export``) writes the
  greedy ranker of a run as a self-contained ``jax.export`` artifact;
* :mod:`goalrank_jax.serving.rank` (``python -m goalrank_jax.serving.rank``) loads and runs it
  with jax and numpy only.

This file imports nothing, so that running the ranking command imports no module of the
training code.
"""
