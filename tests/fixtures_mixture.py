"""Session fixtures for the mixture, dataset and training tests: real Wikipedia text, one
specialist topic, a small BPE tokenizer (cheap CPU models), an index and its weights."""

import json

import pytest

from cis_stream.demo.corpora import make_wiki_split
from cis_stream.index.job import build_index
from cis_stream.text.readers import read_documents
from cis_stream.text.tokens import train_bpe_tokenizer
from cis_stream.weights import WeightOptions, compute_weights, write_weights
from tests.helpers import MIX_OTHER_TOPIC, MIX_TOPIC, STREAM_BUDGET


@pytest.fixture(scope='session')
def split_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('wiki_split')
    make_wiki_split(str(out), topic=MIX_TOPIC, seed=0)
    return out


@pytest.fixture(scope='session')
def other_topic_file(split_dir):
    """A second specialist set (another topic's pool articles) for multi-task mixtures."""
    path = split_dir / 'other_topic.jsonl'
    with open(split_dir / 'pool.jsonl', encoding='utf-8') as src, open(path, 'w', encoding='utf-8') as dst:
        kept = [line for line in src if json.loads(line)['topic'] == MIX_OTHER_TOPIC][:150]
        dst.writelines(kept)
    return path


@pytest.fixture(scope='session')
def small_tokenizer(split_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp('tokenizer') / 'tokenizer.json'
    texts = (d.text for d in read_documents([str(split_dir / 'pool.jsonl')]))
    return train_bpe_tokenizer(texts, 4096, str(path))


@pytest.fixture(scope='session')
def mix_index(split_dir, small_tokenizer, tmp_path_factory):
    """8 → 64 clusters over the pool: 128-token windows (LSI needs that much text), 64-token samples."""
    out = tmp_path_factory.mktemp('mix') / 'index'
    return build_index([str(split_dir / 'pool.jsonl')], str(out), embedder='lsi', levels=[8, 64],
                       window=128, seq_len=64, tokenizer=small_tokenizer, seed=0, progress=False)


@pytest.fixture(scope='session')
def mix_weights(mix_index, split_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp('weights') / 'bio.weights.json'
    write_weights(compute_weights(mix_index, [([str(split_dir / 'specialist.jsonl')], 1.0)]), str(path))
    return str(path)


@pytest.fixture(scope='session')
def stream_weights(mix_index, split_dir, tmp_path_factory):
    """Weights that mix the specialist sample in as a stream: 6 passes over it in 40,000 samples."""
    path = tmp_path_factory.mktemp('stream') / 'bio.weights.json'
    options = WeightOptions(specialist_repeats=6, tokens=STREAM_BUDGET * 64)
    write_weights(compute_weights(mix_index, [([str(split_dir / 'specialist.jsonl')], 1.0)], options, str(path),
                                  progress=False), str(path))
    return str(path)


@pytest.fixture(scope='session')
def pool_topics(split_dir):
    with open(split_dir / 'pool.jsonl', encoding='utf-8') as handle:
        return [json.loads(line)['topic'] for line in handle]


@pytest.fixture(scope='session')
def pool_placement(mix_index, split_dir):
    """Where each pool window lands (re-placed with the index's own parts) and its document."""
    texts = [d.text for d in read_documents([str(split_dir / 'pool.jsonl')])]
    return mix_index.place(texts)

