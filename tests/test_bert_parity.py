"""Our Flax BERT equals Hugging Face's PyTorch BertModel on real all-MiniLM-L6-v2 weights."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxdistill.models import Bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def both_outputs(minilm, minilm_path, minilm_tokenizer, sentences):
    config, params = minilm
    enc = minilm_tokenizer(sentences, padding=True, return_tensors="np")
    assert (enc["attention_mask"] == 0).any(), "the batch must contain padding"
    ours = Bert(config).apply({"params": params}, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                              jnp.asarray(enc["token_type_ids"]), output_intermediates=True)
    model = transformers.BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = model(**{k: torch.tensor(v) for k, v in enc.items()}, output_hidden_states=True,
                    output_attentions=True)
    return enc, ours, ref


def test_hidden_states_match_hf(both_outputs):
    enc, ours, ref = both_outputs
    valid = enc["attention_mask"].astype(bool)
    assert len(ours.hidden_states) == len(ref.hidden_states) == 7
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
        a, b = np.asarray(a), b.numpy()
        # Real tokens: 1e-5. Outputs at padded positions are never used and are ill-conditioned in float32
        # (torch float32 differs from torch float64 there by ~5e-5 too), so they get a looser bound.
        np.testing.assert_allclose(a[valid], b[valid], atol=1e-5, rtol=0, err_msg=f"hidden state {i}")
        np.testing.assert_allclose(a[~valid], b[~valid], atol=2e-4, rtol=0, err_msg=f"hidden state {i} (padding)")


def test_attention_probs_match_hf(both_outputs):
    _, ours, ref = both_outputs
    assert len(ours.attention_probs) == len(ref.attentions) == 6
    for i, (a, b) in enumerate(zip(ours.attention_probs, ref.attentions)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5, rtol=0, err_msg=f"attention layer {i}")


def test_pooler_and_intermediate_shapes(both_outputs):
    enc, ours, ref = both_outputs
    np.testing.assert_allclose(np.asarray(ours.pooled), ref.pooler_output.numpy(), atol=1e-5, rtol=0)
    B, L = enc["input_ids"].shape
    assert ours.queries[0].shape == ours.keys[0].shape == ours.values[0].shape == (B, 12, L, 32)
    assert ours.attention_scores[0].shape == (B, 12, L, L)
    # scores are pre-softmax: softmax(scores) gives the probabilities, padded keys get ~zero weight
    probs = jax.nn.softmax(ours.attention_scores[2], axis=-1)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(ours.attention_probs[2]), atol=1e-6)
    pad_keys = ~enc["attention_mask"].astype(bool)
    assert np.asarray(ours.attention_probs[0])[pad_keys[:, None, None, :].repeat(12, 1).repeat(L, 2)].max() == 0.0


def test_masked_lm_logits_match_hf(minilm, minilm_path, minilm_tokenizer, sentences, tmp_path):
    """With its (fresh) MLM head, our model equals BertForMaskedLM holding the same weights."""
    from jaxdistill.models import hf
    config, params = minilm
    hf.export(config, params, str(tmp_path / "mlm"))
    enc = minilm_tokenizer(sentences, padding=True, return_tensors="np")
    ours = Bert(config).apply({"params": params}, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
    model = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "mlm"), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = model(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    valid = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(ours.mlm_logits)[valid], ref[valid], atol=1e-4, rtol=1e-5)
