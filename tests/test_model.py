"""The encoder: ALBERT sharing and factorization, padding, attention against a reference, dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from electrolite.config import EncoderConfig
from electrolite.model import Encoder, Layer, SelfAttention, count_parameters

V, P, TYPES = 1000, 128, 2
PAD = 0


def tiny(**overrides) -> EncoderConfig:
    base = dict(vocab_size=V, hidden_size=64, num_hidden_layers=2, max_position_embeddings=P,
                num_attention_heads=4)
    base.update(overrides)
    return EncoderConfig(**base)


def batch(seed: int = 0, b: int = 3, t: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids with per-row padding at the end; (ids, attention_mask, token_type_ids)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (b, t), generator=g)
    lengths = torch.tensor([t, t - 7, 5][:b])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    ids[~mask] = PAD
    types = (torch.arange(t)[None, :] >= (lengths[:, None] // 2)).long() & mask.long()
    return ids, mask, types


def layer_params(h: int, i: int) -> int:
    # q, k, v, attention output: 4 (H·H + H); two LayerNorms: 4H; FFN: H·I + I + I·H + H.
    return 4 * (h * h + h) + 4 * h + h * i + i + i * h + h


def embedding_params(e: int, h: int) -> int:
    block = (V + P + TYPES) * e + 2 * e
    return block + (e * h + h if e != h else 0)


# --- parameter counts ----------------------------------------------------------------------------

def test_layer_parameter_count():
    assert count_parameters(Layer(tiny())) == layer_params(64, 256) == 49_984


@pytest.mark.parametrize("e, groups", [(64, 2), (16, 2), (16, 1), (32, 4)])
def test_encoder_parameter_count_formula(e, groups):
    layers = 4
    enc = Encoder(tiny(embedding_size=e, num_hidden_layers=layers, num_hidden_groups=groups))
    assert len(enc.encoder.layer) == groups
    assert count_parameters(enc) == embedding_params(e, 64) + groups * layer_params(64, 256)


def test_factorized_embedding_counts():
    h, e = 64, 16
    plain = Encoder(tiny())
    fact = Encoder(tiny(embedding_size=e))
    assert not hasattr(plain, "embeddings_project")
    proj = fact.embeddings_project
    assert (proj.in_features, proj.out_features) == (e, h)
    assert count_parameters(proj) == e * h + h == 1088
    assert fact.embeddings.word_embeddings.weight.shape == (V, e)
    # Embedding block = V·E word embeddings + position/type/LayerNorm at width E, plus the projection.
    emb = count_parameters(fact) - count_parameters(fact.encoder)
    assert emb == V * e + (P + TYPES) * e + 2 * e + e * h + h == 19_200
    emb_plain = count_parameters(plain) - count_parameters(plain.encoder)
    assert emb_plain == (V + P + TYPES) * h + 2 * h == 72_448
    # The transformer stack is identical; only the embedding block differs.
    assert count_parameters(plain.encoder) == count_parameters(fact.encoder)
    assert count_parameters(plain) - count_parameters(fact) == (V + P + TYPES + 2) * (h - e) - (e * h + h) == 53_248


# --- ALBERT sharing --------------------------------------------------------------------------------

def test_shared_layers_same_parameter_count():
    counts = {n: count_parameters(Encoder(tiny(num_hidden_layers=n, num_hidden_groups=1))) for n in (1, 2, 4, 8)}
    assert len(set(counts.values())) == 1
    assert counts[8] == embedding_params(64, 64) + layer_params(64, 256)
    unshared = count_parameters(Encoder(tiny(num_hidden_layers=4)))
    assert unshared - counts[4] == 3 * layer_params(64, 256)


def _shared(n: int, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(tiny(num_hidden_layers=n, num_hidden_groups=1, embedding_size=32)).eval()


def test_shared_layer_is_applied_num_hidden_layers_times():
    ids, mask, types = batch()
    encs = {n: _shared(n) for n in (2, 4, 8)}
    # Same seed, same parameter order: the three encoders hold identical weights ...
    for n in (4, 8):
        for (k, a), (_, b) in zip(encs[2].state_dict().items(), encs[n].state_dict().items()):
            assert torch.equal(a, b), k
    with torch.no_grad():
        outs = {n: enc(ids, mask, types) for n, enc in encs.items()}
        # ... yet the outputs differ with depth, and equal the one layer applied n times by hand.
        for n, enc in encs.items():
            x = enc.embeddings_project(enc.embeddings(ids, types))
            for _ in range(n):
                x = enc.encoder.layer[0](x, mask[:, None, None, :])
            torch.testing.assert_close(outs[n], x, rtol=0, atol=1e-6)
    assert (outs[2] - outs[4]).abs().max() > 1e-2
    assert (outs[4] - outs[8]).abs().max() > 1e-2


def test_group_assignment():
    enc = Encoder(tiny(num_hidden_layers=6, num_hidden_groups=3))
    assert [enc.encoder.group_of(i) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    enc = Encoder(tiny(num_hidden_layers=4, num_hidden_groups=1))
    assert [enc.encoder.group_of(i) for i in range(4)] == [0, 0, 0, 0]
    enc = Encoder(tiny(num_hidden_layers=4))
    assert [enc.encoder.group_of(i) for i in range(4)] == [0, 1, 2, 3]


# --- masking and attention -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, dict(embedding_size=16, num_hidden_groups=1, num_hidden_layers=3)])
def test_padding_does_not_leak_into_real_positions(overrides):
    torch.manual_seed(0)
    enc = Encoder(tiny(**overrides)).eval()
    ids, mask, types = batch()
    changed = ids.clone()
    changed[~mask] = torch.randint(5, V, (int((~mask).sum()),), generator=torch.Generator().manual_seed(1))
    changed_types = types.clone()
    changed_types[~mask] = 1
    with torch.no_grad():
        a = enc(ids, mask, types)
        b = enc(changed, mask, changed_types)
        diff = (a - b).abs()
        assert diff[mask].max() <= 1e-6
        assert diff[~mask].max() > 1e-2  # the padded positions themselves did change
        # Control: without the mask the same change reaches the real positions.
        assert (enc(ids, None, types) - enc(changed, None, changed_types)).abs()[mask].max() > 1e-3


def reference_attention(sa: SelfAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Explicit softmax(Q Kᵀ / sqrt(d)) V with the padded keys at -inf."""
    b, t, h = x.shape
    nh = sa.num_heads
    d = h // nh

    def heads(lin: nn.Linear) -> torch.Tensor:
        return (x @ lin.weight.T + lin.bias).view(b, t, nh, d).transpose(1, 2)  # (B, nh, T, d)

    q, k, v = heads(sa.query), heads(sa.key), heads(sa.value)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    probs = scores.softmax(-1)
    return (probs @ v).transpose(1, 2).reshape(b, t, h)


@pytest.mark.parametrize("heads", [1, 4])
def test_attention_matches_reference(heads):
    torch.manual_seed(0)
    cfg = tiny(num_attention_heads=heads)
    sa = SelfAttention(cfg).eval()
    for lin in (sa.query, sa.key, sa.value):  # non-trivial weights and biases
        nn.init.normal_(lin.weight, std=0.3)
        nn.init.normal_(lin.bias, std=0.3)
    x = torch.randn(3, 24, 64)
    _, mask, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(sa(x, mask[:, None, None, :]), reference_attention(sa, x, mask),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(sa(x, None), reference_attention(sa, x, None), rtol=0, atol=1e-5)
        # The mask matters: a padded key changes the real positions' output when left unmasked.
        assert (sa(x, None) - sa(x, mask[:, None, None, :]))[1, :17].abs().max() > 1e-3


def test_encoder_matches_transformers_electra():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tiny(embedding_size=32, num_hidden_layers=2)
    enc = Encoder(cfg).eval()
    hf_cfg = transformers.ElectraConfig(
        vocab_size=V, embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=P, type_vocab_size=TYPES, layer_norm_eps=1e-12,
        hidden_act="gelu", pad_token_id=PAD)
    hf = transformers.ElectraModel(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(enc.state_dict(), strict=False)
    assert unexpected == []
    assert all("position_ids" in k or "token_type_ids" in k for k in missing)
    ids, mask, types = batch()
    with torch.no_grad():
        ours = enc(ids, mask, types)
        theirs = hf(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).last_hidden_state
    torch.testing.assert_close(ours[mask], theirs[mask], rtol=0, atol=1e-5)


# --- dropout and outputs ---------------------------------------------------------------------------

def test_dropouts_as_in_bert():
    enc = Encoder(tiny(num_hidden_layers=4, num_hidden_groups=2))
    dropouts = [m for m in enc.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 + 2 * 2  # embeddings + (attention output, FFN output) per weight set
    assert all(m.p == 0.1 for m in dropouts)
    assert [m.dropout_p for m in enc.modules() if isinstance(m, SelfAttention)] == [0.1, 0.1]


@pytest.mark.parametrize("hidden_p, attn_p, differs", [(0.1, 0.1, True), (0.0, 0.5, True),
                                                       (0.5, 0.0, True), (0.0, 0.0, False)])
def test_train_mode_dropout_eval_mode_deterministic(hidden_p, attn_p, differs):
    torch.manual_seed(0)
    enc = Encoder(tiny(hidden_dropout_prob=hidden_p, attention_probs_dropout_prob=attn_p))
    ids, mask, types = batch()
    with torch.no_grad():
        enc.train()
        d = (enc(ids, mask, types) - enc(ids, mask, types)).abs()[mask].max()
        assert (d > 1e-3) if differs else (d == 0)
        enc.eval()
        assert torch.equal(enc(ids, mask, types), enc(ids, mask, types))


@pytest.mark.parametrize("layers, groups, e", [(2, 2, 64), (3, 1, 16)])
def test_output_hidden_states(layers, groups, e):
    torch.manual_seed(0)
    enc = Encoder(tiny(num_hidden_layers=layers, num_hidden_groups=groups, embedding_size=e)).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        last, states = enc(ids, mask, types, output_hidden_states=True)
        assert len(states) == layers + 1
        assert all(s.shape == (3, 24, 64) for s in states)
        assert torch.equal(states[-1], last)
        assert torch.equal(last, enc(ids, mask, types))
        emb = enc.embeddings(ids, types)
        if e != 64:
            emb = enc.embeddings_project(emb)
        assert torch.equal(states[0], emb)
        for i in range(layers):
            layer = enc.encoder.layer[enc.encoder.group_of(i)]
            torch.testing.assert_close(layer(states[i], mask[:, None, None, :]), states[i + 1], rtol=0, atol=1e-6)


def test_initialisation():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(vocab_size=V, hidden_size=256, num_hidden_layers=1, max_position_embeddings=P))
    w = enc.embeddings.word_embeddings.weight
    assert torch.equal(w[PAD], torch.zeros(256))
    assert abs(w[1:].std().item() - 0.02) < 5e-4
    q = enc.encoder.layer[0].attention.self.query
    assert abs(q.weight.std().item() - 0.02) < 1e-3 and torch.equal(q.bias, torch.zeros(256))
    ln = enc.encoder.layer[0].output.LayerNorm
    assert torch.equal(ln.weight, torch.ones(256)) and torch.equal(ln.bias, torch.zeros(256))


def test_too_long_sequence_and_mismatched_shared_embeddings():
    enc = Encoder(tiny())
    with pytest.raises(ValueError, match="exceeds max_position_embeddings 128"):
        enc(torch.full((1, 129), 7))
    with pytest.raises(ValueError, match="embedding_size"):
        Encoder(tiny(embedding_size=32), embeddings=enc.embeddings)
    other = Encoder(tiny(hidden_size=32, num_attention_heads=1, embedding_size=64), embeddings=enc.embeddings)
    assert other.embeddings is enc.embeddings
    assert (other.embeddings_project.in_features, other.embeddings_project.out_features) == (64, 32)
