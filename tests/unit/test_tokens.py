"""Tokenizers load offline and documents are cut into exact token windows."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import cis_stream.text.tokens as tokens
from cis_stream.text.tokens import load_tokenizer, make_windows, tokenizer_from_json
from tests.helpers import fuzz_texts


@pytest.fixture(scope='module')
def gpt2():
    return load_tokenizer()


@pytest.fixture(scope='module')
def long_text(wiki_records):
    """About 8,000 tokens of real prose: 60 summaries joined by spaces."""
    return ' '.join(r['text'] for r in wiki_records[:60])


def ids_of(handle, text):
    return np.asarray(handle.tokenizer.encode(text, add_special_tokens=False).ids, np.int64)


def window_ids(windows, i):
    start = windows.starts[i]
    return windows.tokens[start:start + windows.lengths[i]]


def test_default_gpt2_tokenizer_loads_offline(gpt2):
    assert gpt2.eos_id == 50256
    assert gpt2.vocab_size == 50257
    assert gpt2.token_dtype == 'ndarray:uint16'
    assert gpt2.tokenizer.id_to_token(50256) == '<|endoftext|>'
    assert ids_of(gpt2, 'Hello world').tolist() == [15496, 995]  # GPT-2's well-known ids
    assert gpt2.spec['eos_id'] == 50256 and gpt2.spec['vocab_size'] == 50257
    assert len(gpt2.spec['sha256']) == 64
    # The text "<|endoftext|>" is not turned into the EOS id: EOS only ever comes from packing.
    assert 50256 not in ids_of(gpt2, 'a <|endoftext|> b').tolist()


def test_long_document_is_cut_into_exact_windows(gpt2, long_text):
    whole = ids_of(gpt2, long_text)
    assert len(whole) > 10 * 128
    windows = make_windows(gpt2, [long_text], 128)
    n = -(-len(whole) // 128)
    assert len(windows.lengths) == n
    assert (windows.lengths[:-1] == 128).all()
    assert 0 < windows.lengths[-1] <= 128 and windows.lengths.sum() == len(whole)
    assert np.array_equal(windows.tokens, whole)
    assert (windows.doc_index == 0).all()
    assert len(windows.texts) == n
    assert windows.starts.tolist() == list(range(0, len(whole), 128))


def test_short_documents_stay_whole_and_keep_their_order(gpt2, long_text):
    texts = ['A short one.', long_text[:2000], 'Another short document, in second place of the shorts.']
    windows = make_windows(gpt2, texts, 128)
    lengths = [len(ids_of(gpt2, t)) for t in texts]
    middle = -(-lengths[1] // 128)
    assert windows.doc_index.tolist() == [0] + [1] * middle + [2]
    assert windows.lengths[0] == lengths[0] and windows.lengths[-1] == lengths[2]
    assert windows.texts[0] == texts[0] and windows.texts[-1] == texts[2]
    assert np.array_equal(window_ids(windows, 0), ids_of(gpt2, texts[0]))
    # A document of exactly one window is one window, not one plus an empty one.
    exact = gpt2.tokenizer.decode(ids_of(gpt2, long_text)[:128].tolist())
    assert len(ids_of(gpt2, exact)) == 128
    assert make_windows(gpt2, [exact], 128).lengths.tolist() == [128]


def test_window_texts_retokenize_to_their_ids(gpt2, long_text):
    windows = make_windows(gpt2, [long_text, 'Café, naïve, 東京 and emoji 🙂 in one window.'], 128)
    same = 0
    for i, text in enumerate(windows.texts):
        again = ids_of(gpt2, text)
        original = window_ids(windows, i)
        assert text in long_text or i == len(windows.texts) - 1
        assert abs(len(again) - len(original)) <= 2, (i, text[:80])
        same += np.array_equal(again, original)
    # Identical except where a cut falls inside a word or a multi-byte character.
    assert same >= 0.9 * len(windows.texts)
    # Consecutive window texts tile the document (no gaps between windows).
    first_doc = [t for t, d in zip(windows.texts, windows.doc_index) if d == 0]
    assert ''.join(first_doc) == long_text
    # char_spans say where each window's text lies in its document; select keeps windows whole.
    texts = [long_text, 'Café, naïve, 東京 and emoji 🙂 in one window.']
    assert all(texts[d][s:e] == t for t, d, (s, e) in zip(windows.texts, windows.doc_index, windows.char_spans))
    keep = np.arange(len(windows.lengths)) % 3 == 1
    kept = windows.select(keep)
    assert kept.texts == [t for t, k in zip(windows.texts, keep) if k]
    assert all(np.array_equal(window_ids(kept, j), window_ids(windows, i)) for j, i in enumerate(np.flatnonzero(keep)))
    assert np.array_equal(kept.char_spans, windows.char_spans[keep])
    assert np.array_equal(kept.doc_index, windows.doc_index[keep])


@pytest.mark.parametrize('piece_chars', [97, 200, 1000])
def test_documents_longer_than_piece_chars_tokenize_as_a_whole(gpt2, long_text, monkeypatch, piece_chars):
    monkeypatch.setattr(tokens, 'PIECE_CHARS', piece_chars)
    pieces = tokens._pieces(long_text)
    assert len(pieces) > 5
    assert ''.join(p for _, p in pieces) == long_text
    assert all(long_text[off:off + len(p)] == p for off, p in pieces)
    whole = ids_of(gpt2, long_text)
    windows = make_windows(gpt2, ['short', long_text], 128)
    second = np.concatenate([window_ids(windows, i) for i in np.flatnonzero(windows.doc_index == 1)])
    assert np.array_equal(second, whole)
    assert (windows.lengths[windows.doc_index == 1][:-1] == 128).all()
    # Window texts are still cut from the right places of the original document.
    assert ''.join(t for t, d in zip(windows.texts, windows.doc_index) if d == 1) == long_text


def test_custom_tokenizer_json_file_and_folder(gpt2, tmp_path, long_text):
    folder = tmp_path / 'tok'
    folder.mkdir()
    gpt2.tokenizer.save(str(folder / 'tokenizer.json'))
    for path in (str(folder / 'tokenizer.json'), str(folder)):
        handle = load_tokenizer(path)
        assert handle.eos_id == 50256 and handle.vocab_size == 50257
        assert handle.spec['source'] == os.path.abspath(folder / 'tokenizer.json')
        assert handle.spec['sha256'] == gpt2.spec['sha256']
        assert np.array_equal(make_windows(handle, [long_text], 64).tokens,
                              make_windows(gpt2, [long_text], 64).tokens)
    rebuilt = tokenizer_from_json(gpt2.to_json(), gpt2.eos_id)
    assert rebuilt.spec['sha256'] == gpt2.spec['sha256']
    assert np.array_equal(ids_of(rebuilt, long_text), ids_of(gpt2, long_text))


def word_level(path, words, extra_ids=0, eos='</s>'):
    """A word-level tokenizer.json: [UNK], optional EOS, then the words from id `extra_ids` up."""
    vocab = {'[UNK]': 0}
    if eos:
        vocab[eos] = 1
    for i in range(len(vocab), extra_ids):
        vocab[f'<filler{i}>'] = i
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return str(path)


def test_other_tokenizers_find_their_eos_and_dtype(tmp_path):
    path = word_level(tmp_path / 'small.json', ['alpha', 'beta'])
    small = load_tokenizer(path)
    assert small.eos_id == 1 and small.token_dtype == 'ndarray:uint16'
    assert make_windows(small, ['alpha beta gamma'], 2).tokens.tolist() == [2, 3, 0]

    # More than 65,536 ids do not fit uint16: the token column must become int32.
    big = load_tokenizer(word_level(tmp_path / 'big.json', ['alpha'], extra_ids=70000))
    assert big.vocab_size == 70001 and big.token_dtype == 'ndarray:int32'
    assert make_windows(big, ['alpha'], 4).tokens.tolist() == [70000]
    edge = load_tokenizer(word_level(tmp_path / 'edge.json', ['alpha'], extra_ids=65535))
    assert edge.vocab_size == 65536 and edge.token_dtype == 'ndarray:uint16'

    no_eos = word_level(tmp_path / 'noeos.json', ['alpha', '<END>'], eos=None)
    with pytest.raises(ValueError, match='no end-of-text token.*--eos-token'):
        load_tokenizer(no_eos)
    assert load_tokenizer(no_eos, eos_token='<END>').eos_id == 2


def test_missing_or_bad_tokenizer_file_names_the_path(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'tokenizer.json')
    with pytest.raises(ValueError) as info:
        load_tokenizer(missing)
    assert str(info.value).startswith(missing) and 'no tokenizer.json' in str(info.value)

    empty_folder = tmp_path / 'empty'
    empty_folder.mkdir()
    with pytest.raises(ValueError) as info:
        load_tokenizer(str(empty_folder))
    assert str(empty_folder) in str(info.value)

    broken = tmp_path / 'broken.json'
    broken.write_text(json.dumps({'not': 'a tokenizer'}))
    with pytest.raises(ValueError) as info:
        load_tokenizer(str(broken))
    assert str(broken) in str(info.value) and 'not a Hugging Face tokenizer.json' in str(info.value)


def _huggingface_only(handle):
    return tokens.TokenizerHandle(handle.tokenizer, handle.spec, handle.eos_id)


def test_gpt2_runs_through_tiktoken_with_the_same_ids_and_windows_as_hugging_face(gpt2, wiki_records, tmp_path):
    assert gpt2.fast is not None
    stdlib = os.path.dirname(os.__file__)
    code = [open(os.path.join(stdlib, name), encoding='utf-8').read() for name in ('os.py', 'difflib.py', 'locale.py')]
    texts = ([r['text'] for r in wiki_records[:300]] + code + fuzz_texts(2000)
             + ['Café, naïve, 東京 and emoji 🙂👍🏽 in one window; they\'ll say "ok"\r\n\u00a0 end  ',
                'written out: <|endoftext|> is the end-of-text token'])
    _same_as_hugging_face(gpt2, texts)
    # A saved copy of GPT-2, and the copy an index stores, are recognised and take the same path.
    gpt2.tokenizer.save(str(tmp_path / 'tokenizer.json'))
    assert load_tokenizer(str(tmp_path / 'tokenizer.json')).fast is not None
    assert tokenizer_from_json(gpt2.to_json(), gpt2.eos_id).fast is not None


def _same_as_hugging_face(handle, texts):
    """The tiktoken path gives `tokenizers`' ids, window tokens and window spans on `texts`."""
    slow = _huggingface_only(handle)
    for (fast_ids, _), (slow_ids, _) in zip(handle.encode(texts), slow.encode(texts)):
        assert np.array_equal(fast_ids, slow_ids)
    # Windows of 7 tokens put many cuts inside multi-byte characters: the spans agree there too.
    for window in (7, 128):
        fast, reference = make_windows(handle, texts, window), make_windows(slow, texts, window)
        assert np.array_equal(fast.tokens, reference.tokens) and np.array_equal(fast.lengths, reference.lengths)
        assert np.array_equal(fast.char_spans, reference.char_spans) and fast.texts == reference.texts


@pytest.mark.parametrize('style', tokens.BPE_STYLES)
def test_byte_level_bpe_of_each_family_runs_through_tiktoken_exactly(style, wiki_records, tmp_path):
    stdlib = os.path.dirname(os.__file__)
    code = [open(os.path.join(stdlib, name), encoding='utf-8').read() for name in ('os.py', 'difflib.py')]
    path = tokens.train_bpe_tokenizer([r['text'] for r in wiki_records[:800]] + code, 3000,
                                      str(tmp_path / f'{style}.json'), style=style)
    handle = load_tokenizer(path)
    assert handle.fast is not None
    # Fuzz with combining marks (not NFC: GPT-NeoX's normalizer changes them) and the end-of-text
    # token written out (split out as that token): such texts take the `tokenizers` path.
    fuzz = fuzz_texts(1500, extra_pieces=("'S", "'LL", '\r\n', ' \r\n\r\n', '<|endoftext|>', '1234567'))
    texts = [r['text'] for r in wiki_records[800:1000]] + code + fuzz
    _same_as_hugging_face(handle, texts)
    with_eos = handle.encode(['one <|endoftext|> two'])[0][0]
    assert handle.eos_id in with_eos.tolist()
    assert tokenizer_from_json(handle.to_json(), handle.eos_id).fast is not None


def _another_split(model: dict) -> list[str]:
    """A pair of tokens that joins into a merged token, other than the merge that makes it."""
    vocab, merges = model['vocab'], {tuple(m) for m in model['merges']}
    for left, right in model['merges']:
        token = left + right
        for cut in range(1, len(token)):
            pair = (token[:cut], token[cut:])
            if pair not in merges and pair[0] in vocab and pair[1] in vocab:
                return list(pair)
    raise AssertionError('no token with two splits')


def test_tokenizers_tiktoken_cannot_run_stay_on_hugging_face(tmp_path, wiki_records):
    texts = [r['text'] for r in wiki_records[:300]]
    path = tokens.train_bpe_tokenizer(texts, 1000, str(tmp_path / 'bpe.json'))
    spec = json.loads(open(path, encoding='utf-8').read())
    variants = {
        'prefix space': lambda s: s['pre_tokenizer'].update(add_prefix_space=True),
        'dropout': lambda s: s['model'].update(dropout=0.1),
        'lowercase': lambda s: s.update(normalizer={'type': 'Lowercase'}),
        'two merges make one token': lambda s: s['model']['merges'].append(_another_split(s['model'])),
    }
    for name, change in variants.items():
        changed = json.loads(json.dumps(spec))
        change(changed)
        (tmp_path / f'{name}.json').write_text(json.dumps(changed), encoding='utf-8')
        handle = load_tokenizer(str(tmp_path / f'{name}.json'))
        assert handle.fast is None, name
        if name != 'dropout':  # (random by design)
            assert np.array_equal(make_windows(handle, [texts[0]], 16).tokens, ids_of(handle, texts[0])), name

    wordpiece = word_level(tmp_path / 'words.json', ['alpha', 'beta'])
    assert load_tokenizer(wordpiece).fast is None
