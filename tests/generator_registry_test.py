"""The generator registry is the one registration point of a variant: a toy variant registered
here is accepted by config validation, built by make_generator, sized by the presets and the
parameter counts, and gone again once unregistered; bad registrations fail clearly."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from goalrank_jax import configs, models
from goalrank_jax.models import registry
from goalrank_jax.scaling import presets

TOY = "toy_prefix"
USERS, ITEMS, CANDIDATES = 7, 11, 5


class ToyGenerator(models.PrefixGenerator):
    """The prefix generator under another name, reading one more config field."""

    decoder_layers: int = 1  # Read from ModelConfig to check that ``fields`` are passed.


def _toy_rule(preset):
    return {"num_layers": preset.fast_layers + 1, "decoder_layers": 2}


@pytest.fixture
def toy():
    models.register_generator(TOY, ToyGenerator, fields=("decoder_layers",), preset_rule=_toy_rule)
    yield
    models.unregister_generator(TOY)


def test_builtin_variants_are_registered():
    assert configs.GENERATOR_VARIANTS == ("prefix", "fast")
    assert models.get_generator("fast").cls is models.FastGenerator
    assert models.get_generator("fast").fields == ("decoder_layers",)
    assert models.get_generator("prefix").fields == ()


def test_toy_variant_is_accepted_built_and_sized(toy):
    assert configs.GENERATOR_VARIANTS == ("prefix", "fast", TOY)
    model = configs.ModelConfig(variant=TOY, embed_dim=8, num_heads=2, ff_dim=8, decoder_layers=3)
    model.validate()  # Would raise "must be one of ('prefix', 'fast')" without the registry.
    generator = models.make_generator(model, USERS, ITEMS)
    assert type(generator) is ToyGenerator
    assert (generator.decoder_layers, generator.num_layers, generator.embed_dim) == (3, 2, 8)
    assert (generator.num_users, generator.num_items) == (USERS, ITEMS)

    preset = presets.get_preset("1m")
    assert preset.model_fields(TOY) == {
        "variant": TOY,
        "embed_dim": preset.embed_dim,
        "num_heads": preset.num_heads,
        "ff_dim": preset.ff_dim,
        "num_layers": preset.fast_layers + 1,
        "decoder_layers": 2,
    }
    sized = presets.apply_preset(configs.ModelConfig(dropout=0.2), "0.01m", TOY)
    assert (sized.variant, sized.num_layers, sized.dropout) == (TOY, 2, 0.2)
    # Counted like any generator: the toy has the parameters of a prefix generator of its depth.
    toy_count = presets.count_generator(sized, USERS, ITEMS, CANDIDATES)
    prefix = dataclasses.replace(sized, variant="prefix")
    assert toy_count == presets.count_generator(prefix, USERS, ITEMS, CANDIDATES)
    shallower = dataclasses.replace(prefix, num_layers=1)
    assert toy_count.total > presets.count_generator(shallower, USERS, ITEMS, CANDIDATES).total
    # It runs: first-step logits [B, N] through the interface's __call__.
    specs = presets.abstract_batch(CANDIDATES, history_len=3, batch_size=2)
    batch = {k: jnp.ones(v.shape, v.dtype) for k, v in specs.items()}
    params = generator.init(jax.random.key(0), batch)
    assert generator.apply(params, batch).shape == (2, CANDIDATES)


def test_toy_variant_in_the_preset_rows_and_table(toy):
    rows = presets.preset_rows(configs.ModelConfig(), USERS, ITEMS, CANDIDATES)
    assert all(TOY in row for row in rows)
    table = presets.markdown_table(rows).splitlines()
    assert f"| {TOY} enc+dec layers | {TOY} non-emb | {TOY} total |" in table[0]
    first = presets.PRESETS["0.01m"]
    assert f"| {first.fast_layers + 1}+2 |" in table[2]
    assert table[1] == "|" + "---|" * (5 + 3 * 3)


def test_unregistered_variant_is_rejected_everywhere(toy):
    models.unregister_generator(TOY)
    try:
        with pytest.raises(ValueError, match="must be one of \\('prefix', 'fast'\\)"):
            configs.ModelConfig(variant=TOY).validate()
        model = dataclasses.replace(configs.ModelConfig(), variant=TOY)
        with pytest.raises(ValueError, match="Unknown generator variant 'toy_prefix'"):
            models.make_generator(model, USERS, ITEMS)
        with pytest.raises(ValueError, match="Unknown generator variant 'toy_prefix'"):
            presets.apply_preset(configs.ModelConfig(), "1m", TOY)
    finally:  # The fixture unregisters it again.
        models.register_generator(TOY, ToyGenerator, preset_rule=_toy_rule)


def test_bad_registrations_fail_clearly():
    rule = _toy_rule
    with pytest.raises(ValueError, match="'fast' is already registered"):
        models.register_generator("fast", ToyGenerator, preset_rule=rule)
    with pytest.raises(ValueError, match="reads no_such_field, which ModelConfig lacks"):
        models.register_generator("bad", ToyGenerator, fields=("no_such_field",), preset_rule=rule)

    class NoListLogits:
        def encode(self, batch, deterministic=True): ...

        def init_carry(self, context, list_len): ...

        def decode_step(self, context, carry, prev_item, chosen, t, deterministic=True): ...

        def __call__(self, batch, deterministic=True): ...

    with pytest.raises(TypeError, match="lacks list_logits of the generator interface"):
        models.register_generator("bad", NoListLogits, preset_rule=rule)
    with pytest.raises(TypeError, match="callable preset_rule"):
        models.register_generator("bad", ToyGenerator, preset_rule=None)
    assert "bad" not in registry.generator_variants()


def test_decorator_form_registers_the_class():
    @models.register_generator("decorated", preset_rule=_toy_rule)
    class Decorated(models.PrefixGenerator):
        pass

    try:
        assert models.get_generator("decorated").cls is Decorated
        assert "decorated" in configs.GENERATOR_VARIANTS
    finally:
        models.unregister_generator("decorated")
    assert "decorated" not in configs.GENERATOR_VARIANTS
