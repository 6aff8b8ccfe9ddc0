"""tiktoken as an exact, faster runner of byte-level BPE `tokenizer.json` files.

Hugging Face `tokenizers` costs several times tiktoken's CPU per token (benchmarks/results/RESULTS.md),
and tokenising is most of what indexing costs. tiktoken runs one split regex and a byte-level BPE
whose merge order is its token ranks, which is the pipeline of GPT-2, GPT-NeoX/Pythia/OLMo-1 and
Llama-3-style tokenizers. `TiktokenBPE.from_tokenizer` builds that from a tokenizer.json when, and
only when, the file's pipeline is one tiktoken has:

- no normalizer, or NFC (then a text that is not already NFC goes to `tokenizers`);
- a ByteLevel pre-tokenizer with GPT-2's regex, or one Split(regex, Isolated) before ByteLevel
  without its regex; no prefix space;
- a BPE model without dropout, unknown token, word prefixes or suffixes, or byte fallback, holding
  every byte, with every other token made by exactly one merge.

A text holding an added token's content (`<|endoftext|>` written out, say) goes to `tokenizers`,
which splits it out as that token. A probe of mixed scripts, code and whitespace must give the same
ids both ways, or the tokenizer keeps running through `tokenizers` only.
"""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
import tiktoken
from tokenizers import Tokenizer

# GPT-2's pre-tokenisation rule, the one Hugging Face's ByteLevel pre-tokenizer applies with use_regex.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PROBE = ('Café, naïve, 東京 and emoji 🙂👍🏽; they\'ll SAY "ok"\r\n\u00a0 end  \n\n\tdef f(x):\n'
         '    return x**2  # 12345\nÜnïcödé  1,234.56€ — «quote» ‘single’ ١٢٣ Привет мир! こんにちは 👩‍👩‍👧 \x00\x7f ')


def byte_of_char() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's `bytes_to_unicode`), inverted."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


class CharOffsets:
    """(start, end) character offsets of the tokens of one text, from their UTF-8 byte lengths.

    Like Hugging Face's offsets, a token holding part of a multi-byte character covers the whole
    character.
    """

    def __init__(self, text: str, byte_lengths: np.ndarray):
        ends = np.cumsum(byte_lengths)
        starts = ends - byte_lengths
        if not text.isascii():
            raw = np.frombuffer(text.encode('utf-8'), np.uint8)
            chars_before = np.concatenate([[0], np.cumsum((raw & 0xC0) != 0x80)])  # at each byte
            starts, ends = chars_before[starts + 1] - 1, chars_before[ends]
        self.starts, self.ends = starts, ends

    def __getitem__(self, token: int) -> tuple[int, int]:
        return int(self.starts[token]), int(self.ends[token])


def _split_pattern(pre: dict | None) -> str | None:
    """The one regex tiktoken must run for this pre-tokenizer, or None if tiktoken cannot run it."""
    if not pre:
        return None
    if pre['type'] == 'ByteLevel':
        return GPT2_PATTERN if pre.get('use_regex', True) and not pre.get('add_prefix_space') else None
    if pre['type'] == 'Sequence' and len(pre['pretokenizers']) == 2:
        split, byte_level = pre['pretokenizers']
        if (split['type'] == 'Split' and 'Regex' in split['pattern'] and split['behavior'] == 'Isolated'
                and not split['invert'] and byte_level['type'] == 'ByteLevel'
                and not byte_level.get('use_regex', True) and not byte_level.get('add_prefix_space')):
            return split['pattern']['Regex']
    return None


def _merge_ranks(model: dict, added: set[str]) -> dict[bytes, tuple[int, int]] | None:
    """Token bytes → (tiktoken rank, id): bytes first, then merged tokens in merge order; None if the
    model is not a plain byte-level BPE whose tokens all come from one merge each."""
    plain = (model.get('type') == 'BPE' and not model.get('dropout') and model.get('unk_token') is None
             and not model.get('continuing_subword_prefix') and not model.get('end_of_word_suffix')
             and not model.get('byte_fallback'))
    if not plain:
        return None
    byte_of = byte_of_char()
    vocab = model['vocab']
    if any(ch not in vocab for ch in byte_of):
        return None
    ranks = {bytes([byte_of[ch]]): (byte_of[ch], vocab[ch]) for ch in byte_of}
    for rank, merge in enumerate(model['merges'], start=256):
        left, right = merge.split(' ') if isinstance(merge, str) else merge
        token = left + right
        if token not in vocab or any(ch not in byte_of for ch in token):
            return None
        key = bytes(byte_of[ch] for ch in token)
        if key in ranks:  # two merges make one token: tiktoken's ranks cannot say which applies
            return None
        ranks[key] = (rank, vocab[token])
    # A token no merge makes cannot come out of `tokenizers`' BPE, except as a whole word when the
    # model looks words up first (ignore_merges), which tiktoken would not do for it.
    unmade = len(vocab) - len(ranks) - sum(token in vocab for token in added)
    return None if unmade and model.get('ignore_merges') else ranks


class TiktokenBPE:
    """A byte-level BPE tokenizer.json run by tiktoken, with `tokenizers` for the texts it cannot run."""

    def __init__(self, tokenizer: Tokenizer, pattern: str, ranks: dict[bytes, tuple[int, int]], nfc: bool,
                 added: list[str]):
        self.tokenizer = tokenizer
        self.encoding = tiktoken.Encoding('cis-stream-bpe', pat_str=pattern,
                                          mergeable_ranks={key: rank for key, (rank, _) in ranks.items()},
                                          special_tokens={})
        size = max(rank for rank, _ in ranks.values()) + 1
        self.id_of_rank = np.zeros(size, np.int64)
        self.byte_lengths = np.zeros(size, np.int64)
        for key, (rank, token_id) in ranks.items():
            self.id_of_rank[rank], self.byte_lengths[rank] = token_id, len(key)
        self.nfc = nfc
        self.added = re.compile('|'.join(re.escape(a) for a in sorted(added, key=len, reverse=True))) if added else None

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> TiktokenBPE | None:
        """The tiktoken runner of `tokenizer`, or None where tiktoken cannot give exactly its ids."""
        spec = json.loads(tokenizer.to_str())
        normalizer = spec.get('normalizer')
        pattern = _split_pattern(spec.get('pre_tokenizer'))
        if pattern is None or (normalizer and normalizer.get('type') != 'NFC'):
            return None
        added = [token['content'] for token in spec.get('added_tokens') or ()]
        ranks = _merge_ranks(spec['model'], set(added))
        if ranks is None:
            return None
        try:
            fast = cls(tokenizer, pattern, ranks, bool(normalizer), added)
        except ValueError:  # a regex tiktoken's engine does not take
            return None
        probe = [PROBE, PROBE.upper(), PROBE * 3]
        slow = [enc.ids for enc in tokenizer.encode_batch(probe, add_special_tokens=False)]
        return fast if [ids.tolist() for ids, _ in fast.encode(probe)] == slow else None

    def _runs_here(self, text: str) -> bool:
        return (not self.nfc or unicodedata.is_normalized('NFC', text)) and not (self.added and self.added.search(text))

    def encode(self, texts: list[str]) -> list[tuple[np.ndarray, object]]:
        """(ids, char offsets) of each text, without special tokens, as `tokenizers` gives them."""
        encoded: list = [None] * len(texts)
        others = []
        for i, text in enumerate(texts):
            if self._runs_here(text):
                ranks = np.asarray(self.encoding.encode_ordinary(text), np.int64)
                encoded[i] = (self.id_of_rank[ranks], CharOffsets(text, self.byte_lengths[ranks]))
            else:
                others.append(i)
        if others:
            for i, enc in zip(others, self.tokenizer.encode_batch([texts[i] for i in others],
                                                                   add_special_tokens=False)):
                encoded[i] = (np.asarray(enc.ids, np.int64), enc.offsets)
        return encoded
