"""The fine-tuning recipe's parts: layer-wise LR decay, best-epoch selection, length bucketing,
batched prediction order, and the median over seeds.

The LR-decay and best-epoch tests run the real ``run_one`` on a tiny randomly initialised
encoder (spying on the optimizer and scripting the evaluation), so they check the code path
``electrolite finetune`` takes, not a copy of its arithmetic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from electrolite import finetune
from electrolite.config import FinetuneConfig, from_name
from electrolite.data.tokenizer import load_tokenizer, special_tokens
from electrolite.finetune import aggregate, bucket_batches, run_one
from electrolite.model import Encoder
from electrolite.tasks import Example, QAExample, Sentence, TaskData, get_task
from electrolite.tasks.model import LoadedEncoder, TaskModel, layer_depths
from electrolite.tasks.predict import predict_features, to_tensors
from electrolite.training.optim import linear_schedule

VOCAB = Path(__file__).parent / "integration" / "data" / "gutenberg-wordpiece-2000.txt"
WORDS = ("the garden was quiet and the old house stood by the river while a man walked slowly along "
         "the road towards the village in the evening light of a long summer day").split()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(VOCAB))


def sentences(n: int, seed: int = 0, low: int = 3, high: int = 30) -> list[str]:
    """n word sequences of random lengths in [low, high), in random (not length) order."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))) for _ in range(n)]


def loaded_encoder(tok, **overrides) -> LoadedEncoder:
    torch.manual_seed(0)
    config = from_name("tiny", vocab_size=tok.get_vocab_size(), **overrides)
    state = {k: v.clone() for k, v in Encoder(config).state_dict().items()}
    return LoadedEncoder(config, state, tok, "electra", "test")


def sst2_data(n_train: int = 40, n_dev: int = 16) -> TaskData:
    texts = sentences(n_train + n_dev, seed=1)
    examples = [Example(t, None, str(int("river" in t)), i + 2, "mem.tsv") for i, t in enumerate(texts)]
    return TaskData(examples[:n_train], {"dev": examples[n_train:]}, ("0", "1"), {})


def sst2_task(max_length: int = 32):
    return dataclasses.replace(get_task("sst2"), max_length=max_length)


def ft_config(tmp_path: Path, **kw) -> FinetuneConfig:
    values = dict(task="sst2", model="unit", out=str(tmp_path / "task"), batch_size=8, epochs=2, progress=False,
                  device="cpu", learning_rate=1e-3, precision="fp32")
    values.update(kw)
    return FinetuneConfig(**values)


# --- layer-wise learning-rate decay ------------------------------------------------------------


def expected_scale(name: str, layers: int, groups: int, decay: float) -> float:
    """ELECTRA's _get_layer_lrs: embeddings depth 0, layer i depth i+1, task head depth L+2;
    lr × decay^(L+2-depth). A shared weight group takes the depth of the last layer applying it."""
    if name.startswith(("encoder.embeddings.", "encoder.embeddings_project.")):
        depth = 0
    elif name.startswith("encoder.encoder.layer."):
        group = int(name.split(".")[3])
        depth = max(i for i in range(layers) if i * groups // layers == group) + 1
    else:
        assert name.startswith("head."), name
        depth = layers + 2
    return decay ** (layers + 2 - depth)


@pytest.mark.parametrize("layers,groups,embedding", [(4, 4, 32), (4, 1, 64)], ids=["electra-4-layers", "albert-shared"])
def test_layerwise_lr_decay_in_the_optimizer_run_one_builds(tok, tmp_path, monkeypatch, layers, groups, embedding):
    captured = {}
    real_adamw, real_new = finetune.adamw, finetune.new_task_model

    def spy_new(*args, **kwargs):
        captured["model"] = real_new(*args, **kwargs)
        return captured["model"]

    def spy_adamw(groups_, *args, **kwargs):
        captured["initial"] = [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups_]
        captured["optimizer"] = real_adamw(groups_, *args, **kwargs)
        return captured["optimizer"]

    monkeypatch.setattr(finetune, "new_task_model", spy_new)
    monkeypatch.setattr(finetune, "adamw", spy_adamw)
    loaded = loaded_encoder(tok, num_hidden_layers=layers, num_hidden_groups=groups, embedding_size=embedding)
    lr = 1e-3
    summary = run_one(ft_config(tmp_path, epochs=1, learning_rate=lr), tmp_path / "task", sst2_task(), sst2_data(),
                      loaded)

    model = captured["model"]
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of, wd_of = {}, {}
    for group_lr, wd, ids in captured["initial"]:
        for i in ids:
            assert names[i] not in lr_of, f"{names[i]} is in two groups"
            lr_of[names[i]], wd_of[names[i]] = group_lr, wd
    assert set(lr_of) == set(names.values())  # every parameter is optimised, once
    assert (embedding != 64) == any(n.startswith("encoder.embeddings_project.") for n in lr_of)
    for name, value in lr_of.items():
        assert value == pytest.approx(lr * expected_scale(name, layers, groups, 0.8), rel=1e-12), name
        no_decay = name.endswith(".bias") or "LayerNorm" in name
        assert wd_of[name] == (0.0 if no_decay else 0.01), name
    # The headline values, spelled out for the 4-layer ELECTRA case (L = 4):
    if groups == layers:
        assert lr_of["head.out_proj.weight"] == pytest.approx(lr) == lr_of["head.dense.weight"]
        assert lr_of["encoder.encoder.layer.3.attention.self.query.weight"] == pytest.approx(lr * 0.8 ** 2)
        assert lr_of["encoder.encoder.layer.0.attention.self.query.weight"] == pytest.approx(lr * 0.8 ** 5)
        assert lr_of["encoder.embeddings.word_embeddings.weight"] == pytest.approx(lr * 0.8 ** (layers + 2))
        assert lr_of["encoder.embeddings_project.weight"] == pytest.approx(lr * 0.8 ** (layers + 2))
    else:  # one shared group, applied last by layer 4: depth 4 like ELECTRA's top layer
        assert lr_of["encoder.encoder.layer.0.output.dense.weight"] == pytest.approx(lr * 0.8 ** 2)
    # The schedule scales every group alike: after the last step each group is at lr × scale × schedule
    total = summary["steps"]
    mult = linear_schedule(total - 1, int(0.1 * total), total)
    for g in captured["optimizer"].param_groups:
        assert g["lr"] == pytest.approx(lr * g["lr_scale"] * mult, rel=1e-12)
    depths, top = layer_depths(model)
    assert top == layers + 2 and max(depths.values()) == layers + 2 and min(depths.values()) == 0


def test_default_lr_and_decay_follow_electra():
    cfg = FinetuneConfig()
    assert cfg.resolved_layer_decay(64) == 0.8 and cfg.resolved_layer_decay(256) == 0.8
    assert cfg.resolved_layer_decay(1024) == 0.9  # large
    assert cfg.resolved_learning_rate(256) == 3e-4 and cfg.resolved_learning_rate(768) == 1e-4
    assert cfg.resolved_learning_rate(1024) == 5e-5
    assert (cfg.warmup_fraction, cfg.resolved_recipe("electra")["adam_epsilon"], cfg.weight_decay,
            cfg.batch_size) == (0.1, 1e-6, 0.01, 32)


# --- the best epoch is kept --------------------------------------------------------------------


def test_best_epoch_weights_and_predictions_are_kept(tok, tmp_path, monkeypatch):
    """Scripted dev scores 0.6, 0.9, 0.7: model.safetensors and predictions are epoch 2's."""
    script = [0.6, 0.9, 0.7]
    states = []

    def fake_score(task, model, examples, features, labels, *args):
        epoch = len(states) + 1
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"accuracy": script[epoch - 1]}, [{"line": ex.line, "epoch": epoch} for ex in examples]

    monkeypatch.setattr(finetune, "score", fake_score)
    out = tmp_path / "task"
    data = sst2_data()
    summary = run_one(ft_config(tmp_path, epochs=3), out, sst2_task(), data, loaded_encoder(tok))
    assert summary["best_epoch"] == 2 and summary["main"] == 0.9 and summary["main_metric"] == "dev_accuracy"
    saved = load_file(str(out / "model.safetensors"))
    assert set(saved) == set(states[1])
    for k, v in saved.items():
        torch.testing.assert_close(v, states[1][k], rtol=0, atol=0)
    assert any(not torch.equal(saved[k], states[2][k]) for k in saved)  # epoch 3 moved on, and was not kept
    rows = [json.loads(line) for line in (out / "predictions-dev.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2] * len(data.evals["dev"])
    assert [r["line"] for r in rows] == [ex.line for ex in data.evals["dev"]]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in lines if "dev_accuracy" in m]
    assert [(m["epoch"], m["dev_accuracy"]) for m in evals] == [(1, 0.6), (2, 0.9), (3, 0.7)]
    per_epoch = math.ceil(40 / 8)
    assert [m["step"] for m in evals] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert json.loads((out / "eval_results.json").read_text())["best_epoch"] == 2


def test_a_tie_keeps_the_earlier_epoch(tok, tmp_path, monkeypatch):
    calls = []

    def fake_score(task, model, examples, *args):
        calls.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"accuracy": 0.5}, [{"line": ex.line} for ex in examples]

    monkeypatch.setattr(finetune, "score", fake_score)
    out = tmp_path / "task"
    summary = run_one(ft_config(tmp_path, epochs=2), out, sst2_task(), sst2_data(), loaded_encoder(tok))
    assert summary["best_epoch"] == 1
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(v, calls[0][k]) for k, v in saved.items())


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_resolved_used_and_recorded(tok, tmp_path, monkeypatch, native):
    """precision auto: training and evaluation get the resolved value, eval_results.json records it,
    config.yaml keeps auto."""
    import yaml

    from electrolite.training import loop
    from electrolite.training import runtime as distributed
    monkeypatch.setattr(distributed, "cpu_has_bf16_matmul", lambda: native)
    used = []
    real_autocast = loop.autocast  # the shared train step's

    def spy_autocast(device, precision):
        used.append(precision)
        return real_autocast(device, "fp32")  # computing in fp32 is enough: this checks the plumbing

    monkeypatch.setattr(loop, "autocast", spy_autocast)

    def fake_score(task, model, examples, features, labels, pad_id, batch_size, device, precision):
        used.append(("score", precision))
        return {"accuracy": 0.5}, [{"line": ex.line} for ex in examples]

    monkeypatch.setattr(finetune, "score", fake_score)
    out = tmp_path / "task"
    summary = run_one(ft_config(tmp_path, epochs=1, precision="auto"), out, sst2_task(), sst2_data(),
                      loaded_encoder(tok))
    expected = "bf16" if native else "fp32"
    assert used == [expected] * summary["steps"] + [("score", expected)]
    assert summary["precision"] == expected and summary["compiled"] is False
    assert json.loads((out / "eval_results.json").read_text())["precision"] == expected
    assert yaml.safe_load((out / "config.yaml").read_text())["finetune"]["precision"] == "auto"


# --- length bucketing --------------------------------------------------------------------------


def padding_waste(batches: list[np.ndarray], lengths: np.ndarray) -> float:
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1 - int(lengths.sum()) / padded


@pytest.mark.parametrize("n,batch_size", [(5000, 32), (1000, 7), (20, 32)])
def test_bucket_batches_cover_every_index_once_with_little_padding(n, batch_size):
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 128, size=n)  # like SST-2/MRPC token counts: 4 to 127
    batches = bucket_batches(lengths, batch_size, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))  # every index exactly once
    sizes = [len(b) for b in batches]
    assert sizes.count(batch_size) >= len(batches) - 1 and all(0 < s <= batch_size for s in sizes)
    assert len(batches) == math.ceil(n / batch_size)
    random_batches = [p for p in np.array_split(np.random.default_rng(2).permutation(n), len(batches))]
    bucketed, random = padding_waste(batches, lengths), padding_waste(random_batches, lengths)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in random_batches])
    if n >= 1000:
        assert random > 0.3  # random batches of uniform lengths waste a third or more on padding
        assert bucketed < 0.1 * random, (bucketed, random)
        assert spread < 0.1 * random_spread, (spread, random_spread)
    else:  # one chunk, one batch: nothing to gain
        assert bucketed == pytest.approx(random)


def test_bucket_batches_shuffle_by_seed():
    lengths = np.random.default_rng(0).integers(4, 128, size=3000)
    a = bucket_batches(lengths, 32, np.random.default_rng(5))
    b = bucket_batches(lengths, 32, np.random.default_rng(5))
    c = bucket_batches(lengths, 32, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # batches are not served shortest-first: the order of batch lengths is shuffled
    firsts = [int(lengths[x].max()) for x in a]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


# --- predict_features: batched, sorted by length, returned in input order ----------------------


def _one_by_one(model: TaskModel, features, pad: int, keys: tuple[str, ...]) -> dict[str, list[np.ndarray]]:
    out = {k: [] for k in keys}
    with torch.no_grad():
        for i in range(len(features)):
            batch = features.batch([i], pad)
            inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            result = model(to_tensors(inputs, torch.device("cpu")))
            for k in keys:
                out[k].append(result[k][0].numpy())
    return out


@pytest.mark.parametrize("family", ["classification", "regression", "tagging", "qa"])
def test_predict_features_returns_outputs_in_input_order(tok, family):
    config = from_name("tiny", vocab_size=tok.get_vocab_size())
    torch.manual_seed(0)
    texts = sentences(45, seed=3, high=40)
    if family in ("classification", "regression"):
        task = get_task("sst2") if family == "classification" else get_task("stsb")
        labels = ["0", "1"] if family == "classification" else None
        examples = [Example(t, None if family == "classification" else t[::-1][:20], None, i)
                    for i, t in enumerate(texts)]
        features = task.encode(examples, tok, labels)
        model = TaskModel(config, family, 3 if family == "classification" else 0)
    elif family == "tagging":
        task = get_task("conll2003")
        features = task.encode([Sentence(t.split(), None, i) for i, t in enumerate(texts)], tok)
        model = TaskModel(config, family, 9)
    else:
        task = dataclasses.replace(get_task("squad1"), max_length=48, max_query_length=8, doc_stride=16)
        examples = [QAExample(str(i), " ".join(t.split()[:5]) + " ?", " ".join(texts[(i + 1) % 45].split() * 2))
                    for i, t in enumerate(texts[:20])]
        features = task.encode(examples, tok)
        assert len(features) > len(examples)  # some contexts span several windows
        model = TaskModel(config, family)
    model.eval()
    lengths = features.lengths
    assert len(set(lengths.tolist())) > 5 and not (np.all(np.diff(lengths) <= 0))  # needs reordering
    pad = special_tokens(tok).pad_token_id
    keys = ("start_logits", "end_logits") if family == "qa" else ("logits",)
    got = predict_features(model, features, pad, batch_size=8, device=torch.device("cpu"))
    want = _one_by_one(model, features, pad, keys)
    for k in keys:
        assert len(got[k]) == len(features)
        for i, (g, w) in enumerate(zip(got[k], want[k])):
            assert np.shape(g) == np.shape(w), (k, i)
            if family in ("tagging", "qa"):
                assert len(g) == lengths[i]  # padding cut off
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{k} {i}")
    if family == "regression":
        assert all(np.ndim(g) == 0 for g in got["logits"])


# --- the median over seeds ---------------------------------------------------------------------


def test_aggregate_medians_and_spread():
    runs = [{"results": {"dev": {"accuracy": a, "f1": f}}} for a, f in ((0.7, 0.5), (0.9, 0.1), (0.8, 0.3))]
    agg = aggregate(runs)
    assert set(agg) == {"dev_accuracy", "dev_f1"}
    acc = agg["dev_accuracy"]
    assert acc["median"] == 0.8 == sorted(acc["values"])[1]
    assert (acc["min"], acc["max"]) == (0.7, 0.9)
    assert acc["std"] == pytest.approx(statistics.pstdev([0.7, 0.9, 0.8]))
    assert agg["dev_f1"]["median"] == 0.3 and agg["dev_f1"]["values"] == [0.5, 0.1, 0.3]
    single = aggregate(runs[:1])["dev_accuracy"]
    assert single["std"] == 0.0 and single["median"] == 0.7
