"""The selections CIS is compared with, each up to the same token budget: DSIR (data-selection's
HashedNgramDSIR) on whole pool documents and on ~2,000-character pieces, and the paper's
classifier on the index's embeddings. Selected documents are trained on through a one-cluster
index (data.one_cluster_index), so every method uses the same loader."""

from __future__ import annotations

import json
import os

import numpy as np

from benchmarks.quality.data import texts_of, write_jsonl
from cis_stream.embedders import reads_tokens
from cis_stream.format.reader import CISIndex
from cis_stream.text.readers import read_documents

CHUNK_CHARS = 2000


def take_to_budget(scores: np.ndarray, lengths: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Gumbel top-k on log scores (sampling without replacement) until the token budget is met."""
    noisy = scores + np.random.default_rng(seed).gumbel(size=len(scores))
    order = np.argsort(-noisy, kind='stable')
    count = int(np.searchsorted(np.cumsum(lengths[order]), budget)) + 1
    return np.sort(order[:count])


def read_records(path: str):
    """DSIR's loader for any input format (its default reads plain JSON lines only)."""
    for doc in read_documents([path]):
        if hasattr(doc, 'text'):
            yield {'text': doc.text}


def chunk_pool(work: str, pool: list[str]) -> list[str]:
    """The pool cut into pieces of about CHUNK_CHARS at whitespace, as DSIR is used on the Pile
    (examples of similar length): its log importance weight is a sum over n-grams, so on whole
    documents it grows with length and picks a few very long ones."""
    folder = os.path.join(work, 'pool_chunks')
    files = [os.path.join(folder, os.path.basename(f)) for f in pool]
    if not os.path.isdir(folder):
        os.makedirs(folder + '.tmp', exist_ok=True)
        for source, target in zip(pool, files):
            pieces = []
            for text in texts_of([source]):
                start = 0
                while start < len(text):
                    stop = text.rfind(' ', start + CHUNK_CHARS // 2, start + CHUNK_CHARS)
                    if len(text) - start <= CHUNK_CHARS:
                        stop = len(text)
                    elif stop < 0:  # no space in the second half: cut mid-word
                        stop = start + CHUNK_CHARS
                    if text[start:stop].strip():
                        pieces.append(text[start:stop])
                    start = stop
            write_jsonl(os.path.join(folder + '.tmp', os.path.basename(target)), pieces)
        os.rename(folder + '.tmp', folder)
    return files


def dsir_log_weights(cache: str, pool: list[str], targets: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """DSIR's own log importance weights (data-selection HashedNgramDSIR) of every pool document,
    for every domain, cached in the folder `cache`. One pass over the pool serves all domains
    (`separate_targets`: one target model per domain against the same raw model, exactly what a
    DSIR run per domain computes)."""
    from data_selection import HashedNgramDSIR
    path, names = os.path.join(cache, 'log_weights.npy'), os.path.join(cache, 'domains.json')
    domains = list(targets)
    if os.path.exists(path):
        with open(names, encoding='utf-8') as handle:
            cached = json.load(handle)  # the columns, by domain name: --domains may differ per run
        if set(domains) - set(cached):
            raise SystemExit(f'{cache} holds DSIR weights for {cached} only: delete it to recompute for {domains}')
        logw = np.load(path)
        return {d: logw[:, cached.index(d)] for d in domains}
    dsir = HashedNgramDSIR(pool, [targets[d][0] for d in domains], cache_dir=cache, num_proc=2,
                           target_load_dataset_fn=read_records, min_example_length=1, separate_targets=True)
    dsir.fit_importance_estimator(num_tokens_to_fit='auto')
    dsir.compute_importance_weights()
    shards = dsir._get_virtually_sharded_datasets(pool)
    logw = np.concatenate([np.load(os.path.join(dsir.log_importance_weights_dir, f'{i}.npy'))
                           for i in range(len(shards))])
    logw = logw.reshape(len(logw), len(domains))
    with open(names, 'w', encoding='utf-8') as handle:
        json.dump(domains, handle)
    np.save(path, logw)
    return {d: logw[:, i] for i, d in enumerate(domains)}


def dsir_selection(logw: np.ndarray, texts, chars, budget_chars: int, seed: int) -> list[str]:
    """Sampling by DSIR's weights up to the token budget (the package's `resample` takes a
    document count; the comparison needs equal tokens)."""
    assert len(logw) == len(texts), 'DSIR saw another number of pool documents'
    return [texts[i] for i in take_to_budget(logw, chars, budget_chars, seed)]


def classifier_selection(work: str, index: CISIndex, target: list[str], texts, chars, budget_chars: int,
                         seed: int) -> list[str]:
    """The paper's classifier baseline on the index's embeddings (first 1,000 characters)."""
    from sklearn.linear_model import LogisticRegression

    def embed(docs: list[str]) -> np.ndarray:
        def inputs(batch):  # an lsi on token ids takes the ids of the 1,000 characters
            return [ids for ids, _ in index.tokenizer.encode(batch)] if reads_tokens(index.embedder) else batch
        return np.concatenate([index.embedder.embed(inputs([d[:1000] for d in docs[i:i + 4096]]))
                               for i in range(0, len(docs), 4096)])
    cache = os.path.join(work, 'pool_embeddings.npy')
    if not os.path.exists(cache):
        np.save(cache, embed(texts))
    pool_vectors = np.load(cache)
    positives = embed(texts_of(target))
    rng = np.random.default_rng(seed)
    negatives = pool_vectors[rng.choice(len(pool_vectors), min(len(pool_vectors), 10 * len(positives)), replace=False)]
    model = LogisticRegression(max_iter=1000, class_weight='balanced')
    model.fit(np.concatenate([positives, negatives]), np.r_[np.ones(len(positives)), np.zeros(len(negatives))])
    log_odds = model.decision_function(pool_vectors)  # log p/(1-p): the importance weight's log
    return [texts[i] for i in take_to_budget(log_odds, chars, budget_chars, seed)]
