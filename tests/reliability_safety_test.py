"""Safety of inputs: checkpoints, datasets and raw files are never read through pickle or eval.

A static scan of the library finds no code-executing deserializer, and a crafted pickle payload
(which does run code when unpickled: the control below) placed where a checkpoint file, a TFDS
dataset file or a raw data file is expected is rejected as damaged data without running.
"""

import ast
import glob
import os
import pickle

import jax.numpy as jnp
import pytest
from reliability_fixtures import prepare_given, valid_requests

from goalrank_jax import checkpointing, configs
from goalrank_jax import train_step as ts
from goalrank_jax.data import raw_formats

LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "goalrank_jax")
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal"}
UNSAFE_MODULES |= {"shelve", "yaml", "torch"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


class CodeOnLoad:
    """Unpickling this creates the file ``marker``: any code could run in its place."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def payload(tmp_path):
    """(pickle bytes that create ``marker`` when loaded, marker path); checked live."""
    marker = str(tmp_path / "code_ran")
    blob = pickle.dumps(CodeOnLoad(marker))
    pickle.loads(blob).close()  # the control: unpickling does run the payload
    assert os.path.exists(marker)
    os.remove(marker)
    return blob, marker


def _unsafe_uses(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            names = [node.func.id] if node.func.id in UNSAFE_BUILTINS else []
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            names = ["allow_pickle"] if getattr(node.value, "value", True) is not False else []
        else:
            continue
        for name in names:
            if name in UNSAFE_MODULES | UNSAFE_BUILTINS | {"allow_pickle"}:
                yield f"{os.path.relpath(path, LIBRARY)}:{node.lineno}: {name}"


def test_library_uses_no_code_executing_deserializer():
    paths = glob.glob(os.path.join(LIBRARY, "**", "*.py"), recursive=True)
    assert len(paths) > 20
    found = [use for path in sorted(paths) for use in _unsafe_uses(path)]
    assert not found, found


@pytest.fixture
def checkpoint(tmp_path):
    optimizer = ts.make_optimizer(configs.OptimConfig())
    state = ts.create_state({"w": jnp.arange(6.0).reshape(2, 3)}, optimizer)
    directory = str(tmp_path / "checkpoints")
    ckpt = checkpointing.Checkpointer(directory)
    ckpt.save(1, state, {"iterator": {"next_index": 3}})
    ckpt.close()
    return directory, state


# Tensorstore's reader of a damaged file leaves an asyncio callback behind; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "target", ["data/metadata", "state/_METADATA", "state/manifest.ocdbt", "state/d/*"]
)
def test_crafted_checkpoint_file_is_rejected_without_running(checkpoint, payload, target):
    directory, state = checkpoint
    blob, marker = payload
    victims = glob.glob(os.path.join(directory, "1", target))
    assert victims
    for victim in victims:
        with open(victim, "wb") as f:
            f.write(blob)
    ckpt = checkpointing.Checkpointer(directory)
    try:
        with pytest.raises(checkpointing.CheckpointError, match="truncated or corrupted"):
            ckpt.restore(1, checkpointing.abstract_like(state))
    finally:
        ckpt.close()
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "target, rejected",
    [
        ("*.array_record*", True),
        ("dataset_info.json", True),
        ("features.json", False),  # the feature spec comes from the code: the file is unused
    ],
)
def test_crafted_dataset_file_is_never_run(tmp_path, payload, target, rejected):
    blob, marker = payload
    prepare_given(tmp_path, valid_requests())
    victims = glob.glob(os.path.join(tmp_path, "**", target), recursive=True)
    assert victims
    for victim in victims:
        with open(victim, "wb") as f:
            f.write(blob)
    try:
        example = prepare_given(tmp_path, valid_requests()).as_data_source()["train"][0]
    except Exception:  # TFDS and array_record raise several types for damaged files
        example = None
    assert (example is None) == rejected
    if example is not None:
        assert sorted(example) == sorted(valid_requests()["train"])
    assert not os.path.exists(marker)


def test_crafted_raw_data_file_is_rejected_without_running(tmp_path, payload):
    blob, marker = payload
    path = str(tmp_path / "u.data")
    with open(path, "wb") as f:
        f.write(blob)
    with pytest.raises(raw_formats.RawDataError, match=f"^{path}:1: "):
        raw_formats.read_udata(path)
    assert not os.path.exists(marker)
