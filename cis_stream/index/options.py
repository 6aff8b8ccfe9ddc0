"""The indexer's options and their checks.

Importable without torch, faiss or Streaming (the indexer's imports take seconds), so that
`cis-stream index` reports a bad option at once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from cis_stream.format.files import canonical_json
from cis_stream.text.decontam import DEFAULT_NGRAM
from cis_stream.text.readers import MAX_DOC_BYTES
from cis_stream.tree import check_levels


@dataclass
class IndexOptions:
    """Every option that shapes an index; all of it is recorded in the manifest."""
    embedder: str = 'lsi'
    embedder_config: dict = field(default_factory=dict)
    levels: list[int] = field(default_factory=lambda: [16, 256])
    window: int = 1024
    seq_len: int | None = None
    tokenizer: str | None = None
    eos_token: str | None = None
    text_field: str = 'text'
    seed: int = 0
    embedder_fit_sample: int | None = None  # windows; by default, index.EMBEDDER_FIT_TOKENS worth
    tree_fit_sample: int | None = None
    max_doc_bytes: int = MAX_DOC_BYTES
    # Decontamination (decontam.py): eval files whose text must not be indexed.
    exclude: list[str] = field(default_factory=list)
    exclude_ngram: int = DEFAULT_NGRAM

    def validate(self) -> None:
        check_levels(self.levels)
        if self.max_doc_bytes < 1:
            raise ValueError(f'--max-doc-bytes {self.max_doc_bytes}: must be a positive number of bytes')
        if self.window < 1:
            raise ValueError(f'--window {self.window}: must be a positive number of tokens')
        if self.seq_len is not None and self.seq_len < 1:
            raise ValueError(f'--seq-len {self.seq_len}: must be a positive number of tokens')
        if self.exclude_ngram < 1:
            raise ValueError(f'--exclude-ngram {self.exclude_ngram}: must be a positive number of words')


def build_request(files: list[str], options: IndexOptions) -> dict:
    """What a build was asked for: its input files and options (recorded, to recognise it when rerun)."""
    return json.loads(canonical_json({'inputs': list(files), 'options': dataclasses.asdict(options)}))
