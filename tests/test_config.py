"""Configs: derived sizes, the named-sizes table and its parameter counts, unknown keys, YAML, precedence."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import torch

from electrolite import config as config_module
from electrolite.config import (
    SIZES,
    EncoderConfig,
    FinetuneConfig,
    ObjectiveConfig,
    PretrainConfig,
    TrainConfig,
    build,
    field_docs,
    from_name,
    iter_fields,
    load_yaml,
    parse_duration,
    resolve_pretrain_config,
    save_yaml,
    size_objective_defaults,
    to_dict,
)
from electrolite.errors import UserError
from electrolite.model import Encoder, count_parameters

CONFIG_CLASSES = (EncoderConfig, ObjectiveConfig, TrainConfig, PretrainConfig)


# --- derivations -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, heads, ffn, embedding, layers, groups", [
    ("electra-small", 4, 1024, 128, 12, 12),
    ("bert-base", 12, 3072, 768, 12, 12),
    ("electra-large", 16, 4096, 1024, 24, 24),
    ("albert-base", 12, 3072, 128, 12, 1),
    ("albert-large", 16, 4096, 128, 24, 1),
    ("tiny", 2, 256, 64, 2, 2),  # tiny sets 2 heads explicitly (64 // 64 would give 1)
])
def test_from_name_derives_heads_ffn_embedding_groups(name, heads, ffn, embedding, layers, groups):
    cfg = from_name(name)
    assert cfg.num_attention_heads == heads
    assert cfg.intermediate_size == ffn
    assert cfg.embedding_size == embedding
    assert cfg.num_hidden_layers == layers
    assert cfg.num_hidden_groups == groups
    assert cfg.head_dim == cfg.hidden_size // heads


def test_from_name_overrides_rederive():
    cfg = from_name("electra-small", num_hidden_layers=2, hidden_size=512)
    assert (cfg.num_hidden_layers, cfg.num_hidden_groups) == (2, 2)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (512, 8, 2048)
    assert cfg.embedding_size == 128  # the size's own value, not re-derived
    # Explicit values win over derivations; hidden < 64 still gets one head.
    cfg = from_name("bert-base", hidden_size=32, num_attention_heads=0, intermediate_size=100, embedding_size=0)
    assert (cfg.num_attention_heads, cfg.intermediate_size, cfg.embedding_size) == (1, 100, 32)


def test_unknown_size_is_user_error():
    with pytest.raises(UserError, match=r"unknown size 'electra-huge'.*electra-small"):
        from_name("electra-huge")


def _size_comments() -> dict[str, int]:
    """Parameter counts written in the comment line above each SIZES entry."""
    source = inspect.getsource(config_module)
    table = source[source.index("SIZES: dict"):source.index("_OBJECTIVE_SIZE_KEYS =")]
    found = re.findall(r"#\s*([\d,]+)[^\n]*\n\s*\"([\w-]+)\":\s*dict\(", table)
    return {name: int(count.replace(",", "")) for count, name in found}


def test_size_comments_cover_every_size():
    counts = _size_comments()
    assert set(counts) == set(SIZES)
    # The comments restated, so a table edit that drops a comment's number is visible here too.
    assert counts == {
        "tiny": 2_086_400, "bert-small": 13_483_008, "bert-base": 108_891_648,
        "electra-small": 13_483_008, "electra-base": 108_891_648, "electra-large": 334_092_288,
        "albert-base": 11_159_808, "albert-large": 16_701_184,
    }


@pytest.mark.parametrize("name", sorted(SIZES))
def test_size_comment_matches_parameter_count(name):
    expected = _size_comments()[name]
    with torch.device("meta"):  # no memory, no init cost: only shapes matter
        encoder = Encoder(from_name(name, vocab_size=30522))
    assert count_parameters(encoder) == expected


def test_size_objective_defaults():
    assert size_objective_defaults("electra-small") == {"generator_size": 0.25}
    assert size_objective_defaults("electra-base") == {"generator_size": pytest.approx(1 / 3)}
    assert size_objective_defaults("bert-base") == {}
    assert "generator_size" not in dataclasses.asdict(from_name("electra-base"))


# --- validation ----------------------------------------------------------------------------------

def test_build_rejects_unknown_key_with_dotted_name():
    with pytest.raises(UserError, match=r"^unknown config key: model\.hiden_size$"):
        build(EncoderConfig, {"hiden_size": 64}, "model")
    with pytest.raises(UserError, match=r"^unknown config keys: model\.a, model\.b$"):
        build(EncoderConfig, {"b": 1, "a": 2}, "model")
    with pytest.raises(UserError, match=r"model\.bogus"):
        from_name("tiny", bogus=1)


@pytest.mark.parametrize("file_data, overrides, key", [
    ({"model": {"num_layers": 2}}, None, "model.num_layers"),
    ({"objective": {"mask_rate": 0.2}}, None, "objective.mask_rate"),
    (None, {"train.lr": "1e-3"}, "train.lr"),
    ({"sise": "tiny"}, None, "sise"),
    (None, {"modle.hidden_size": 64}, "modle"),
])
def test_resolve_rejects_unknown_keys(file_data, overrides, key):
    with pytest.raises(UserError, match=rf"unknown config key.*\b{re.escape(key)}\b"):
        resolve_pretrain_config(file_data, overrides)


def test_wrong_types_name_the_key():
    with pytest.raises(UserError, match=r"config train\.steps must be int, got 'many'"):
        resolve_pretrain_config(overrides={"train.steps": "many"})
    with pytest.raises(UserError, match=r"config model must be a mapping"):
        resolve_pretrain_config({"model": 3})
    cfg = resolve_pretrain_config(overrides={"train.steps": "12", "train.learning_rate": "1e-3",
                                             "objective.sop": "true"})
    assert (cfg.train.steps, cfg.train.learning_rate, cfg.objective.sop) == (12, 1e-3, True)


def test_hidden_not_divisible_by_heads():
    with pytest.raises(UserError, match=r"^model\.hidden_size 100 is not divisible by model\.num_attention_heads 3$"):
        EncoderConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(UserError, match=r"model\.hidden_size 96 is not divisible by model\.num_attention_heads 5"):
        resolve_pretrain_config(overrides={"size": "tiny", "model.hidden_size": 96, "model.num_attention_heads": 5})


def test_layers_not_divisible_by_groups():
    with pytest.raises(UserError, match=r"^model\.num_hidden_layers 12 is not divisible by model\.num_hidden_groups 5$"):
        from_name("electra-small", num_hidden_groups=5)
    assert from_name("electra-small", num_hidden_groups=4).num_hidden_groups == 4


@pytest.mark.parametrize("cls, kwargs, pattern", [
    (EncoderConfig, dict(hidden_size=0), r"model\.hidden_size must be at least 1, got 0"),
    (EncoderConfig, dict(hidden_act="swish"), r"model\.hidden_act"),
    (EncoderConfig, dict(hidden_dropout_prob=1.0), r"model\.hidden_dropout_prob must be in \[0, 1\)"),
    (EncoderConfig, dict(vocab_size=10, pad_token_id=10), r"model\.pad_token_id 10 is outside"),
    (ObjectiveConfig, dict(name="bert"), r"objective\.name"),
    (ObjectiveConfig, dict(masking="span"), r"objective\.masking"),
    (ObjectiveConfig, dict(mask_prob=0.0), r"objective\.mask_prob"),
    (ObjectiveConfig, dict(mask_token_frac=0.9, random_token_frac=0.2), r"must not exceed 1"),
    (TrainConfig, dict(steps=0), r"train\.steps must be at least 1, got 0"),
    (TrainConfig, dict(precision="fp16"), r"train\.precision"),
    (TrainConfig, dict(budget="soon"), r"train\.budget: cannot read duration 'soon'"),
    (TrainConfig, dict(parallel="bogus"), r"^train\.parallel must be ddp or fsdp, got 'bogus'$"),
    (FinetuneConfig, dict(parallel="fsdp2"), r"^finetune parallel must be ddp or fsdp, got 'fsdp2'$"),
])
def test_bad_values_are_user_errors(cls, kwargs, pattern):
    with pytest.raises(UserError, match=pattern):
        cls(**kwargs)


def test_objective_split_defaults():
    electra, mlm = ObjectiveConfig(name="electra"), ObjectiveConfig(name="mlm")
    assert (electra.mask_token_frac, electra.random_token_frac) == (0.85, 0.0)
    assert (mlm.mask_token_frac, mlm.random_token_frac) == (0.8, 0.1)
    assert TrainConfig(steps=1000).resolved_warmup_steps == 100
    assert TrainConfig(steps=10**6).resolved_warmup_steps == 10000
    assert TrainConfig(steps=1000, warmup_steps=7).resolved_warmup_steps == 7


# --- YAML and precedence -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {},
    {"size": "electra-base", "objective.sop": True, "train.budget": "1h30m"},
    {"size": "albert-base", "objective.name": "mlm", "objective.masking": "ngram", "model.num_hidden_layers": 6},
    {"size": "tiny", "model.vocab_size": 1000, "objective.generator_size": 0.5, "train.precision": "bf16"},
])
def test_yaml_round_trip(tmp_path, overrides):
    cfg = resolve_pretrain_config(overrides=overrides)
    path = tmp_path / "config.yaml"
    save_yaml(to_dict(cfg), path)
    assert not (tmp_path / ".config.yaml.tmp").exists()
    again = resolve_pretrain_config(load_yaml(path))
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)


def test_load_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="no such config file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: [1, 2\n")
    with pytest.raises(UserError, match=r"bad\.yaml line \d+: invalid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must be a YAML mapping, got list"):
        load_yaml(listy)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_precedence_size_then_file_then_overrides():
    file_data = {
        "size": "electra-small",
        "model": {"hidden_size": 512, "num_hidden_layers": 6},
        "objective": {"mask_prob": 0.2},
        "train": {"steps": 50, "learning_rate": 1e-3},
    }
    overrides = {"model.num_hidden_layers": "4", "train.steps": 7}
    cfg = resolve_pretrain_config(file_data, overrides)
    assert cfg.size == "electra-small"
    assert cfg.model.hidden_size == 512           # file over size
    assert cfg.model.num_hidden_layers == 4       # override over file
    assert cfg.model.embedding_size == 128        # size, untouched
    assert cfg.model.num_attention_heads == 8     # derived from the file's hidden size
    assert cfg.objective.mask_prob == 0.2         # file over default
    assert cfg.objective.generator_size == 0.25   # size's objective default
    assert (cfg.train.steps, cfg.train.learning_rate) == (7, 1e-3)

    # The size itself: override over file; the size's objective default yields to the file.
    cfg = resolve_pretrain_config({"size": "electra-small", "objective": {"generator_size": 0.5}},
                                  {"size": "electra-base"})
    assert (cfg.size, cfg.model.hidden_size, cfg.model.embedding_size) == ("electra-base", 768, 768)
    assert cfg.objective.generator_size == 0.5
    assert resolve_pretrain_config(overrides={"size": "electra-base"}).objective.generator_size == pytest.approx(1 / 3)


def test_saved_config_takes_top_level_overrides(tmp_path):
    # A run's config.yaml holds size, corpus and out; the command line may override each of them.
    saved = resolve_pretrain_config(overrides={"size": "tiny", "corpus": "c1", "out": "r1"})
    save_yaml(to_dict(saved), tmp_path / "config.yaml")
    cfg = resolve_pretrain_config(load_yaml(tmp_path / "config.yaml"),
                                  {"corpus": "c2", "out": "r2", "size": "tiny", "train.steps": 3})
    assert (cfg.size, cfg.corpus, cfg.out, cfg.train.steps) == ("tiny", "c2", "r2", 3)
    assert cfg.model == saved.model


def test_generator_config_electra_small():
    cfg = resolve_pretrain_config(overrides={"size": "electra-small"})
    gen = cfg.generator_config()
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (64, 1, 256)
    assert (gen.embedding_size, gen.num_hidden_layers, gen.num_hidden_groups) == (128, 12, 12)
    assert gen.vocab_size == cfg.model.vocab_size
    # The discriminator is untouched.
    assert (cfg.model.hidden_size, cfg.model.num_attention_heads, cfg.model.intermediate_size) == (256, 4, 1024)


def test_generator_config_electra_base_and_large():
    gen = resolve_pretrain_config(overrides={"size": "electra-base"}).generator_config()
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size, gen.embedding_size) == (256, 4, 1024, 768)
    assert gen.num_hidden_layers == 12
    gen = resolve_pretrain_config(overrides={"size": "electra-large"}).generator_config()
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size, gen.embedding_size) == (256, 4, 1024, 1024)
    assert gen.num_hidden_layers == 24


def test_generator_config_depth_sharing_and_mlm():
    cfg = resolve_pretrain_config(overrides={"size": "albert-base", "objective.generator_layers": 0.5})
    gen = cfg.generator_config()
    assert (gen.hidden_size, gen.num_hidden_layers, gen.num_hidden_groups) == (192, 6, 1)
    cfg = resolve_pretrain_config(overrides={"size": "electra-small", "model.num_hidden_groups": 4,
                                             "objective.generator_layers": 0.5})
    assert cfg.generator_config().num_hidden_groups == 6  # 4 groups do not divide 6 layers: no sharing
    assert resolve_pretrain_config(overrides={"objective.name": "mlm"}).generator_config() is None


# --- durations and docs --------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45", 45), ("1.5h", 5400),
    ("1d", 86400), (" 2H ", 7200), ("1h 30m", 5400), ("0.5", 0.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "1h30", "h", "-5m", "1h30mfoo"])
def test_parse_duration_rejects(text):
    with pytest.raises(UserError, match="cannot read duration"):
        parse_duration(text)


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if not docs.get(n)]
    assert missing == []
    assert set(docs) == set(names)
    assert all("\n" not in d and d == d.strip() for d in docs.values())


def test_help_lists_every_scalar_field_with_docs():
    rows = list(iter_fields(PretrainConfig))
    scalar = {"": [f.name for f in dataclasses.fields(PretrainConfig)
                   if f.name not in ("model", "objective", "train")]}
    expected = (scalar[""]
                + [f"model.{f.name}" for f in dataclasses.fields(EncoderConfig)]
                + [f"objective.{f.name}" for f in dataclasses.fields(ObjectiveConfig)]
                + [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)])
    assert [r[0] for r in rows] == expected
    assert all(doc for _, _, _, doc in rows)
    defaults = {name: default for name, _, default, _ in rows}
    assert defaults["model.hidden_size"] == 256 and defaults["train.learning_rate"] == 5e-4
