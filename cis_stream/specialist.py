"""The specialist sample itself as one more stream of the mixture, beside the index's leaves.

Why: a small specialist sample trained on alone overfits once it is repeated many times, and a CIS
mixture alone never shows the model the sample's own text. Mixing the sample in at a fraction set
by a repeat budget (`cis-stream weights ... --specialist-repeats R --tokens N`: at most R passes
over the sample in N training tokens, and at most a quarter of the mixture; or a fixed
`--specialist-fraction F`) keeps the best of both.

The sample is indexed exactly as the index's own text is (its tokenizer, window, seq_len and
document size limit) into a one-leaf index beside the weights file, `NAME.specialist/` for
`NAME.weights.json`; the weights file names it by its directory name and fingerprint, and the
dataset mixes it like any leaf, with exact per-epoch counts. If the index was decontaminated
(`--exclude`), the sample is screened against the same eval files, so no test text reaches
training through it; the histogram is not screened (it sets proportions, it trains nothing).
"""

from __future__ import annotations

import os

from cis_stream.format.layout import TOKENIZER_FILE, NotAnIndexError
from cis_stream.format.reader import CISIndex
from cis_stream.text.inputs import input_sha256

WEIGHTS_SUFFIX = '.weights.json'
STREAM_SUFFIX = '.specialist'
# The sample's windows are never placed in a tree (one leaf); lsi is fit only because every index
# has an embedder, so the smallest one does.
EMBEDDER_CONFIG = {'dim': 2}


def stream_dir(weights_path: str) -> str:
    """`NAME.specialist` beside `NAME.weights.json` (or beside any other weights file name)."""
    base = weights_path[:-len(WEIGHTS_SUFFIX)] if weights_path.endswith(WEIGHTS_SUFFIX) else weights_path
    return base + STREAM_SUFFIX


def fraction_for(samples: int, budget_samples: int, repeats: float | None, fraction: float | None,
                 max_fraction: float) -> float:
    """The mixture's share of the specialist stream: a fixed `fraction`, or the share that shows the
    sample `repeats` times in `budget_samples` draws, at most `max_fraction` (beyond it the mixture is
    mostly the sample: at that budget, the sample is seen fewer than `repeats` times)."""
    if fraction is not None:
        return fraction
    return min(repeats * samples / budget_samples, max_fraction)


def _eval_files(index: CISIndex, decontaminate: bool) -> tuple[list[str], int]:
    """The index's eval files (paths, n-gram) to screen the sample against, checked unchanged."""
    record = index.manifest.get('decontamination')
    if not record or not decontaminate:
        return [], 0
    paths = [spec['path'] for spec in record['files']]
    problems = [f'{spec["path"]} is missing' if not os.path.exists(spec['path']) else
                f'{spec["path"]} has changed (its sha256 is not the one recorded)'
                for spec in record['files']
                if not os.path.exists(spec['path']) or input_sha256(spec['path']) != spec['sha256']]
    if problems:
        raise ValueError(f'{index.root} is decontaminated against eval files that the specialist stream must be '
                         f'screened against too, but {problems[0]} ({len(problems)} of {len(paths)} eval '
                         f'file(s)). Put the eval files back at the paths in its manifest (decontamination.files), '
                         f'or pass --no-decontaminate to mix the sample in unscreened')
    return paths, record['ngram']


def build_stream(index: CISIndex, files: list[str], weights_path: str, text_field: str,
                 decontaminate: bool = True, progress: bool = True) -> CISIndex:
    """Index the specialist `files` as one leaf, the way `index` was built, beside `weights_path`."""
    from cis_stream.index.job import build_index  # the indexer's imports take seconds: only when needed
    options = index.manifest['options']
    exclude, ngram = _eval_files(index, decontaminate)
    eos = index.tokenizer.tokenizer.id_to_token(options['tokenizer']['eos_id'])
    out = stream_dir(weights_path)
    try:
        return build_index(files, out, embedder='lsi', embedder_config=EMBEDDER_CONFIG, levels=[1],
                           window=options['window'], seq_len=options['seq_len'],
                           tokenizer=os.path.join(index.root, TOKENIZER_FILE), eos_token=eos, text_field=text_field,
                           max_doc_bytes=options['max_doc_bytes'], exclude=exclude,
                           **({'exclude_ngram': ngram} if exclude else {}),
                           overwrite=True, progress=progress)
    except ValueError as err:
        raise ValueError(f'the specialist stream {out} cannot be built: {err}') from err


def stream_record(stream: CISIndex, fraction: float, repeats: float | None, budget_samples: int) -> dict:
    """What the weights file keeps of the stream: where (a name beside it, never a path), which
    (fingerprint), how big, its share, and the passes over it that the share means for the budget."""
    samples = int(stream.leaf_samples.sum())
    decontamination = stream.manifest.get('decontamination')
    return {'dataset': os.path.basename(stream.root), 'fingerprint': stream.fingerprint, 'samples': samples,
            'tokens': int(stream.manifest['totals']['tokens']), 'fraction': fraction, 'repeats': repeats,
            'expected_repeats': fraction * budget_samples / samples,
            'decontaminated': bool(decontamination),
            'excluded_documents': sum(decontamination['documents_excluded'].values()) if decontamination else 0,
            'trimmed_documents': decontamination['documents_trimmed'] if decontamination else 0}


def open_stream(weights_path: str, record: dict, index: CISIndex) -> CISIndex:
    """The specialist stream a weights file names, checked to be the one it was made with, tokenised
    like `index`."""
    path = os.path.join(os.path.dirname(os.path.abspath(weights_path)), record['dataset'])
    advice = f'recompute the weights with `cis-stream weights --index {index.root} ... -o {weights_path}`'
    try:
        stream = CISIndex.open(path)
    except NotAnIndexError as err:
        raise ValueError(f'{weights_path} mixes in the specialist stream {path}, which cannot be opened ({err}); '
                         f'{advice}') from None
    if stream.fingerprint != record['fingerprint']:
        raise ValueError(f'{weights_path} was made with the specialist stream {record["fingerprint"][:16]}, but '
                         f'{path} is {stream.fingerprint[:16]}; {advice}')
    ours, theirs = stream.manifest['options'], index.manifest['options']
    for key in ('seq_len', 'token_column', 'tokenizer'):
        if ours[key] != theirs[key] and not (key == 'tokenizer' and _same_tokenizer(ours[key], theirs[key])):
            raise ValueError(f'the specialist stream {path} has {key} {ours[key]}, but {index.root} has '
                             f'{theirs[key]}; {advice}')
    return stream


def _same_tokenizer(a: dict, b: dict) -> bool:
    """Two manifests' tokenizer records, where they lay aside."""
    return {k: v for k, v in a.items() if k != 'source'} == {k: v for k, v in b.items() if k != 'source'}
