"""Typed configs: the encoder (Hugging Face field names), the objective, training, and the run.

Every field's docstring (the string literal under it) is its ``--help`` text. Configs are read
from YAML with unknown keys rejected, and any field can be overridden on the command line
with a dotted name (``--model.num_hidden_layers 2``, ``--train.learning_rate 1e-3``).

The named sizes are data (``SIZES``), never branched on: ``from_name("electra-small",
num_hidden_layers=2)`` gives an ``EncoderConfig``; ``size_objective_defaults(name)`` gives the
objective settings that belong to the size (the generator's fraction of the hidden size).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from electrolite.configio import (  # noqa: F401  (re-exported: callers use config.build, config.load_yaml ...)
    _undot,
    build,
    coerce,
    field_docs,
    iter_fields,
    load_yaml,
    save_yaml,
    to_dict,
)
from electrolite.errors import UserError, shown_repr


@dataclass
class EncoderConfig:
    """The BERT/ELECTRA/ALBERT post-LayerNorm encoder, with Hugging Face field names."""

    vocab_size: int = 30522
    """Number of token ids (set from the tokenizer when pre-training)."""
    hidden_size: int = 256
    """Width of every transformer layer."""
    num_hidden_layers: int = 12
    """Number of transformer layers (applications, counting shared ones)."""
    num_attention_heads: int = 0
    """Attention heads; 0 derives hidden_size // 64 (at least 1)."""
    intermediate_size: int = 0
    """Feed-forward width; 0 derives 4 × hidden_size."""
    embedding_size: int = 0
    """Token embedding width; 0 means hidden_size. Smaller values factorize the embedding (ALBERT/ELECTRA): V·E + E·H parameters."""
    num_hidden_groups: int = 0
    """Layer groups with their own weights; 0 means one per layer (no sharing), 1 shares one set across all layers (ALBERT)."""
    hidden_act: str = "gelu"
    """Feed-forward activation: gelu, gelu_new, relu."""
    hidden_dropout_prob: float = 0.1
    """Dropout on embeddings and every residual branch."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities."""
    max_position_embeddings: int = 512
    """Longest sequence the position embeddings cover."""
    type_vocab_size: int = 2
    """Number of segment (token type) ids."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation."""
    pad_token_id: int = 0
    """Id of the padding token (set from the tokenizer)."""

    def __post_init__(self) -> None:
        if not self.num_attention_heads:
            self.num_attention_heads = max(1, self.hidden_size // 64)
        if not self.intermediate_size:
            self.intermediate_size = 4 * self.hidden_size
        if not self.embedding_size:
            self.embedding_size = self.hidden_size
        if not self.num_hidden_groups:
            self.num_hidden_groups = self.num_hidden_layers
        self.validate()

    def validate(self) -> None:
        """Raise UserError for sizes that cannot build an encoder."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "embedding_size", "num_hidden_groups",
                     "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"model.hidden_size {self.hidden_size} is not divisible by "
                            f"model.num_attention_heads {self.num_attention_heads}")
        if self.num_hidden_layers % self.num_hidden_groups:
            raise UserError(f"model.num_hidden_layers {self.num_hidden_layers} is not divisible by "
                            f"model.num_hidden_groups {self.num_hidden_groups}")
        if self.hidden_act not in ("gelu", "gelu_new", "relu"):
            raise UserError(f"model.hidden_act must be gelu, gelu_new or relu, got {self.hidden_act!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise UserError(f"model.pad_token_id {self.pad_token_id} is outside the vocabulary ({self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ELECTRA recipes: the values a field left at -1 (or "") takes. "paper" is Clark et al. 2020 as the reference
# code runs it; "small-budget" is what STUDY.md's screen at 1e14 FLOPs found to leave the all-original plateau.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(generator_lr_scale=1.0, uniform_replace_start=0.0, curriculum_fraction=0.0,
                  two_stage_fraction=0.0, embedding_sharing="shared"),
    "small-budget": dict(generator_lr_scale=0.05, embedding_sharing="gdes", temperature_start=2.0,
                         uniform_replace_start=0.5, curriculum_fraction=1.0, two_stage_fraction=0.3),
}
# What a new ELECTRA run that names no recipe gets: at 1e14 FLOPs small-budget averaged 48.5 over 4 tasks × 3 seeds
# against the paper recipe's 43.2 and masked LM's 48.2 (STUDY.md). configs/electra-*.yaml name paper.
DEFAULT_RECIPE = "small-budget"


@dataclass
class ObjectiveConfig:
    """What the encoder learns: ELECTRA's replaced-token detection or BERT's masked LM, optionally with SOP."""

    name: str = "electra"
    """electra (generator + discriminator, replaced-token detection) or mlm (BERT's masked LM)."""
    sop: bool = False
    """Add ALBERT's sentence-order prediction on the two segments (half of them swapped)."""
    mask_prob: float = 0.15
    """Fraction of real tokens selected for masking in each sequence."""
    masking: str = "token"
    """How positions are chosen: token, whole_word (all sub-words of a word) or ngram (ALBERT: spans of n ≤ max_ngram words, p(n) ∝ 1/n)."""
    max_ngram: int = 3
    """Longest n-gram (in words) for masking=ngram."""
    mask_token_frac: float = -1.0
    """Of the selected positions, the share replaced by [MASK]; -1 derives it (mlm 0.8, electra 0.85)."""
    random_token_frac: float = -1.0
    """Of the selected positions, the share replaced by a random token; -1 derives it (mlm 0.1, electra 0.0). The rest stay unchanged."""
    generator_size: float = 0.25
    """ELECTRA: generator hidden size as a fraction of the discriminator's (heads = hidden/64, FFN = 4×hidden)."""
    generator_layers: float = 1.0
    """ELECTRA: generator depth as a fraction of the discriminator's."""
    tie_encoders: bool = False
    """ELECTRA: the generator is the discriminator's encoder, all weights tied (the paper's Section 3.1:
    GLUE 84.4 tying all weights, 84.3 tying embeddings only; needs generator_size and generator_layers 1,
    so a step costs two full passes). The discriminator then learns context from the masked-LM signal too."""
    generator_weight: float = 1.0
    """ELECTRA: weight of the generator's masked-LM loss."""
    discriminator_weight: float = 50.0
    """ELECTRA: weight of the discriminator's replaced-token-detection loss."""
    sop_weight: float = 1.0
    """Weight of the sentence-order loss."""
    temperature: float = 1.0
    """ELECTRA: temperature of the generator's sampling distribution (where a curriculum ends)."""
    recipe: str = "paper"
    """ELECTRA: which recipe the fields left at -1 (or "") take. small-budget, the default of `electrolite pretrain`,
    study and demo: a masked-LM warm start for 30% of the steps, then GDES embeddings, the generator at 1/20 of the
    learning rate, and a curriculum over the rest of the run from temperature 2 and half uniform replacements (at
    1e14 FLOPs its discriminator left the all-original plateau and it fine-tuned level with masked LM: STUDY.md).
    paper: Clark et al. 2020 exactly, for paper-sized budgets; a run dir written before this field existed reads
    as paper. Fields set explicitly win."""
    generator_lr_scale: float = -1.0
    """ELECTRA: the generator's parameters learn at this multiple of the learning rate, in AdamW groups of their
    own (under Adam the loss weights do not slow the generator, only its learning rate does: Dong et al., ICML
    2023). -1 derives it from the recipe (paper 1)."""
    decoupled_training: bool = False
    """ELECTRA: clip the generator's and the discriminator's gradients separately, as two models with their own
    updates would be (microsoft/DeBERTa rtd_task.py `decoupled_training`); off: one global norm, as the paper."""
    temperature_start: float = -1.0
    """ELECTRA curriculum: the sampling temperature at step 0, annealed linearly to `temperature` over
    curriculum_fraction of the steps (Fast-ELECTRA, ICLR 2024, anneals its generator's temperature). A high
    start makes early replacements easy to spot. -1 derives it from the recipe (paper: no curriculum)."""
    uniform_replace_start: float = -1.0
    """ELECTRA curriculum: at step 0 this share of the replacements is a uniformly random token instead of the
    generator's sample, annealed linearly to 0 over curriculum_fraction of the steps. -1 derives it (paper 0)."""
    curriculum_fraction: float = -1.0
    """ELECTRA curriculum: the share of the steps over which temperature_start and uniform_replace_start anneal
    to their end values (0: no curriculum). -1 derives it from the recipe (paper 0)."""
    two_stage_fraction: float = -1.0
    """ELECTRA two-stage warm start: the first this share of the steps trains the discriminator's encoder as a
    masked LM (its own MLM head, tied to its embeddings); then replaced-token detection continues from it with the
    generator (the paper's Section 3.2 two-stage variant; both stages count in the FLOPs). -1 derives it (paper 0)."""
    corrective_lm_weight: float = 0.0
    """ELECTRA: also train the discriminator to recover the original token at every position the generator
    corrupted, from the corrupted text (a masked-LM head on the discriminator, tied to its embeddings; COCO-LM's
    corrective language modelling, Meng et al. 2021, on the masked positions), weighted by this; 0: off, as the
    paper. Its output layer counts in the FLOPs."""
    embedding_sharing: str = ""
    """ELECTRA: shared (generator and discriminator train one embedding module, as the paper) or gdes
    (DeBERTaV3's gradient-disentangled sharing: the discriminator embeds with stop-gradient(generator's
    embeddings) + a zero-initialised residual, so replaced-token detection does not pull on the generator's
    table; exports fold the residual in). "" derives it from the recipe (paper: shared)."""

    def __post_init__(self) -> None:
        if self.mask_token_frac < 0:
            self.mask_token_frac = 0.85 if self.name == "electra" else 0.8
        if self.random_token_frac < 0:
            self.random_token_frac = 0.0 if self.name == "electra" else 0.1
        if self.recipe not in RECIPES:
            raise UserError(f"objective.recipe must be {' or '.join(RECIPES)}, got {shown_repr(self.recipe)}")
        for key, value in RECIPES[self.recipe].items():
            if getattr(self, key) in (-1.0, ""):
                setattr(self, key, value)  # fields still at -1 or "" take the recipe's value
        if self.temperature_start < 0:
            self.temperature_start = self.temperature
        self.validate()

    def curriculum(self, step: int, steps: int) -> tuple[float, float]:
        """(sampling temperature, uniform-replacement share) at `step` of `steps`: a pure function of the step,
        so a resumed run corrupts exactly as an uninterrupted one."""
        span = self.curriculum_fraction * steps
        done = min(1.0, step / span) if span > 0 else 1.0
        t = self.temperature_start + (self.temperature - self.temperature_start) * done
        return t, self.uniform_replace_start * (1.0 - done)

    def first_stage_steps(self, steps: int) -> int:
        """Steps of the two-stage warm start's masked-LM stage (0: none)."""
        return int(round(self.two_stage_fraction * steps)) if self.name == "electra" else 0

    def validate(self) -> None:
        if self.name not in ("electra", "mlm"):
            raise UserError(f"objective.name must be electra or mlm, got {self.name!r}")
        if self.masking not in ("token", "whole_word", "ngram"):
            raise UserError(f"objective.masking must be token, whole_word or ngram, got {self.masking!r}")
        if not 0.0 < self.mask_prob < 1.0:
            raise UserError(f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.mask_token_frac + self.random_token_frac > 1.0 + 1e-9:
            raise UserError("objective.mask_token_frac + objective.random_token_frac must not exceed 1")
        if not 1 <= self.max_ngram <= 10:
            raise UserError(f"objective.max_ngram must be in 1..10, got {self.max_ngram}")
        if not 0.0 < self.generator_size <= 1.0 or not 0.0 < self.generator_layers <= 1.0:
            raise UserError("objective.generator_size and objective.generator_layers must be in (0, 1]")
        if self.tie_encoders and (self.name != "electra" or self.generator_size != 1.0 or self.generator_layers != 1.0):
            raise UserError("objective.tie_encoders needs objective.name electra and generator_size and "
                            "generator_layers 1 (one encoder for both)")
        if self.temperature <= 0 or self.temperature_start <= 0:
            raise UserError(f"objective.temperature and temperature_start must be positive, got "
                            f"{self.temperature} and {self.temperature_start}")
        for key in ("uniform_replace_start", "curriculum_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(f"objective.{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0.0 <= self.two_stage_fraction < 1.0:
            raise UserError(f"objective.two_stage_fraction must be in [0, 1), got {self.two_stage_fraction}")
        if self.corrective_lm_weight < 0:
            raise UserError(f"objective.corrective_lm_weight must not be negative, got {self.corrective_lm_weight}")
        if self.generator_lr_scale <= 0:
            raise UserError(f"objective.generator_lr_scale must be positive, got {self.generator_lr_scale}")
        if self.embedding_sharing not in ("shared", "gdes"):
            raise UserError(f"objective.embedding_sharing must be shared or gdes, got {shown_repr(self.embedding_sharing)}")
        if self.tie_encoders and (self.generator_lr_scale != 1.0 or self.embedding_sharing != "shared"
                                  or self.two_stage_fraction > 0):
            raise UserError("objective.tie_encoders (one encoder for both) needs generator_lr_scale 1, "
                            "embedding_sharing shared and two_stage_fraction 0")


@dataclass
class TrainConfig:
    """Optimisation, precision, evaluation and checkpointing of a pre-training run."""

    steps: int = 10000
    """Optimizer steps."""
    batch_size: int = 128
    """Sequences per micro-batch (per process); the global batch is batch_size × gradient_accumulation_steps × world size."""
    gradient_accumulation_steps: int = 1
    """Micro-batches summed into one optimizer step."""
    learning_rate: float = 5e-4
    """Peak learning rate (ELECTRA-Small 5e-4, Base 2e-4)."""
    warmup_steps: int = -1
    """Linear warm-up steps, then linear decay to 0; -1 derives min(10000, 10% of steps)."""
    lr_schedule: str = "linear"
    """linear (warm up to the peak over warmup_steps, then decay linearly to 0 at the last step, as BERT) or
    electra (the ELECTRA reference's: linear decay from the peak over all steps, multiplied by min(1, step/warmup),
    so the peak is never quite reached)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases or LayerNorm)."""
    adam_beta1: float = 0.9
    """AdamW β1."""
    adam_beta2: float = 0.999
    """AdamW β2."""
    adam_epsilon: float = 1e-6
    """AdamW ε."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables."""
    max_nonfinite_steps: int = 10
    """Stop after this many steps in a row with a non-finite loss or gradient (each is skipped and counted,
    a finite step resets the count); no checkpoint of that state is written, `latest` keeps naming the last
    good one, summary.json says why and the command exits with status 2. 0: never stop."""
    precision: str = "auto"
    """auto, fp32 or bf16 (autocast). auto is bf16 on GPUs with bf16 tensor cores and on CPUs with native
    bf16 matrix units (AMX-BF16 or AVX512-BF16), else fp32; config.yaml keeps auto, so a resumed run decides
    again on its machine, and summary.json records what ran."""
    compile: str = "auto"
    """torch.compile the encoders: on, off, or auto (on for CUDA; off on CPU, where compiling electra-small's
    two encoders took 123 s on 2 cores and the compiled step was no faster than eager). Without the compiler
    toolchain (triton on CUDA, a C++ compiler on CPU) it warns once and runs eagerly."""
    seed: int = 0
    """Seed of initialisation, masking, sampling and data order."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    parallel: str = "ddp"
    """Under torchrun: ddp (every process holds the whole model) or fsdp (parameters, gradients and optimizer
    state are sharded across the processes, for models that do not fit on one device). In one process both
    are the same; checkpoints are the same full files either way, so a run resumes under the other."""
    save_every: int = 1000
    """Write a resumable checkpoint every this many steps (and always at the end)."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    eval_every: int = 500
    """Validate every this many steps (and at the end); 0 only at the end."""
    eval_batches: int = 20
    """Validation batches per evaluation (fixed, seeded masks, so evaluations compare)."""
    log_every: int = 10
    """Write a metrics.jsonl line every this many steps."""
    budget: str = ""
    """Wall-clock budget for the whole run across resumes, e.g. 90s, 30m, 2h; the run stops cleanly with a checkpoint."""
    tensorboard: bool = False
    """Also write TensorBoard event files to RUN/tensorboard (needs the tensorboard extra)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "save_every", "keep_last",
                     "log_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_nonfinite_steps < 0:
            raise UserError(f"train.max_nonfinite_steps must be at least 0 (0: never stop), "
                            f"got {self.max_nonfinite_steps}")
        if self.learning_rate <= 0:
            raise UserError(f"train.learning_rate must be positive, got {self.learning_rate}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"train.precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.compile not in ("auto", "on", "off"):
            raise UserError(f"train.compile must be auto, on or off, got {self.compile!r}")
        if self.lr_schedule not in ("linear", "electra"):
            raise UserError(f"train.lr_schedule must be linear or electra, got {shown_repr(self.lr_schedule)}")
        if self.parallel not in ("ddp", "fsdp"):
            raise UserError(f"train.parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.budget:
            parse_duration(self.budget)

    @property
    def resolved_warmup_steps(self) -> int:
        return self.warmup_steps if self.warmup_steps >= 0 else min(10000, self.steps // 10)


@dataclass
class PretrainConfig:
    """A whole pre-training run; this is what RUN/config.yaml holds."""

    size: str = "electra-small"
    """Named size the model section starts from (see `electrolite pretrain --help`)."""
    corpus: str = ""
    """Corpus directory written by `electrolite prepare`."""
    out: str = ""
    """Run directory (created; re-running the same command resumes it)."""
    init: str = ""
    """Start from these weights (continued pre-training): a Hugging Face BERT, ELECTRA or ALBERT checkpoint dir,
    or an electrolite run or task dir. Its architecture and tokenizer are the run's; prepare the corpus with
    ``--tokenizer`` set to it. Unset learning rate and warm-up take CONTINUE_DEFAULTS."""
    init_generator: str = ""
    """ELECTRA with init: the generator starts from this checkpoint (e.g. an ElectraForMaskedLM dir); its size
    sets objective.generator_size and generator_layers. Unset: a fresh generator of objective.generator_size."""
    model: EncoderConfig = field(default_factory=EncoderConfig)
    """The encoder (the discriminator for ELECTRA); starts from the named size."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """What the encoder learns."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, precision, evaluation and checkpointing."""

    def generator_config(self) -> EncoderConfig | None:
        """The ELECTRA generator's encoder config (None for other objectives).

        Same depth fraction and embedding size as the discriminator, hidden size scaled by
        objective.generator_size, heads and FFN derived from it (as the reference code does).
        """
        if self.objective.name != "electra":
            return None
        m = self.model
        hidden = max(1, int(round(m.hidden_size * self.objective.generator_size)))
        layers = max(1, int(round(m.num_hidden_layers * self.objective.generator_layers)))
        groups = m.num_hidden_groups if m.num_hidden_groups < m.num_hidden_layers else 0
        if groups and layers % groups:
            groups = 0
        return dataclasses.replace(
            m, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=0,
            intermediate_size=0, num_hidden_groups=groups)


BATCH_ORDERS = ("bucketed", "shuffled")

# Fine-tuning recipes by checkpoint family (FinetuneConfig.recipe). Values: bench/finetune_parity.py's
# ablation on all-MiniLM-L6-v2 (BENCHMARKS.md, "Fine-tuning parity").
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    # Clark et al. 2020, appendix A: layer-wise LR decay 0.8 (0.9 for Large), Adam ε 1e-6.
    "electra": dict(layerwise_lr_decay=0.8, adam_epsilon=1e-6, batch_order="bucketed"),
    # Devlin et al. 2019 (and ALBERT, Lan et al. 2020): one learning rate for every layer.
    "bert": dict(layerwise_lr_decay=1.0, adam_epsilon=1e-6, batch_order="bucketed"),
}
CHECKPOINT_RECIPES = {"electra": "electra", "bert": "bert", "albert": "bert"}
CHECKPOINT_HEADS = {"electra": "electra", "bert": "pooler", "albert": "pooler"}  # the classification head each suits
"""The recipe `recipe: auto` picks for each checkpoint family."""


@dataclass
class FinetuneConfig:
    """A fine-tuning run; this is the `finetune` section of TASKDIR/config.yaml."""

    task: str = ""
    """Task name: a GLUE task, conll2003, squad1, squad2, text-classification or token-classification."""
    model: str = ""
    """Pre-training run, fine-tuned task dir, or (with the hf extra) a Hugging Face checkpoint dir."""
    data: str = ""
    """The task's data folder (GLUE tsv folder, CoNLL folder, SQuAD folder)."""
    train_file: str = ""
    """Generic tasks: the training file (csv, tsv, jsonl; column file for token-classification)."""
    dev_file: str = ""
    """Generic tasks: the evaluation file."""
    text_columns: str = ""
    """text-classification: the text column, or two separated by a comma for sentence pairs."""
    label_column: str = ""
    """text-classification: the label column."""
    regression: bool = False
    """text-classification: the label is a number (mean-squared-error loss, Pearson/Spearman)."""
    out: str = ""
    """Task directory to create."""
    epochs: int = 0
    """Training epochs; 0 takes the task's default (ELECTRA: 3, 10 for RTE and STS-B, 2 for SQuAD)."""
    batch_size: int = 32
    """Examples per step."""
    learning_rate: float = 0.0
    """Peak learning rate; 0 derives ELECTRA's by width: 3e-4 up to hidden 256, 1e-4 up to 768, else 5e-5."""
    recipe: str = "auto"
    """Fine-tuning recipe: electra or bert (see FINETUNE_RECIPES), or auto, which follows the checkpoint's
    family: ELECTRA's for ELECTRA checkpoints and ELECTRA runs, BERT's for BERT and ALBERT ones (and MLM runs).
    Fields left at their "recipe's" value take the recipe's."""
    layerwise_lr_decay: float = 0.0
    """Each layer below the head learns this factor slower (1: no decay); 0 takes the recipe's."""
    warmup_fraction: float = 0.1
    """Share of the steps spent warming up, then linear decay to 0."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases or LayerNorm)."""
    adam_epsilon: float = 0.0
    """AdamW ε; 0 takes the recipe's."""
    batch_order: str = ""
    """bucketed (shuffled batches of similar length: little padding) or shuffled (uniformly shuffled examples,
    padded to the longest of each batch); "" takes the recipe's."""
    head: str = "auto"
    """Sentence classification head: electra (dense, GELU, out_proj on [CLS]), pooler (BERT's tanh pooler,
    then a linear classifier; it starts from the checkpoint's pooler where there is one), or auto, the
    checkpoint family's (electra for ELECTRA, pooler for BERT and ALBERT)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables."""
    gradient_accumulation_steps: int = 1
    """Micro-batches of batch_size summed into one optimizer step (the step's batch is their total)."""
    max_nonfinite_steps: int = 10
    """Stop with an error after this many steps in a row with a non-finite loss or gradient (each is skipped
    and counted in eval_results.json); the best epoch so far stays written. 0: never stop."""
    max_length: int = 0
    """Longest input in tokens; 0 takes the task's default (128; QA 384)."""
    seed: int = 0
    """Seed of the head's initialisation, dropout and data order."""
    seeds: int = 1
    """Fine-tune this many times (seeds seed, seed+1, ...) and report median and spread."""
    precision: str = "auto"
    """auto, fp32 or bf16 (autocast). auto is bf16 on GPUs with bf16 tensor cores and on CPUs with native
    bf16 matrix units (AMX-BF16 or AVX512-BF16), else fp32; eval_results.json records what ran."""
    compile: str = "auto"
    """torch.compile the encoder: on, off, or auto (on for CUDA; off on CPU, where compiling takes minutes
    and the compiled step was no faster). Without the compiler toolchain it warns once and runs eagerly."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    parallel: str = "ddp"
    """Under torchrun: ddp (every process holds the whole model) or fsdp (parameters, gradients and optimizer
    state are sharded across the processes, for models that do not fit on one device). In one process both
    are the same; the task dir is the same either way."""
    max_train_examples: int = 0
    """Use only the first N training examples (0: all); for quick runs."""
    from_scratch: bool = False
    """Keep the model's architecture and tokenizer but start from random weights (the no-pre-training baseline)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "seeds", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"finetune {name} must be at least 1, got {getattr(self, name)}")
        if self.max_nonfinite_steps < 0:
            raise UserError(f"finetune max_nonfinite_steps must be at least 0 (0: never stop), got {self.max_nonfinite_steps}")
        if self.epochs < 0 or self.max_length < 0 or self.max_train_examples < 0:
            raise UserError("finetune epochs, max_length and max_train_examples must not be negative")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"finetune precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.compile not in ("auto", "on", "off"):
            raise UserError(f"finetune compile must be auto, on or off, got {self.compile!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise UserError(f"finetune parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.recipe != "auto" and self.recipe not in FINETUNE_RECIPES:
            raise UserError(f"finetune recipe must be auto, {' or '.join(FINETUNE_RECIPES)}, got {self.recipe!r}")
        if self.batch_order not in ("", *BATCH_ORDERS):
            raise UserError(f"finetune batch_order must be {' or '.join(BATCH_ORDERS)}, got {self.batch_order!r}")
        if self.head not in ("auto", "electra", "pooler"):
            raise UserError(f"finetune head must be auto, electra or pooler, got {self.head!r}")
        if self.layerwise_lr_decay < 0 or self.layerwise_lr_decay > 1 or self.adam_epsilon < 0:
            raise UserError("finetune layerwise_lr_decay must be in (0, 1] (0: the recipe's) and adam_epsilon "
                            "must not be negative")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise UserError(f"finetune warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def resolved_learning_rate(self, hidden_size: int) -> float:
        if self.learning_rate > 0:
            return self.learning_rate
        return 3e-4 if hidden_size <= 256 else 1e-4 if hidden_size <= 768 else 5e-5

    def resolved_recipe(self, family: str) -> dict[str, Any]:
        """The recipe's name and values for a checkpoint of `family` (electra, bert or albert), with this
        config's own values where it sets them: recipe, layerwise_lr_decay, adam_epsilon, batch_order."""
        name = self.recipe if self.recipe != "auto" else CHECKPOINT_RECIPES.get(family, "electra")
        values = dict(FINETUNE_RECIPES[name], recipe=name)
        for key in ("layerwise_lr_decay", "adam_epsilon", "batch_order"):
            if getattr(self, key):
                values[key] = getattr(self, key)
        return values

    def resolved_layer_decay(self, hidden_size: int, family: str = "electra") -> float:
        """The layer-wise LR decay: this config's, else the recipe's (ELECTRA's is 0.9 from hidden 1024 up)."""
        if self.layerwise_lr_decay > 0:
            return self.layerwise_lr_decay
        decay = self.resolved_recipe(family)["layerwise_lr_decay"]
        return 0.9 if decay == 0.8 and hidden_size >= 1024 else decay


# --- named sizes -------------------------------------------------------------------------------
# Encoder fields of each named size; anything left out is derived (heads = hidden/64, FFN = 4×hidden,
# embedding = hidden, no sharing). `generator_size` is the objective's default for that size.
# Parameter counts are the encoder alone at vocab 30522 (tests/test_config.py checks them).
SIZES: dict[str, dict[str, Any]] = {
    # 2,086,400: for tests and the demo
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, generator_size=0.5),
    # 13,483,008: ELECTRA paper's BERT-Small
    "bert-small": dict(hidden_size=256, num_hidden_layers=12, embedding_size=128),
    # 108,891,648 (BERT-Base without its pooler)
    "bert-base": dict(hidden_size=768, num_hidden_layers=12),
    # 13,483,008 discriminator; generator hidden 64
    "electra-small": dict(hidden_size=256, num_hidden_layers=12, embedding_size=128, generator_size=1 / 4),
    # 108,891,648; generator hidden 256
    "electra-base": dict(hidden_size=768, num_hidden_layers=12, generator_size=1 / 3),
    # 334,092,288; generator hidden 256
    "electra-large": dict(hidden_size=1024, num_hidden_layers=24, generator_size=1 / 4),
    # 11,159,808: all 12 layers share one set of weights
    "albert-base": dict(hidden_size=768, num_hidden_layers=12, embedding_size=128, num_hidden_groups=1),
    # 16,701,184
    "albert-large": dict(hidden_size=1024, num_hidden_layers=24, embedding_size=128, num_hidden_groups=1),
}
_OBJECTIVE_SIZE_KEYS = ("generator_size",)


def _size_entry(name: str) -> dict[str, Any]:
    if name not in SIZES:
        raise UserError(f"unknown size {shown_repr(name)}; choose one of: {', '.join(SIZES)}")
    return SIZES[name]


def from_name(name: str, **overrides: Any) -> EncoderConfig:
    """The encoder config of a named size, with fields overridden.

    Args:
        name: a key of SIZES, e.g. "electra-small".
        **overrides: EncoderConfig fields, e.g. num_hidden_layers=2.
    """
    entry = {k: v for k, v in _size_entry(name).items() if k not in _OBJECTIVE_SIZE_KEYS}
    entry.update(overrides)
    return build(EncoderConfig, entry, "model")


def size_objective_defaults(name: str) -> dict[str, Any]:
    """Objective fields that a named size sets (the generator's relative size)."""
    return {k: v for k, v in _size_entry(name).items() if k in _OBJECTIVE_SIZE_KEYS}


# Continued pre-training (`init`): a lower peak learning rate than from scratch and a short warm-up, the values
# of Gururangan et al. 2020's task-adaptive pre-training (peak 1e-4, 6% warm-up; their domain-adaptive runs used
# 5e-4 at batch 2048, which small batches cannot take). Set either to override. ELECTRA skips the small-budget
# recipe's masked-LM warm start of the discriminator (objective.two_stage_fraction 0): it exists to teach a fresh
# discriminator language first, which a checkpoint already knows.
CONTINUE_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-4, "warmup_fraction": 0.06}


ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                       "embedding_size", "num_hidden_groups", "hidden_act", "max_position_embeddings",
                       "type_vocab_size", "layer_norm_eps")


def _model_from_init(theirs: EncoderConfig, path: str, size: str | None, model: dict[str, Any]) -> dict[str, Any]:
    """The model section of a run that starts from `path`, whose encoder config is `theirs`.

    Args:
        size: the named size the user gave (None: none given).
        model: the model fields the user gave (config file and flags).

    Raises:
        UserError: a given field or size contradicts the checkpoint, naming the field.
    """
    if size is not None:
        named = from_name(size, vocab_size=theirs.vocab_size)
        for key in ARCHITECTURE_FIELDS:
            if key != "vocab_size" and getattr(named, key) != getattr(theirs, key):
                raise UserError(f"size {size} contradicts --init {path}: its {key} is {getattr(named, key)!r}, "
                                f"the checkpoint's {getattr(theirs, key)!r} (leave --size out: the checkpoint sets "
                                "the architecture)")
    resolved = to_dict(theirs)
    for key, value in model.items():
        if key not in resolved:
            continue  # an unknown field: building the config names it
        current = getattr(theirs, key)
        mine = coerce(value, type(current), f"model.{key}")
        if mine != current and key in ARCHITECTURE_FIELDS + ("pad_token_id",):
            raise UserError(f"model.{key} {mine!r} contradicts --init {path}, whose {key} is "
                            f"{current!r} (the checkpoint sets the architecture)")
        resolved[key] = mine  # dropout and initializer_range may change
    return resolved


def _generator_fields(theirs: EncoderConfig | None, path: str, model: dict[str, Any], objective: dict[str, Any]
                      ) -> dict[str, Any]:
    """objective.generator_size and generator_layers that make the generator the shape of `path`'s encoder
    ({} without --init-generator). The generator shares the discriminator's embedding width."""
    if theirs is None:
        return {}
    if objective.get("name", "electra") != "electra":
        raise UserError("init_generator is for the electra objective (the masked LM has no generator)")
    width = model.get("embedding_size") or model["hidden_size"]
    if (theirs.embedding_size or theirs.hidden_size) != width:
        raise UserError(f"--init-generator {path}: its embedding size {theirs.embedding_size or theirs.hidden_size} "
                        f"differs from the discriminator's {width}; the two share their embeddings")
    derived = EncoderConfig(hidden_size=theirs.hidden_size)  # what generator_config() derives from the width
    for key in ("num_attention_heads", "intermediate_size"):
        if getattr(derived, key) != getattr(theirs, key):
            raise UserError(f"--init-generator {path}: its {key} is {getattr(theirs, key)}, but a generator "
                            f"{theirs.hidden_size} wide gets {getattr(derived, key)} (hidden/64 heads, 4 × hidden FFN, "
                            "as ELECTRA's generators)")
    return {"generator_size": theirs.hidden_size / model["hidden_size"],
            "generator_layers": theirs.num_hidden_layers / model["num_hidden_layers"]}


def resolve_pretrain_config(file_data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                            init_config: EncoderConfig | None = None, generator_config: EncoderConfig | None = None
                            ) -> PretrainConfig:
    """Resolve a run's config: size table < config file < command-line overrides.

    Args:
        file_data: the mapping read from --config (same shape as RUN/config.yaml).
        overrides: dotted keys ("model.hidden_size", "train.steps", "size") from the command line.
        init_config: the encoder config of the checkpoint ``init`` names, which sets the model
            (``initialize.pretrain_config`` reads it); None: a run dir's stored config, whose model is explicit.
        generator_config: likewise for ``init_generator``.
    """
    sections = ("model", "objective", "train")
    merged: dict[str, Any] = {name: {} for name in sections}
    for source in (file_data or {}, _undot(overrides or {})):
        for key, value in source.items():
            if key in sections and isinstance(value, dict):
                merged[key].update(value)
            elif key in sections:
                raise UserError(f"config {key} must be a mapping")
            else:
                merged[key] = value
    size = coerce(merged.get("size", PretrainConfig.size), str, "size")  # str() of a YAML alias bomb never ends
    base_model = {k: v for k, v in _size_entry(size).items() if k not in _OBJECTIVE_SIZE_KEYS}
    init = coerce(merged.get("init", ""), str, "init")
    if init and init_config is not None:  # it sets the architecture; a size or model field that contradicts it is an error
        merged["model"] = _model_from_init(init_config, init, size if "size" in merged else None, merged["model"])
        merged["objective"] = {**_generator_fields(generator_config, str(merged.get("init_generator", "")),
                                                   merged["model"], merged["objective"]), **merged["objective"]}
        merged["train"].setdefault("learning_rate", CONTINUE_DEFAULTS["learning_rate"])
        if merged["objective"].get("name", ObjectiveConfig.name) == "electra":  # the checkpoint knows language:
            merged["objective"].setdefault("two_stage_fraction", 0.0)  # no masked-LM warm start of it
        if "warmup_steps" not in merged["train"]:
            steps = coerce(merged["train"].get("steps", TrainConfig.steps), int, "train.steps")
            merged["train"]["warmup_steps"] = int(CONTINUE_DEFAULTS["warmup_fraction"] * steps)
    else:
        merged["model"] = {**base_model, **merged["model"]}
    merged["objective"] = {**size_objective_defaults(size), **merged["objective"]}
    if merged["objective"].get("name", ObjectiveConfig.name) == "electra":
        merged["objective"].setdefault("recipe", DEFAULT_RECIPE)
    # Derived fields are stored resolved in config.yaml; re-resolving must not re-derive them from
    # a changed sibling, so derivation only happens for fields still at their sentinel.
    return build(PretrainConfig, merged)


def parse_duration(text: str) -> float:
    """Seconds in a duration like "90s", "30m", "2h", "1h30m" or a plain number of seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text)
    if not parts or "".join(a + b for a, b in parts) != text.replace(" ", ""):
        raise UserError(f"train.budget: cannot read duration {text!r} (use e.g. 90s, 30m, 2h)")
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(float(a) * unit[b] for a, b in parts)
