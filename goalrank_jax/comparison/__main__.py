"""``python -m goalrank_jax.comparison``: the paper's comparison (see ``comparison.compare``)."""

from absl import app

from goalrank_jax import main as main_lib
from goalrank_jax.comparison import compare

if __name__ == "__main__":
    app.run(compare.main, flags_parser=main_lib.parse_flags)
