"""The key tables between Hugging Face ``transformers`` classes and electrolite (DESIGN.md rule 8).

For each supported class: its encoder keys (relative to the base model), its head keys, the keys it
ties, and what the class is in electrolite's terms (``Arch``). ``{}`` stands for the layer index;
``None`` marks a key that is dropped (a buffer, a tied copy, a head electrolite has no use for).
The conversions that use them are ``hf.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- key tables ---------------------------------------------------------------------------------
# Encoders: Hugging Face keys relative to the base model → keys relative to electrolite's Encoder.

_BERT_LAYER = {
    "encoder.layer.{}.attention.self.query.weight": "encoder.layer.{}.attention.self.query.weight",
    "encoder.layer.{}.attention.self.query.bias": "encoder.layer.{}.attention.self.query.bias",
    "encoder.layer.{}.attention.self.key.weight": "encoder.layer.{}.attention.self.key.weight",
    "encoder.layer.{}.attention.self.key.bias": "encoder.layer.{}.attention.self.key.bias",
    "encoder.layer.{}.attention.self.value.weight": "encoder.layer.{}.attention.self.value.weight",
    "encoder.layer.{}.attention.self.value.bias": "encoder.layer.{}.attention.self.value.bias",
    "encoder.layer.{}.attention.output.dense.weight": "encoder.layer.{}.attention.output.dense.weight",
    "encoder.layer.{}.attention.output.dense.bias": "encoder.layer.{}.attention.output.dense.bias",
    "encoder.layer.{}.attention.output.LayerNorm.weight": "encoder.layer.{}.attention.output.LayerNorm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "encoder.layer.{}.attention.output.LayerNorm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "encoder.layer.{}.intermediate.dense.weight",
    "encoder.layer.{}.intermediate.dense.bias": "encoder.layer.{}.intermediate.dense.bias",
    "encoder.layer.{}.output.dense.weight": "encoder.layer.{}.output.dense.weight",
    "encoder.layer.{}.output.dense.bias": "encoder.layer.{}.output.dense.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "encoder.layer.{}.output.LayerNorm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "encoder.layer.{}.output.LayerNorm.bias",
}
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias": "embeddings.LayerNorm.bias",
    "embeddings.position_ids": None,  # a buffer (0..P-1) that checkpoints before transformers 4.31 stored
    "embeddings.token_type_ids": None,  # likewise (zeros)
}
BERT_ENCODER: dict[str, str | None] = {**_EMBEDDINGS, **_BERT_LAYER}
ELECTRA_ENCODER: dict[str, str | None] = {
    **_EMBEDDINGS,
    "embeddings_project.weight": "embeddings_project.weight",
    "embeddings_project.bias": "embeddings_project.bias",
    **_BERT_LAYER,
}
_ALBERT_LAYER = "encoder.albert_layer_groups.{}.albert_layers.0."  # inner_group_num = 1: one layer per group
ALBERT_ENCODER: dict[str, str | None] = {
    **_EMBEDDINGS,
    "encoder.embedding_hidden_mapping_in.weight": "embeddings_project.weight",
    "encoder.embedding_hidden_mapping_in.bias": "embeddings_project.bias",
    _ALBERT_LAYER + "attention.query.weight": "encoder.layer.{}.attention.self.query.weight",
    _ALBERT_LAYER + "attention.query.bias": "encoder.layer.{}.attention.self.query.bias",
    _ALBERT_LAYER + "attention.key.weight": "encoder.layer.{}.attention.self.key.weight",
    _ALBERT_LAYER + "attention.key.bias": "encoder.layer.{}.attention.self.key.bias",
    _ALBERT_LAYER + "attention.value.weight": "encoder.layer.{}.attention.self.value.weight",
    _ALBERT_LAYER + "attention.value.bias": "encoder.layer.{}.attention.self.value.bias",
    _ALBERT_LAYER + "attention.dense.weight": "encoder.layer.{}.attention.output.dense.weight",
    _ALBERT_LAYER + "attention.dense.bias": "encoder.layer.{}.attention.output.dense.bias",
    _ALBERT_LAYER + "attention.LayerNorm.weight": "encoder.layer.{}.attention.output.LayerNorm.weight",
    _ALBERT_LAYER + "attention.LayerNorm.bias": "encoder.layer.{}.attention.output.LayerNorm.bias",
    _ALBERT_LAYER + "ffn.weight": "encoder.layer.{}.intermediate.dense.weight",
    _ALBERT_LAYER + "ffn.bias": "encoder.layer.{}.intermediate.dense.bias",
    _ALBERT_LAYER + "ffn_output.weight": "encoder.layer.{}.output.dense.weight",
    _ALBERT_LAYER + "ffn_output.bias": "encoder.layer.{}.output.dense.bias",
    _ALBERT_LAYER + "full_layer_layer_norm.weight": "encoder.layer.{}.output.LayerNorm.weight",
    _ALBERT_LAYER + "full_layer_layer_norm.bias": "encoder.layer.{}.output.LayerNorm.bias",
}
ENCODERS: dict[str, dict[str, str | None]] = {"bert": BERT_ENCODER, "electra": ELECTRA_ENCODER, "albert": ALBERT_ENCODER}

# Heads: full Hugging Face keys → electrolite keys.
_ELECTRA_RTD: dict[str, str | None] = {
    "discriminator_predictions.dense.weight": "rtd_head.dense.weight",
    "discriminator_predictions.dense.bias": "rtd_head.dense.bias",
    "discriminator_predictions.dense_prediction.weight": "rtd_head.dense_prediction.weight",
    "discriminator_predictions.dense_prediction.bias": "rtd_head.dense_prediction.bias",
}
_ELECTRA_MLM = {
    "generator_predictions.dense.weight": "mlm_head.dense.weight",
    "generator_predictions.dense.bias": "mlm_head.dense.bias",
    "generator_predictions.LayerNorm.weight": "mlm_head.LayerNorm.weight",
    "generator_predictions.LayerNorm.bias": "mlm_head.LayerNorm.bias",
    "generator_lm_head.bias": "mlm_head.bias",
    "generator_lm_head.weight": None,  # tied: the word embeddings
}
_BERT_MLM = {
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.LayerNorm.bias",
    "cls.predictions.bias": "mlm_head.bias",
    "cls.predictions.decoder.weight": None,  # tied: the word embeddings
    "cls.predictions.decoder.bias": None,  # tied: cls.predictions.bias
}
_BERT_PRETRAINING_EXTRAS = {  # Hub BERT checkpoints keep their pre-training pooler and next-sentence head
    "bert.pooler.dense.weight": None,
    "bert.pooler.dense.bias": None,
    "cls.seq_relationship.weight": None,
    "cls.seq_relationship.bias": None,
}
_ALBERT_MLM = {
    "predictions.dense.weight": "mlm_head.dense.weight",
    "predictions.dense.bias": "mlm_head.dense.bias",
    "predictions.LayerNorm.weight": "mlm_head.LayerNorm.weight",
    "predictions.LayerNorm.bias": "mlm_head.LayerNorm.bias",
    "predictions.bias": "mlm_head.bias",
    "predictions.decoder.weight": None,  # tied: the word embeddings
    "predictions.decoder.bias": None,  # tied: predictions.bias
}
_ALBERT_SOP = {
    "albert.pooler.weight": "sop_head.pooler.dense.weight",
    "albert.pooler.bias": "sop_head.pooler.dense.bias",
    "sop_classifier.classifier.weight": "sop_head.classifier.weight",
    "sop_classifier.classifier.bias": "sop_head.classifier.bias",
}
_TOKEN_CLASSIFIER: dict[str, str | None] = {"classifier.weight": "head.classifier.weight", "classifier.bias": "head.classifier.bias"}
_QA: dict[str, str | None] = {"qa_outputs.weight": "head.qa_outputs.weight", "qa_outputs.bias": "head.qa_outputs.bias"}
_UNUSED_BERT_POOLER = {"bert.pooler.dense.weight": None, "bert.pooler.dense.bias": None}
_UNUSED_ALBERT_POOLER = {"albert.pooler.weight": None, "albert.pooler.bias": None}

HEADS: dict[str, dict[str, str | None]] = {
    "ElectraModel": {},
    "ElectraForPreTraining": _ELECTRA_RTD,
    "ElectraForMaskedLM": _ELECTRA_MLM,
    "ElectraForSequenceClassification": {
        "classifier.dense.weight": "head.dense.weight",
        "classifier.dense.bias": "head.dense.bias",
        "classifier.out_proj.weight": "head.out_proj.weight",
        "classifier.out_proj.bias": "head.out_proj.bias",
    },
    "ElectraForTokenClassification": _TOKEN_CLASSIFIER,
    "ElectraForQuestionAnswering": _QA,
    "BertModel": {"pooler.dense.weight": "pooler.dense.weight", "pooler.dense.bias": "pooler.dense.bias"},
    "BertForMaskedLM": {**_BERT_MLM, **_BERT_PRETRAINING_EXTRAS},
    "BertForPreTraining": {**_BERT_MLM, **_BERT_PRETRAINING_EXTRAS},  # read only; written as BertForMaskedLM
    "BertForSequenceClassification": {
        "bert.pooler.dense.weight": "head.pooler.dense.weight",
        "bert.pooler.dense.bias": "head.pooler.dense.bias",
        "classifier.weight": "head.classifier.weight",
        "classifier.bias": "head.classifier.bias",
    },
    "BertForTokenClassification": {**_TOKEN_CLASSIFIER, **_UNUSED_BERT_POOLER},
    "BertForQuestionAnswering": {**_QA, **_UNUSED_BERT_POOLER},
    "AlbertModel": {"pooler.weight": "pooler.dense.weight", "pooler.bias": "pooler.dense.bias"},
    "AlbertForPreTraining": {**_ALBERT_MLM, **_ALBERT_SOP},
    "AlbertForMaskedLM": {**_ALBERT_MLM, **{k: None for k in _ALBERT_SOP}},
    "AlbertForSequenceClassification": {
        "albert.pooler.weight": "head.pooler.dense.weight",
        "albert.pooler.bias": "head.pooler.dense.bias",
        "classifier.weight": "head.classifier.weight",
        "classifier.bias": "head.classifier.bias",
    },
    "AlbertForTokenClassification": {**_TOKEN_CLASSIFIER, **_UNUSED_ALBERT_POOLER},
    "AlbertForQuestionAnswering": {**_QA, **_UNUSED_ALBERT_POOLER},
}

# Tied keys (None in the tables): written as copies of their source, and on import they must equal it.
TIED: dict[str, dict[str, str]] = {
    "ElectraForMaskedLM": {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"},
    "BertForMaskedLM": {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                        "cls.predictions.decoder.bias": "cls.predictions.bias"},
    "AlbertForPreTraining": {"predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
                             "predictions.decoder.bias": "predictions.bias"},
}
TIED["BertForPreTraining"] = TIED["BertForMaskedLM"]
TIED["AlbertForMaskedLM"] = TIED["AlbertForPreTraining"]


@dataclass(frozen=True)
class Arch:
    """What a ``transformers`` class is, in electrolite's terms."""

    model_type: str
    """bert, electra or albert."""
    prefix: str
    """The base model's key prefix ("" for the bare *Model classes)."""
    parts: tuple[str, ...] = ()
    """Pre-training heads of a ``Pretrained`` module (mlm_head, rtd_head, sop_head, pooler)."""
    family: str = ""
    """Task head family (classification, tagging, qa) of a fine-tuned class; "" for pre-training classes."""
    head: str = "pooler"
    """The classification head layout that suits the family ("electra" or "pooler")."""


ARCHITECTURES: dict[str, Arch] = {
    "ElectraModel": Arch("electra", "", (), head="electra"),
    "ElectraForPreTraining": Arch("electra", "electra.", ("rtd_head",), head="electra"),
    "ElectraForMaskedLM": Arch("electra", "electra.", ("mlm_head",), head="electra"),
    "ElectraForSequenceClassification": Arch("electra", "electra.", family="classification", head="electra"),
    "ElectraForTokenClassification": Arch("electra", "electra.", family="tagging", head="electra"),
    "ElectraForQuestionAnswering": Arch("electra", "electra.", family="qa", head="electra"),
    "BertModel": Arch("bert", "", ("pooler",)),
    "BertForMaskedLM": Arch("bert", "bert.", ("mlm_head",)),
    "BertForPreTraining": Arch("bert", "bert.", ("mlm_head",)),
    "BertForSequenceClassification": Arch("bert", "bert.", family="classification"),
    "BertForTokenClassification": Arch("bert", "bert.", family="tagging"),
    "BertForQuestionAnswering": Arch("bert", "bert.", family="qa"),
    "AlbertModel": Arch("albert", "", ("pooler",)),
    "AlbertForPreTraining": Arch("albert", "albert.", ("mlm_head", "sop_head")),
    "AlbertForMaskedLM": Arch("albert", "albert.", ("mlm_head",)),
    "AlbertForSequenceClassification": Arch("albert", "albert.", family="classification"),
    "AlbertForTokenClassification": Arch("albert", "albert.", family="tagging"),
    "AlbertForQuestionAnswering": Arch("albert", "albert.", family="qa"),
}
WRITTEN_AS = {"BertForPreTraining": "BertForMaskedLM"}  # read-only classes and what export writes instead
