"""ELECTRA's small-budget levers: recipes, the curriculum, the generator's learning rate, GDES, the two-stage
warm start, λ, decoupled clipping, the ELECTRA learning-rate schedule and the plateau watch."""

from __future__ import annotations

import math

import pytest
import torch
from batches import V, electra_inputs, tiny_electra

from electrolite.config import DEFAULT_RECIPE, RECIPES, ObjectiveConfig, PretrainConfig, build, resolve_pretrain_config
from electrolite.errors import UserError
from electrolite.objectives import Electra, prior_rtd_loss
from electrolite.pretrain import PLATEAU_EVALS, objective_step, plateau
from electrolite.training.optim import adamw, electra_schedule, linear_schedule, lr_multiplier, param_groups, set_lr


def electra(seed: int = 0, **objective) -> tuple[Electra, PretrainConfig]:
    return tiny_electra(seed, generator_size=0.5, **objective)


inputs = electra_inputs


# --- recipes ---------------------------------------------------------------------------------------

def test_new_runs_get_the_small_budget_recipe_and_paper_restores_the_paper():
    fields = ("generator_lr_scale", "uniform_replace_start", "curriculum_fraction", "two_stage_fraction",
              "embedding_sharing", "temperature_start")
    new = resolve_pretrain_config(overrides={"size": "tiny"}).objective
    assert new.recipe == DEFAULT_RECIPE == "small-budget"
    assert {k: getattr(new, k) for k in fields} == {"generator_lr_scale": 0.05, "uniform_replace_start": 0.5,
                                                   "curriculum_fraction": 1.0, "two_stage_fraction": 0.3,
                                                   "embedding_sharing": "gdes", "temperature_start": 2.0}
    assert {k: getattr(new, k) for k in fields if k in RECIPES["small-budget"]} == RECIPES["small-budget"]
    paper = resolve_pretrain_config(overrides={"size": "tiny", "objective.recipe": "paper"}).objective
    assert {k: getattr(paper, k) for k in fields} == {"generator_lr_scale": 1.0, "uniform_replace_start": 0.0,
                                                     "curriculum_fraction": 0.0, "two_stage_fraction": 0.0,
                                                     "embedding_sharing": "shared", "temperature_start": 1.0}
    assert paper.temperature == 1.0 and not paper.decoupled_training and paper.corrective_lm_weight == 0.0
    assert paper.discriminator_weight == 50.0 and paper.generator_weight == 1.0
    # a field set explicitly beats the recipe
    assert resolve_pretrain_config(overrides={"size": "tiny", "objective.generator_lr_scale": 0.5}
                                   ).objective.generator_lr_scale == 0.5


def test_shipped_paper_configs_and_finished_studies_name_the_paper_recipe():
    from pathlib import Path

    from electrolite.config import load_yaml
    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("electra-small.yaml", "electra-base.yaml"):
        data = load_yaml(configs / name)
        cfg = resolve_pretrain_config(data)
        assert (cfg.objective.recipe, cfg.train.lr_schedule) == ("paper", "electra"), name
    for name in ("study-books-cpu.yaml", "study-books-cpu-5e14.yaml", "study-books-cpu-1e15.yaml",
                 "study-books-cpu-5e14-variants.yaml"):
        assert load_yaml(configs / name)["base"]["objective"]["recipe"] == "paper", name


def test_a_run_dir_written_before_recipes_reads_as_the_paper():
    saved = {"size": "tiny", "objective": {"name": "electra", "temperature": 1.0, "discriminator_weight": 50.0}}
    assert build(PretrainConfig, saved).objective.recipe == "paper"
    assert build(PretrainConfig, saved).objective.generator_lr_scale == 1.0
    # masked-LM runs are not given an ELECTRA recipe at all
    assert resolve_pretrain_config(overrides={"size": "tiny", "objective.name": "mlm"}).objective.recipe == "paper"


@pytest.mark.parametrize("field, value, message", [
    ("recipe", "fast", "objective.recipe must be paper or small-budget, got 'fast'"),
    ("embedding_sharing", "both", "objective.embedding_sharing must be shared or gdes, got 'both'"),
    ("two_stage_fraction", 1.0, "objective.two_stage_fraction must be in [0, 1), got 1.0"),
    ("uniform_replace_start", 1.5, "objective.uniform_replace_start must be in [0, 1], got 1.5"),
    ("generator_lr_scale", 0.0, "objective.generator_lr_scale must be positive, got 0.0"),
    ("temperature_start", 0.0, "objective.temperature and temperature_start must be positive"),
])
def test_bad_lever_values_are_one_line(field, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        ObjectiveConfig(name="electra", **{field: value})


# --- schedules ---------------------------------------------------------------------------------------

def test_curriculum_anneals_linearly_to_its_end_values():
    o = ObjectiveConfig(name="electra", temperature_start=3.0, uniform_replace_start=0.5, curriculum_fraction=0.5)
    assert o.curriculum(0, 1000) == (3.0, 0.5)
    assert o.curriculum(250, 1000) == (2.0, 0.25)
    assert o.curriculum(400, 1000) == pytest.approx((1.4, 0.1))
    assert o.curriculum(500, 1000) == (1.0, 0.0)
    assert o.curriculum(999, 1000) == (1.0, 0.0)
    assert ObjectiveConfig(name="electra", recipe="paper").curriculum(0, 1000) == (1.0, 0.0)


def test_electra_schedule_multiplies_warmup_into_the_decay():
    # the reference: lr × (1 − step/total) × min(1, step/warmup)
    assert electra_schedule(0, 100, 1000) == 0.0
    assert electra_schedule(50, 100, 1000) == pytest.approx(0.95 * 0.5)
    assert electra_schedule(100, 100, 1000) == pytest.approx(0.9)
    assert electra_schedule(550, 100, 1000) == pytest.approx(0.45)
    assert electra_schedule(1000, 100, 1000) == 0.0
    # BERT-style linear: the peak is reached at the end of the warm-up, then decays from there
    assert linear_schedule(99, 100, 1000) == 1.0 and linear_schedule(550, 100, 1000) == pytest.approx(0.5)
    assert lr_multiplier("electra", 50, 100, 1000) == electra_schedule(50, 100, 1000)
    assert lr_multiplier("linear", 50, 100, 1000) == linear_schedule(50, 100, 1000)


def test_two_stage_steps_and_switch():
    o = ObjectiveConfig(name="electra", recipe="paper", two_stage_fraction=0.3)
    assert o.first_stage_steps(1000) == 300 and o.first_stage_steps(10) == 3
    model, cfg = electra(recipe="paper", two_stage_fraction=0.3)
    model.set_step(299, 1000)
    assert model.first_stage
    model.set_step(300, 1000)
    assert not model.first_stage


# --- generator learning rate --------------------------------------------------------------------------

def test_generator_parameters_learn_at_their_scale():
    model, cfg = electra(recipe="paper", generator_lr_scale=0.25)
    opt = adamw(param_groups(model, 0.01, 1e-3, model.lr_scales(), model.no_weight_decay()), 1e-3,
                (0.9, 0.999), 1e-6, torch.device("cpu"))
    set_lr(opt, 1e-3, 0.5)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert lr_of[id(names["generator.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(1.25e-4)
    assert lr_of[id(names["generator_head.dense.weight"])] == pytest.approx(1.25e-4)
    assert lr_of[id(names["generator_head.bias"])] == pytest.approx(1.25e-4)
    assert lr_of[id(names["discriminator.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(names["discriminator_head.dense.weight"])] == pytest.approx(5e-4)
    # the shared embeddings (and so the generator's tied output matrix) learn at the discriminator's rate
    assert lr_of[id(names["discriminator.embeddings.word_embeddings.weight"])] == pytest.approx(5e-4)
    gen_only = {id(p) for p in model.generator_parameters()}
    assert sum(id(p) in gen_only for p in model.parameters()) == len(model.lr_scales())
    # the paper: one rate for all
    paper, _ = electra(recipe="paper")
    assert paper.lr_scales() == {}


# --- λ and decoupled clipping -------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [(1.0, 50.0), (1.0, 10.0), (0.5, 20.0)])
def test_loss_weights_are_applied(weights):
    model, cfg = electra(recipe="paper", generator_weight=weights[0], discriminator_weight=weights[1])
    torch.manual_seed(1)
    out = model(inputs(cfg))
    assert float(out.loss.detach()) == pytest.approx(weights[0] * float(out.mlm_loss) + weights[1] * float(out.rtd_loss),
                                            rel=1e-6)


def test_decoupled_training_clips_generator_and_discriminator_separately():
    grads = {}
    for decoupled in (False, True):
        model, cfg = electra(recipe="paper", decoupled_training=decoupled)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay; look at the clipped grads
        orig_step = opt.step

        def capture(closure=None, _m=model):
            grads[decoupled] = {
                "gen": math.sqrt(sum(float(p.grad.pow(2).sum()) for p in _m.generator_parameters() if p.grad is not None)),
                "disc": math.sqrt(sum(float(p.grad.pow(2).sum()) for p in _m.discriminator.parameters()
                                      if p.grad is not None))}
            return orig_step(closure)
        opt.step = capture
        torch.manual_seed(1)
        _, norm, applied = objective_step(model, opt, [inputs(cfg)], 1, torch.device("cpu"), "fp32", 0.5,
                                      objective=model)
        assert applied and float(norm) > 0.5
    assert grads[True]["gen"] == pytest.approx(0.5, rel=1e-4)  # each part at the norm on its own
    assert grads[True]["disc"] <= 0.5 + 1e-4
    # one global norm: the 50× RTD gradient dominates it and the generator's part is scaled down with it
    assert grads[False]["gen"] < 0.5 * grads[True]["gen"]


# --- GDES -------------------------------------------------------------------------------------------

def rtd_only(model: Electra, cfg: PretrainConfig) -> None:
    """Backward of the loss of a model built with generator_weight 0: λ × RTD alone."""
    torch.manual_seed(1)
    model(inputs(cfg)).loss.backward()


def test_gdes_discriminator_loss_reaches_the_residual_not_the_shared_table():
    model, cfg = electra(recipe="paper", embedding_sharing="gdes", generator_weight=0.0)
    gen_table = model.generator.embeddings.word_embeddings.weight
    disc_table = model.discriminator.embeddings.word_embeddings.weight
    assert gen_table is not disc_table and torch.equal(gen_table, disc_table)  # residual starts at zero
    rtd_only(model, cfg)
    assert gen_table.grad is None or float(gen_table.grad.abs().sum()) == 0.0
    assert float(disc_table.grad.abs().sum()) > 0  # the residual's gradient
    # the paper's sharing: the same loss pulls on the one shared table
    shared, cfg2 = electra(recipe="paper", generator_weight=0.0)
    rtd_only(shared, cfg2)
    assert shared.generator.embeddings.word_embeddings.weight is shared.discriminator.embeddings.word_embeddings.weight
    assert float(shared.generator.embeddings.word_embeddings.weight.grad.abs().sum()) > 0


def test_gdes_discriminator_embeddings_stay_generator_plus_residual():
    model, cfg = electra(recipe="paper", embedding_sharing="gdes")
    opt = adamw(param_groups(model, 0.01, 1e-2, None, model.no_weight_decay()), 1e-2, (0.9, 0.999), 1e-6,
                torch.device("cpu"))
    residuals = []
    for step in range(3):
        before_res = model.residual_embeddings()["word_embeddings.weight"].clone()
        before_gen = model.generator.embeddings.word_embeddings.weight.detach().clone()
        torch.manual_seed(step)
        objective_step(model, opt, [inputs(cfg, seed=step)], 1, torch.device("cpu"), "fp32", 1.0, objective=model)
        res = model.residual_embeddings()["word_embeddings.weight"]
        gen = model.generator.embeddings.word_embeddings.weight.detach()
        assert not torch.equal(gen, before_gen)  # the generator's masked LM moved its table ...
        assert not torch.equal(res, before_res)  # ... and RTD moved the residual
        torch.testing.assert_close(model.discriminator.embeddings.word_embeddings.weight.detach(), gen + res)
        residuals.append(float(res.abs().max()))
    assert residuals[-1] > 0
    # what fine-tuning and export read is the discriminator, a plain encoder with the residual folded in
    assert set(model.discriminator.state_dict()) == set(type(model.discriminator)(cfg.model).state_dict())


@pytest.mark.parametrize("sharing", ["shared", "gdes"])
def test_second_stage_continues_from_the_first_stage_weights(sharing):
    model, cfg = electra(recipe="paper", embedding_sharing=sharing, two_stage_fraction=0.5)
    opt = adamw(param_groups(model, 0.01, 1e-2, None, model.no_weight_decay()), 1e-2, (0.9, 0.999), 1e-6,
                torch.device("cpu"))
    disc_init = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    gen_own = {id(p) for p in model.generator_parameters()}
    gen_init = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) in gen_own}
    for step in range(2):
        model.set_step(step, 4)
        assert model.first_stage
        torch.manual_seed(step)
        _, _, applied = objective_step(model, opt, [inputs(cfg, seed=step)], 1, torch.device("cpu"), "fp32", 1.0,
                                   objective=model)
        assert applied
    stage1 = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    assert all(not torch.equal(stage1[k], disc_init[k]) for k in ("embeddings.word_embeddings.weight",
                                                                   "encoder.layer.1.output.dense.weight"))
    # the first stage trains the discriminator only: the generator's own weights are as initialised
    for n, p in model.named_parameters():
        if id(p) in gen_own:
            assert torch.equal(p, gen_init[n]), n
    model.set_step(2, 4)  # the second stage starts from exactly the first stage's discriminator
    assert not model.first_stage
    for k, v in model.discriminator.state_dict().items():
        assert torch.equal(v, stage1[k]), k
    if sharing == "gdes":  # the trained embeddings are the generator's (untrained) table + the residual
        residual = model.residual_embeddings()["word_embeddings.weight"]
        torch.testing.assert_close(residual, stage1["embeddings.word_embeddings.weight"]
                                   - gen_init["generator.embeddings.word_embeddings.weight"])
    else:
        assert model.generator.embeddings is model.discriminator.embeddings
    torch.manual_seed(2)
    objective_step(model, opt, [inputs(cfg, seed=2)], 1, torch.device("cpu"), "fp32", 1.0, objective=model)
    assert model(inputs(cfg)).rtd_loss is not None
    assert any(not torch.equal(p, gen_init[n]) for n, p in model.named_parameters() if id(p) in gen_own)


def test_first_stage_is_a_masked_lm_on_the_discriminator():
    model, cfg = electra(recipe="paper", two_stage_fraction=0.5)
    model.set_step(0, 10)
    x = inputs(cfg)
    out = model(x)
    assert out.rtd_loss is None and float(out.loss.detach()) == float(out.mlm_loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.generator.encoder.parameters())
    assert all(p.grad is None for p in model.discriminator_head.parameters())
    assert model.discriminator.encoder.layer[0].attention.self.query.weight.grad is not None
    # its logits are the discriminator MLM head's over the selected positions
    hidden = model.discriminator(x["masked_input_ids"], x["attention_mask"], x["token_type_ids"])
    logits = model.discriminator_mlm_head(hidden[x["mlm_mask"]])
    torch.testing.assert_close(out.mlm_logits, logits)


# --- the uniform-replacement curriculum ----------------------------------------------------------------

@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_uniform_share_of_replacements(share):
    model, _ = electra(recipe="paper")
    model.set_random_pool(torch.arange(5, V))
    model.uniform_share = share
    n = 40000
    logits = torch.full((n, V), -1e4)
    logits[:, 7] = 0.0  # the generator always proposes id 7
    original = torch.full((1, n), 9)
    torch.manual_seed(0)
    corrupted = model.corrupt(original, torch.ones(1, n, dtype=torch.bool), logits)[0]
    not7 = corrupted != 7
    expected = share * (1 - 1 / (V - 5))
    assert float(not7.float().mean()) == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n) + 1e-9)
    if share:  # uniform over the pool: never a special id, every decile of the pool about equally often
        assert int(corrupted[not7].min()) >= 5
        counts = torch.bincount((corrupted[not7] - 5) * 10 // (V - 5), minlength=10).float()
        assert float(counts.min() / counts.max()) > 0.85


def test_evaluation_uses_the_final_corruption():
    model, _ = electra(temperature_start=5.0, uniform_replace_start=0.5, curriculum_fraction=0.5)
    model.set_step(0, 100)
    assert (model.temperature, model.uniform_share) == (5.0, 0.5)
    model.set_final()
    assert (model.temperature, model.uniform_share, model.first_stage) == (1.0, 0.0, False)


# --- the plateau watch ----------------------------------------------------------------------------------

def valid(step: int, loss: float, q: float = 0.15, auc: float = 0.54) -> dict:
    return {"step": step, "valid_rtd_loss": loss, "valid_replaced_fraction": q, "valid_rtd_auc": auc}


def test_plateau_needs_several_evaluations_in_a_row_at_the_prior():
    prior = prior_rtd_loss(0.15)
    at = [valid(0, 0.69)] + [valid(100 * i, prior * (1 - 0.005)) for i in range(1, PLATEAU_EVALS + 1)]
    stuck = plateau(at)
    assert stuck is not None and stuck["steps"] == [100, 200, 300] and stuck["prior"] == pytest.approx(prior, abs=1e-6)
    assert "stayed at the all-original prior for 3 evaluations (steps 100-300" in stuck["message"]
    assert "objective.recipe small-budget" in stuck["message"] and "two_stage_fraction" in stuck["message"]
    assert plateau(at[:-1]) is None  # only two in a row
    below = at[:-1] + [valid(400, prior * 0.98)]  # 2% below the prior: learning
    assert plateau(below) is None
    assert plateau(below + [valid(500, prior), valid(600, prior), valid(700, prior)]) is not None


# --- the corrective LM ------------------------------------------------------------------------------------

def test_corrective_lm_recovers_originals_from_the_corrupted_text():
    model, cfg = electra(recipe="paper", corrective_lm_weight=2.0)
    x = inputs(cfg)
    torch.manual_seed(1)
    out = model(x)
    # the discriminator's MLM head, on the corrupted text, at the generator's positions, against the originals
    hidden = model.discriminator(out.corrupted_ids, x["attention_mask"], x["token_type_ids"])
    logits = model.discriminator_mlm_head(hidden[x["mlm_mask"]]).float()
    expected = torch.nn.functional.cross_entropy(logits, x["input_ids"][x["mlm_mask"]])
    assert float(out.corrective_lm_loss) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(out.mlm_loss) + 50 * float(out.rtd_loss)
                                                     + 2.0 * float(out.corrective_lm_loss), rel=1e-5)
    assert "corrective_lm_loss" in out.metrics()
    plain, _ = electra(recipe="paper")
    assert plain(x).corrective_lm_loss is None and not hasattr(plain, "discriminator_mlm_head")


def test_corrective_lm_counts_in_the_flops(tmp_path):
    from electrolite import flops
    model, cfg = electra(recipe="paper")
    paper, matmul = flops.mlm_head_train_flops(cfg.model, 32, 128, 0.15)
    mlm = flops.estimate(cfg.model, None, "mlm", False, 1, 32, 128, 0.15)
    encoder_only = 2.0 * 32 * flops._paper_forward(flops._Shape.of(cfg.model), 128, "none", flops.PAPER_OUTPUT_FRAC,
                                                   False)
    assert paper == pytest.approx(mlm.paper_flops_per_step - encoder_only)  # an MLM model's output layer
    assert paper > 0 and matmul > 0
