"""ELECTRA with generator and discriminator tied (objective.tie_encoders): one encoder, both losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from batches import electra_inputs, tiny_electra

from electrolite.config import ObjectiveConfig, PretrainConfig
from electrolite.errors import UserError
from electrolite.model import count_parameters
from electrolite.objectives import Electra, _masked_lm
from electrolite.training import checkpoint


def tied_model(seed: int = 0) -> tuple[Electra, PretrainConfig]:
    return tiny_electra(seed, generator_size=1.0, tie_encoders=True)


@pytest.mark.parametrize("changes", [dict(generator_size=0.25), dict(generator_layers=0.5), dict(name="mlm")])
def test_tying_needs_a_full_size_electra_generator(changes):
    with pytest.raises(UserError, match="tie_encoders needs objective.name electra and generator_size"):
        ObjectiveConfig(**{"name": "electra", "generator_size": 1.0, "tie_encoders": True, **changes})


def test_one_encoder_serves_both():
    model, cfg = tied_model()
    assert model.generator is model.discriminator
    untied = Electra(cfg.model, cfg.generator_config(), dataclasses.replace(cfg.objective, tie_encoders=False))
    # Untied, the generator is a second full encoder (its embeddings shared): exactly that many more weights.
    encoder_only = count_parameters(model.discriminator) - count_parameters(model.discriminator.embeddings)
    assert count_parameters(untied) - count_parameters(model) == encoder_only
    out = model(electra_inputs(cfg))
    assert torch.isfinite(out.loss) and 0.0 < float(out.replaced_fraction) <= 0.15 + 1e-6


def test_the_masked_lm_gradient_alone_moves_the_shared_encoder():
    model, cfg = tied_model()
    batch = electra_inputs(cfg)
    hidden = model.generator(batch["masked_input_ids"], batch["attention_mask"], batch["token_type_ids"])
    loss, *_ = _masked_lm(hidden, model.generator_head, batch)
    loss.backward()
    grad = model.discriminator.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and float(grad.abs().max()) > 1e-6


def test_a_tied_model_saves_once_and_loads_tied(tmp_path):
    model, cfg = tied_model(seed=1)
    checkpoint.save_weights(model, tmp_path / "m.safetensors")
    fresh, _ = tied_model(seed=2)
    checkpoint.load_weights(fresh, tmp_path / "m.safetensors")
    assert fresh.generator is fresh.discriminator
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n
