"""The objectives: ELECTRA (generator, sampling, RTD labels and losses), MLM, SOP, and the AUC metric.

Batches come from tests/batches.py (the corpus layout with synthetic ids).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from batches import V, gen, make_batch, masker

from electrolite.config import ObjectiveConfig, PretrainConfig, from_name
from electrolite.model import count_parameters
from electrolite.objectives import IGNORE_INDEX, Electra, MaskedLM, _masked_lm, build_objective, make_inputs, sample_from_logits

# --- ELECTRA ---------------------------------------------------------------------------------------

def run_config(objective: dict | None = None, **model) -> PretrainConfig:
    base = dict(vocab_size=V, max_position_embeddings=128)
    base.update(model)
    obj = dict(generator_size=0.5)
    obj.update(objective or {})
    return PretrainConfig(size="tiny", model=from_name("tiny", **base), objective=ObjectiveConfig(**obj))


def electra(objective: dict | None = None, seed: int = 0, **model) -> Electra:
    cfg = run_config(objective, **model)
    torch.manual_seed(seed)
    obj = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    assert isinstance(obj, Electra)
    return obj


def small_inputs(name: str = "electra", sop: bool = False, rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = make_batch(rows=rows, seq_len=48, seed=seed)
    return make_inputs(batch, masker(name), sop=sop, generator=gen(seed))


def test_electra_generator_is_smaller_and_shares_embeddings():
    model = electra(embedding_size=32)
    assert model.generator.config.hidden_size == 32 and model.discriminator.config.hidden_size == 64
    ge, de = model.generator.embeddings, model.discriminator.embeddings
    assert ge is de
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        for p_name, p in getattr(de, name).named_parameters():
            q = getattr(getattr(ge, name), p_name)
            assert q is p and q.data_ptr() == p.data_ptr(), (name, p_name)
    assert model.generator_head.word_embeddings[0].weight is de.word_embeddings.weight
    # Shared tensors are counted once.
    total = count_parameters(model)
    separate = sum(count_parameters(m) for m in (model.generator, model.discriminator, model.generator_head,
                                                 model.discriminator_head))
    assert separate - total == count_parameters(de)
    assert not hasattr(model.generator, "embeddings_project")  # generator hidden 32 == embedding 32
    assert model.discriminator.embeddings_project.in_features == 32


def test_electra_rtd_labels_and_corruption():
    model = electra()
    inputs = small_inputs()
    torch.manual_seed(0)
    out = model(inputs)
    orig, attn, sel = inputs["input_ids"], inputs["attention_mask"], inputs["mlm_mask"]
    corrupted = out.corrupted_ids
    assert torch.equal(out.rtd_labels, (corrupted != orig) & attn)
    assert not ((corrupted != orig) & ~sel).any()  # only selected positions are ever replaced
    n_replaced = out.rtd_labels.sum().item()
    assert 0 < n_replaced <= sel.sum().item()
    assert out.replaced_fraction.item() == pytest.approx(n_replaced / attn.sum().item())
    assert out.rtd_logits.shape == orig.shape
    # An untrained generator samples nearly uniformly over 1000 ids: almost every sample differs.
    assert n_replaced / sel.sum().item() > 0.95


def test_electra_generator_runs_only_on_masked_positions():
    model = electra()
    inputs = small_inputs()
    n = int(inputs["mlm_mask"].sum())
    seen: list[tuple[int, ...]] = []
    handle = model.generator_head.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        out = model(inputs)
    finally:
        handle.remove()
    assert n < inputs["attention_mask"].sum() / 4
    assert seen == [(n, model.generator.config.hidden_size)]  # called once, on the N selected rows
    assert tuple(out.mlm_logits.shape) == (n, V)


def test_electra_loss_weights():
    inputs = small_inputs()
    outs = {}
    for gw, dw in ((1.0, 50.0), (2.0, 10.0)):
        model = electra(dict(generator_weight=gw, discriminator_weight=dw), seed=0)
        torch.manual_seed(123)  # identical dropout and sampling for both weightings
        out = model(inputs)
        outs[gw, dw] = out
        torch.testing.assert_close(out.loss.detach(), gw * out.mlm_loss + dw * out.rtd_loss, rtol=1e-6, atol=1e-6)
    a, b = outs[1.0, 50.0], outs[2.0, 10.0]
    assert torch.equal(a.corrupted_ids, b.corrupted_ids)
    assert a.mlm_loss.item() == b.mlm_loss.item() and a.rtd_loss.item() == b.rtd_loss.item()
    # Untrained: generator loss ≈ ln V, discriminator loss ≈ ln 2 (logits near 0).
    assert abs(a.mlm_loss.item() - np.log(V)) < 0.2
    assert abs(a.rtd_loss.item() - np.log(2)) < 0.1
    assert a.loss.item() == pytest.approx(a.mlm_loss.item() + 50 * a.rtd_loss.item(), rel=1e-6)


def test_electra_rtd_loss_by_hand():
    model = electra().eval()
    inputs = small_inputs()
    torch.manual_seed(0)
    out = model(inputs)
    attn = inputs["attention_mask"]
    with torch.no_grad():
        hidden = model.discriminator(out.corrupted_ids, attn, inputs["token_type_ids"])
        logits = model.discriminator_head(hidden)
    torch.testing.assert_close(out.rtd_logits, logits, rtol=0, atol=1e-6)
    expected = F.binary_cross_entropy_with_logits(logits[attn], out.rtd_labels[attn].float())
    torch.testing.assert_close(out.rtd_loss, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_each_electra_loss_reaches_the_shared_embeddings(which):
    weights = dict(generator_weight=1.0, discriminator_weight=0.0) if which == "generator" else \
        dict(generator_weight=0.0, discriminator_weight=1.0)
    model = electra(weights, embedding_size=32)
    inputs = small_inputs()
    torch.manual_seed(0)
    model(inputs).loss.backward()
    emb = model.discriminator.embeddings
    assert emb.word_embeddings.weight.grad.abs().sum() > 0
    assert emb.position_embeddings.weight.grad.abs().sum() > 0
    assert emb.LayerNorm.weight.grad.abs().sum() > 0

    def grad_sum(module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    gen_side = grad_sum(model.generator.encoder) + grad_sum(model.generator_head)
    disc_side = grad_sum(model.discriminator.encoder) + grad_sum(model.discriminator_head) \
        + grad_sum(model.discriminator.embeddings_project)
    if which == "generator":
        assert gen_side > 0 and disc_side == 0
    else:
        # Sampling is not differentiable: no gradient flows from the discriminator into the generator.
        assert disc_side > 0 and gen_side == 0


def test_sample_from_logits_matches_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5], requires_grad=True)
    torch.manual_seed(0)
    for temperature in (1.0, 2.0):
        draws = sample_from_logits(logits.expand(200_000, 5), temperature)
        assert draws.dtype == torch.long and not draws.requires_grad
        freq = torch.bincount(draws, minlength=5).float() / draws.numel()
        expected = torch.softmax(logits.detach() / temperature, -1)
        torch.testing.assert_close(freq, expected, rtol=0, atol=0.005)


def test_sample_from_logits_never_draws_impossible_ids():
    torch.manual_seed(0)
    logits = torch.full((50_000, 30), float("-inf"))
    logits[:, [0, 29]] = 0.0  # only the first and the last id are possible; every edge of the CDF
    logits[::2, 0] = float("-inf")  # even rows: only the last id
    draws = sample_from_logits(logits.to(torch.bfloat16))
    assert set(draws.unique().tolist()) <= {0, 29}
    assert (draws[::2] == 29).all()
    assert abs((draws[1::2] == 0).float().mean().item() - 0.5) < 0.01


def test_sample_equal_to_original_is_labelled_original():
    model = electra().eval()
    inputs = small_inputs()
    sel = inputs["mlm_mask"]
    favourite = 77
    inputs = dict(inputs, input_ids=inputs["input_ids"].clone())
    inputs["input_ids"][sel] = favourite  # every selected position's original is the favourite id
    with torch.no_grad():
        model.generator_head.bias[favourite] = 1e4  # the generator always samples it
    out = model(inputs)
    assert torch.equal(out.corrupted_ids, inputs["input_ids"])
    assert int(out.rtd_labels.sum()) == 0
    assert out.replaced_fraction.item() == 0.0
    assert out.mlm_accuracy.item() == 1.0
    # And favouring another id replaces every selected position: labels == mlm_mask exactly.
    with torch.no_grad():
        model.generator_head.bias[favourite] = 0.0
        model.generator_head.bias[78] = 1e4
    out = model(inputs)
    assert torch.equal(out.rtd_labels, sel)
    assert (out.corrupted_ids[sel] == 78).all()
    assert out.mlm_accuracy.item() == 0.0


def test_rtd_accuracies_on_a_constructed_case():
    model = electra().eval()
    inputs = small_inputs()
    with torch.no_grad():  # the discriminator predicts "original" everywhere
        model.discriminator_head.dense_prediction.weight.zero_()
        model.discriminator_head.dense_prediction.bias.fill_(-5.0)
    out = model(inputs)
    assert 0 < out.replaced_fraction.item() < 1
    assert out.rtd_original_accuracy.item() == 1.0
    assert out.rtd_replaced_accuracy.item() == 0.0
    assert out.rtd_accuracy.item() == pytest.approx(1 - out.replaced_fraction.item(), abs=1e-6)
    # Constant logit -5: loss = mean of softplus(-5) on originals and softplus(5) on replacements.
    f = out.replaced_fraction.item()
    expected = (1 - f) * F.softplus(torch.tensor(-5.0)).item() + f * F.softplus(torch.tensor(5.0)).item()
    assert out.rtd_loss.item() == pytest.approx(expected, rel=1e-5)


# --- masked LM -----------------------------------------------------------------------------------

def mlm(objective: dict | None = None, seed: int = 0, **model) -> MaskedLM:
    cfg = run_config(dict(name="mlm", **(objective or {})), **model)
    torch.manual_seed(seed)
    obj = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    assert isinstance(obj, MaskedLM)
    return obj


def test_mlm_loss_equals_cross_entropy_by_hand():
    model = mlm(embedding_size=32).eval()
    inputs = small_inputs("mlm")
    with torch.no_grad():
        out = model(inputs)
        hidden = model.encoder(inputs["masked_input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        full = model.mlm_head(hidden)  # (B, T, V): every position, for the reference only
    sel = inputs["mlm_mask"]
    expected = F.cross_entropy(full[sel], inputs["input_ids"][sel])
    torch.testing.assert_close(out.mlm_loss, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.mlm_logits, full[sel], rtol=0, atol=1e-5)
    assert out.loss.item() == out.mlm_loss.item()
    acc = (full[sel].argmax(-1) == inputs["input_ids"][sel]).float().mean()
    assert out.mlm_accuracy.item() == pytest.approx(acc.item())
    assert 0.0 <= out.mlm_accuracy.item() <= 1.0
    assert abs(out.mlm_loss.item() - np.log(V)) < 0.2


def test_mlm_accuracy_on_a_constructed_case():
    model = mlm().eval()
    inputs = small_inputs("mlm")
    sel = inputs["mlm_mask"]
    n = int(sel.sum())
    targets = inputs["input_ids"].clone()
    picked = targets[sel]
    picked[: n // 4] = 77  # a quarter of the targets are the id the head always predicts
    picked[n // 4:][picked[n // 4:] == 77] = 78
    targets[sel] = picked
    with torch.no_grad():
        model.mlm_head.bias[77] = 1e4
    out = model(dict(inputs, input_ids=targets))
    assert out.mlm_accuracy.item() == pytest.approx((n // 4) / n)
    # Loss: 0 on the quarter predicted right, ~1e4 above the right logit elsewhere.
    assert out.mlm_loss.item() == pytest.approx(1e4 * (n - n // 4) / n, rel=1e-3)


def test_mlm_accuracy_takes_the_first_of_tied_top_logits():
    """As argmax does: ids 3 and 5 tie at the top, so 3 is the prediction (bf16 logits tie often)."""
    logits = torch.zeros(4, 10, dtype=torch.bfloat16)
    logits[:, 3] = logits[:, 5] = 1.0
    inputs = {"mlm_mask": torch.ones(1, 4, dtype=torch.bool), "input_ids": torch.tensor([[3, 5, 3, 0]])}
    _, acc, _, _ = _masked_lm(torch.zeros(1, 4, 8), lambda h: logits, inputs)
    assert acc.item() == 0.5


@pytest.mark.parametrize("name", ["mlm", "electra"])
def test_sop_loss_added_with_its_weight(name):
    objective = dict(sop=True, sop_weight=0.5)
    model = (mlm(objective) if name == "mlm" else electra(objective)).eval()
    inputs = small_inputs(name, sop=True, rows=16)
    labels = inputs["sop_labels"]
    assert (labels == 1).any() and (labels == 0).any() and (labels == IGNORE_INDEX).any()
    torch.manual_seed(0)
    out = model(inputs)
    parts = out.mlm_loss + 0.5 * out.sop_loss
    if name == "electra":
        parts = parts + 50.0 * out.rtd_loss
    torch.testing.assert_close(out.loss.detach(), parts, rtol=1e-6, atol=1e-6)
    # The SOP loss by hand: cross-entropy of the head on the (possibly corrupted) sequence, valid rows only.
    with torch.no_grad():
        if name == "mlm":
            hidden = model.encoder(inputs["masked_input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        else:
            hidden = model.discriminator(out.corrupted_ids, inputs["attention_mask"], inputs["token_type_ids"])
        logits = model.sop_head(hidden)
    valid = labels != IGNORE_INDEX
    torch.testing.assert_close(out.sop_loss, F.cross_entropy(logits[valid], labels[valid]), rtol=0, atol=1e-5)
    assert 0.0 <= out.sop_accuracy.item() <= 1.0
    # Constructed accuracy: a head that always says "in order" is right on the label-0 rows.
    with torch.no_grad():
        model.sop_head.classifier.weight.zero_()
        model.sop_head.classifier.bias.copy_(torch.tensor([1.0, 0.0]))
    torch.manual_seed(0)
    out = model(inputs)
    assert out.sop_accuracy.item() == pytest.approx((labels[valid] == 0).float().mean().item())
    expected = F.cross_entropy(torch.tensor([[1.0, 0.0]]).expand(int(valid.sum()), 2), labels[valid])
    assert out.sop_loss.item() == pytest.approx(expected.item(), rel=1e-5)


ENCODERS = {
    "plain": dict(),
    "factorized": dict(embedding_size=32),
    "shared": dict(num_hidden_layers=4, num_hidden_groups=1),
    "albert": dict(num_hidden_layers=4, num_hidden_groups=1, embedding_size=16),
}


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("name, sop", [("electra", False), ("electra", True), ("mlm", False), ("mlm", True)])
def test_any_objective_on_any_encoder(encoder, name, sop):
    model_kw = ENCODERS[encoder]
    cfg = run_config(dict(name=name, sop=sop), **model_kw)
    torch.manual_seed(0)
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    inputs = small_inputs(name, sop=sop, rows=6)
    torch.manual_seed(1)
    out = model(inputs)
    expected = cfg.objective.generator_weight * out.mlm_loss if name == "electra" else out.mlm_loss.clone()
    if name == "electra":
        expected = expected + cfg.objective.discriminator_weight * out.rtd_loss
    if sop:
        expected = expected + cfg.objective.sop_weight * out.sop_loss
    else:
        assert out.sop_loss is None
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-6, atol=1e-6)
    assert abs(out.mlm_loss.item() - np.log(V)) < 0.3  # an untrained head: near-uniform over V
    out.loss.backward()
    # The encoder under test is the one configured: shared weights, factorized embeddings.
    enc = model.discriminator if name == "electra" else model.encoder
    assert len(enc.encoder.layer) == cfg.model.num_hidden_groups
    assert enc.config.embedding_size == cfg.model.embedding_size
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # Every parameter of encoder(s) and heads receives a gradient.
    assert missing == []
    metrics = out.metrics()
    assert all(np.isfinite(v) for v in metrics.values())
    assert set(metrics) >= {"loss", "mlm_loss", "mlm_accuracy"} | ({"rtd_loss"} if name == "electra" else set()) \
        | ({"sop_loss", "sop_accuracy"} if sop else set())


def test_build_objective_electra_needs_generator():
    cfg = run_config()
    with pytest.raises(ValueError, match="generator config"):
        build_objective(cfg.model, cfg.objective, None)
    gen = cfg.generator_config()
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (32, 1, 128)
    assert isinstance(build_objective(cfg.model, dataclasses.replace(cfg.objective, name="mlm")), MaskedLM)


def test_rank_auc_hand_checked():
    from electrolite.objectives import rank_auc
    labels = torch.tensor([False, False, True, True])
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert rank_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), labels).item() == pytest.approx(0.75)
    assert rank_auc(torch.tensor([0.0, 0.1, 0.5, 0.9]), labels).item() == pytest.approx(1.0)
    assert rank_auc(torch.tensor([0.9, 0.5, 0.1, 0.0]), labels).item() == pytest.approx(0.0)
    # Ties count one half (Mann-Whitney): a constant output is exactly chance, whatever the order.
    assert rank_auc(torch.full((6,), 0.3), torch.tensor([True, False, True, False, False, True])).item() == 0.5
    assert rank_auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), torch.tensor([False, True, False, True])).item() == 0.875
    assert rank_auc(torch.tensor([0.5, 0.5, 0.1, 0.9]), torch.tensor([True, False, False, True])).item() == 0.875
    assert rank_auc(torch.tensor([0.3, 0.2]), torch.tensor([False, False])).item() == 0.5
