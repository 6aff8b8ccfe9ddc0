"""The index's tokenizer as a transformers tokenizer: for train.py's model and eval text, and as a
directory that llm-foundry's `tokenizer: name: DIR` (AutoTokenizer.from_pretrained) loads offline."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from cis_stream.format.reader import CISIndex


def hf_tokenizer(index: CISIndex) -> PreTrainedTokenizerFast:
    """The index's own tokenizer, its end-of-text token as EOS and as padding."""
    handle = index.tokenizer
    eos = handle.tokenizer.id_to_token(handle.eos_id)
    return PreTrainedTokenizerFast(tokenizer_object=handle.tokenizer, eos_token=eos, pad_token=eos)


def export_tokenizer(index: str, out: str) -> PreTrainedTokenizerFast:
    """Write the index's tokenizer to the directory `out` (tokenizer.json and its configs)."""
    tokenizer = hf_tokenizer(CISIndex.open(index))
    tokenizer.save_pretrained(out)
    return tokenizer
