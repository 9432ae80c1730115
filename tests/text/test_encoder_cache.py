"""Text encoder wrapper (pooling, normalisation, freezing; the real packaged MiniLM once) and the embedding cache."""

import numpy as np
import pytest
import torch

from medssl.errors import ConfigError, DataError
from medssl.text import EmbeddingCache, TextEncoder, text_key

SENTS = ["There is pleural effusion.", "No pleural effusion.", "Mild centrilobular emphysema in the upper lobes."]


def test_mean_pooling_matches_a_per_sentence_rederivation(tiny_text_encoder):
    enc = tiny_text_encoder
    out = enc.embed(SENTS)  # padded batch
    assert out.shape == (3, 16) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    for j, s in enumerate(SENTS):  # one sentence at a time: no padding, plain mean over its tokens
        tok = enc.tokenizer([s], return_tensors="pt")
        with torch.no_grad():
            h = enc.model(**tok).last_hidden_state[0]
        ref = h.mean(0) / h.mean(0).norm()
        assert torch.allclose(out[j], ref, atol=1e-5)


def test_frozen_by_default_and_trainable_on_request():
    from tests.text.conftest import tiny_bert

    m, tok = tiny_bert()
    frozen = TextEncoder("t", model=m, tokenizer=tok).train()
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.model.training
    m2, tok2 = tiny_bert()
    live = TextEncoder("t", model=m2, tokenizer=tok2, freeze=False)
    live(SENTS[:2]).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in live.parameters())


def test_bad_encoder_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="text_encoder.*cannot load text encoder"):
        TextEncoder(str(tmp_path / "no_such_model"))


def test_cache_hit_and_miss(tmp_path, tiny_text_encoder):
    cache = EmbeddingCache(tmp_path, tiny_text_encoder)
    a = cache.embed(SENTS)
    assert (cache.hits, cache.misses) == (0, 3)
    files = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert files == sorted(f"{text_key(s)}.npy" for s in SENTS)
    fresh = EmbeddingCache(tmp_path, tiny_text_encoder)  # a new process reads from disk
    b = fresh.embed([SENTS[1], "A new sentence."])
    assert (fresh.hits, fresh.misses) == (1, 1)
    assert torch.equal(b[0], a[1])
    v = np.load(fresh.path(SENTS[1]), allow_pickle=False)
    assert v.dtype == np.float32 and np.array_equal(v, a[1].numpy())


def test_cache_keys_on_the_encoder(tmp_path, tiny_text_encoder):
    from tests.text.conftest import tiny_bert

    EmbeddingCache(tmp_path, tiny_text_encoder).embed(SENTS[:1])
    m, tok = tiny_bert(seed=1)
    other = EmbeddingCache(tmp_path, TextEncoder("tiny-bert", model=m, tokenizer=tok))  # same name, other weights
    other.embed(SENTS[:1])
    assert other.misses == 1 and len(list(tmp_path.iterdir())) == 2


def test_corrupt_cache_file_names_the_file(tmp_path, tiny_text_encoder):
    cache = EmbeddingCache(tmp_path, tiny_text_encoder)
    cache.embed(SENTS[:1])
    np.save(cache.path(SENTS[0]), np.zeros(5, np.float32))
    with pytest.raises(DataError, match=text_key(SENTS[0])):
        EmbeddingCache(tmp_path, tiny_text_encoder).embed(SENTS[:1])


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder()  # the packaged all-MiniLM-L6-v2, offline


def test_default_minilm_loads_offline_and_separates_findings(minilm):
    assert minilm.dim == 384 and minilm.name == "default"
    e = minilm.embed(["There is pleural effusion.", "Small left pleural effusion.", "Normal heart size."])
    sim = e @ e.T
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert sim[0, 1] > sim[0, 2] + 0.1  # two effusion sentences are closer than effusion vs heart
