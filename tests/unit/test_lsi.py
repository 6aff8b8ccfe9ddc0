"""lsi on token ids (the default) and on words (indexes built before token features still load as such)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cis_stream.embedders import load_embedder, make_embedder, reads_tokens
from cis_stream.embedders.lsi import LSIEmbedder
from cis_stream.text.tokens import load_tokenizer, make_windows

TOPICS = ('Mathematics', 'Arts')


def topic_windows(wiki_records):
    """64-token windows of two topics' summaries, and each window's topic."""
    windows, topics = [], []
    for topic in TOPICS:
        texts = [r['text'] for r in wiki_records if r['topic'] == topic][:250]
        cut = make_windows(load_tokenizer(), texts, 64)
        windows.append(cut)
        topics += [topic] * len(cut.lengths)
    return windows, np.asarray(topics)


def test_token_lsi_puts_windows_of_one_topic_together(wiki_records, tmp_path):
    windows, topics = topic_windows(wiki_records)
    ids = [w for cut in windows for w in cut.token_windows()]
    embedder = make_embedder('lsi', dim=64)
    assert reads_tokens(embedder) and embedder.config() == {'dim': 64, 'n_features': 1 << 16, 'features': 'tokens'}
    embedder.fit(ids, seed=0)
    vectors = embedder.embed(ids)
    assert vectors.shape == (len(ids), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    centroids = {t: vectors[topics == t].mean(axis=0) for t in TOPICS}
    nearer_own = np.mean([(v @ centroids[t]) > max(v @ centroids[o] for o in TOPICS if o != t)
                          for v, t in zip(vectors, topics)])
    assert nearer_own > 0.85, f'only {nearer_own:.0%} of the windows nearer their own topic'
    embedder.save(str(tmp_path))
    reloaded = load_embedder('lsi', embedder.config(), str(tmp_path))
    assert reloaded.features == 'tokens'
    np.testing.assert_array_equal(reloaded.embed(ids), vectors)


def test_an_lsi_saved_before_token_features_loads_as_words(wiki_records, tmp_path):
    """Its manifest's config and its lsi.npz name no features: it embeds words, as it was fit."""
    windows, _ = topic_windows(wiki_records)
    texts = [t for cut in windows for t in cut.texts]
    fitted = LSIEmbedder(dim=16, features='words')
    assert not fitted.reads_tokens
    fitted.fit(texts, seed=0)
    np.savez(os.path.join(tmp_path, 'lsi.npz'), idf=fitted.idf, components=fitted.components)  # the old state
    old = load_embedder('lsi', {'dim': 16, 'n_features': 1 << 16}, str(tmp_path))
    assert old.features == 'words' and not reads_tokens(old)
    np.testing.assert_array_equal(old.embed(texts), fitted.embed(texts))


def test_unknown_lsi_features_are_refused():
    with pytest.raises(ValueError, match="lsi features 'chars': use one of tokens, words"):
        LSIEmbedder(features='chars')
