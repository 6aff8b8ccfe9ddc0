"""Index fingerprints guard the index format and the build: fixed real-text indexes must keep the
fingerprints recorded, so a change that alters what an index holds, or how its content is hashed, fails
here. The restructure (issue 13) kept the values of commit af651f4. They were recorded anew when the
fingerprint stopped hashing the input files' sizes (issue 15: the same text as JSON lines or Parquet is
the same index), in a change that touched nothing else, and again when lsi's features became token ids
(issue 18), which changes every lsi index.

The fingerprints also depend on the libraries that compute the content (faiss's k-means, numpy,
the tokenizers, Streaming's shard index, zstd's compressed bytes), and on the CPU code paths those
take: OpenBLAS picks its kernels by CPU model and faiss its SIMD level, and their floating-point
results differ in the last bits, which moves a k-means centroid and so the index. The values are
recorded per CPU path (`numerics()`), under the library versions in RECORDED_WITH. On a CPU path
with no record, a fingerprint equal to any recorded one passes; otherwise the test is skipped
with the reason, as it is where the libraries differ, because a library or a CPU and the code
cannot then be told apart. To record anew: build these indexes with the code of the commit to
compare against, in this environment. conftest.py pins faiss's AVX2 and OpenBLAS's Haswell kernels
where the CPU has AVX2, the record's own path, so that newer CPUs more often match it than skip.
"""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

from cis_stream.index.job import build_index
from tests.helpers import SMALL_OPTIONS, json_line, write_lines

# The indexes: conftest's small_index (300 History summaries, SMALL_OPTIONS: lsi 32-dim, levels 2/4,
# window 64, seq_len 96); small_excluded, the same decontaminated against 20 Arts summaries and two of
# its own documents (see below); conftest's wiki_index (~2,650 summaries of five topics in .jsonl with 7
# planted bad lines, .jsonl.gz and .jsonl.zst; lsi, levels 5/20, window 128); fixtures_mixture's
# mix_index (a BPE tokenizer trained on the pool, levels 8/64, window 128, seq_len 64).
RECORDED = {
    # Recorded anew when lsi moved from word to token-id features (issue 18), which changes every lsi index;
    # confirmed by the code of this commit (Intel Xeon, AVX2 pinned by conftest.py).
    'openblas Haswell, faiss AVX2': {
        'small_index': 'a86415b2f96357d77fd6878699f47ac11d2ce6b44fbb015c99e991d7bac13b5e',
        'small_excluded': 'ac38512e40e8dc2f9df16127de04bb046646782454bdce680b7b4f34ad205313',
        'wiki_index': 'f037ba57cac79950b264414c25f20f90e5bc505632b1ee74750f22238d7bd4ec',
        'mix_index': 'fe1a78a7231ba9fa193379a4b2fee7f120e7909a7ee97f7f7f18a415eb74dffa',
    },
}
RECORDED_WITH = {'python': '3.11', 'numpy': '2.1.3', 'faiss-cpu': '1.15.1', 'scikit-learn': '1.9.1',
                 'tokenizers': '0.21.4', 'tiktoken': '0.14.0', 'mosaicml-streaming': '0.13.0', 'zstandard': '0.25.0'}


def environment() -> dict[str, str]:
    versions = {'python': '.'.join(map(str, sys.version_info[:2]))}
    for name in list(RECORDED_WITH)[1:]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = 'not installed'
    return versions


def numerics() -> str:
    """The CPU code paths the index's numbers come from: OpenBLAS's kernel and faiss's SIMD level."""
    import faiss  # faiss, numpy and scipy each load their own OpenBLAS: all three are listed
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info
    kernels = sorted({i.get('architecture', '?') for i in threadpool_info() if i.get('internal_api') == 'openblas'})
    simd = [option for option in ('AVX512', 'AVX2', 'NEON', 'SVE') if option in faiss.get_compile_options()]
    return f"openblas {'+'.join(kernels) or 'none'}, faiss {simd[0] if simd else 'generic'}"


def assert_recorded(name: str, index) -> None:
    here, path = environment(), numerics()
    if path in RECORDED:
        expected = RECORDED[path][name]
        if index.fingerprint == expected:
            return
    elif index.fingerprint in {values[name] for values in RECORDED.values()}:
        return
    else:
        pytest.skip(f'{name}: fingerprint {index.fingerprint[:16]} matches no record, and none was made on this '
                    f'CPU path ({path}; recorded: {sorted(RECORDED)}), so the code is not shown to have changed '
                    f'the index')
    if here != RECORDED_WITH:
        pytest.skip(f'{name}: fingerprint {index.fingerprint[:16]} is not the recorded {expected[:16]}, '
                    f'but the libraries differ from those it was recorded with ({RECORDED_WITH}; here {here}), '
                    f'so the code is not shown to have changed the index')
    raise AssertionError(f'{name}: fingerprint {index.fingerprint} differs from the one recorded '
                         f'({expected}) with the same libraries and CPU path ({path}): the change alters the '
                         f'index (its content, or what the fingerprint hashes)')


def test_the_small_index_keeps_its_fingerprint(small_index):
    assert_recorded('small_index', small_index)


def test_a_decontaminated_index_keeps_its_fingerprint(small_corpus, wiki_records, tmp_path):
    arts = [r['text'] for r in wiki_records if r['topic'] == 'Arts'][:20]
    evals = str(tmp_path / 'evals.jsonl')
    write_lines(evals, [json_line({'text': t}) for t in arts + small_corpus.texts[5:7]])
    index = build_index([small_corpus.root], str(tmp_path / 'index'), exclude=[evals], **SMALL_OPTIONS)
    assert index.manifest['totals']['documents_excluded'] == 2
    assert_recorded('small_excluded', index)


def test_the_wiki_index_keeps_its_fingerprint(wiki_index):
    assert_recorded('wiki_index', wiki_index)


def test_the_mixture_index_keeps_its_fingerprint(mix_index):
    assert_recorded('mix_index', mix_index)
