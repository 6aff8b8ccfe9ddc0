"""Composer data loaders: the CIS train loader and held-out text eval loaders.

`build_cis_dataloader(cfg, tokenizer, device_batch_size)` follows llm-foundry's data-loader
builder convention and is registered under the `llmfoundry_dataloaders` entry point as `cis`,
so llm-foundry picks it up when installed without being a dependency of ours.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from composer.core import DataSpec
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerFast

from cis_stream.dataset import ClusteredImportanceDataset, sequences_per_sample
from cis_stream.format.store import open_index
from cis_stream.text.readers import Document, expand_inputs, read_documents
from cis_stream.training.config import check_keys

CIS_DATASET_KEYS = {'index', 'weights', 'local', 'epoch_size', 'max_seq_len', 'max_repeat',
                    'allow_mixture_change', 'sample_ids', 'shuffle', 'shuffle_seed', 'shuffle_algo',
                    'shuffle_block_size', 'num_canonical_nodes', 'predownload', 'cache_limit',
                    'download_retry', 'download_timeout', 'sampling_method', 'sampling_granularity',
                    'partition_algo', 'batching_method', 'keep_zip', 'validate_hash', 'replication',
                    'split_samples', 'schedule', 'adapt_dir', 'download_threads'}
LOADER_KEYS = {'name', 'dataset', 'drop_last', 'num_workers', 'pin_memory', 'prefetch_factor',
               'persistent_workers', 'timeout'}


def collate_causal_lm(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack items (tensors, or ints such as sample ids); labels are the inputs (the causal LM
    shifts them itself). Items that hold the k sequences of one split sample ([k, max_seq_len],
    sample ids [k]) are concatenated, so a batch is always [sequences, max_seq_len]: Composer then
    splits microbatches and counts samples and tokens per training sequence."""
    join = torch.cat if items[0]['input_ids'].dim() == 2 else torch.stack
    batch = {key: join([item[key] for item in items]) if torch.is_tensor(items[0][key])
             else torch.tensor([item[key] for item in items]) for key in items[0]}
    batch['labels'] = batch['input_ids'].clone()
    return batch


def _tokens_in_batch(batch: dict[str, torch.Tensor]) -> int:
    return int(batch['input_ids'].numel())


def _loader_options(cfg: dict) -> dict:
    workers = int(cfg.get('num_workers', 0))
    options = {'drop_last': bool(cfg.get('drop_last', True)), 'num_workers': workers,
               'pin_memory': bool(cfg.get('pin_memory', False)), 'timeout': cfg.get('timeout', 0)}
    if workers > 0:
        options['prefetch_factor'] = cfg.get('prefetch_factor', 2)
        options['persistent_workers'] = bool(cfg.get('persistent_workers', True))
    return options


def build_cis_dataloader(cfg: dict[str, Any] | None = None, tokenizer: Any = None,
                         device_batch_size: int = 1, **kwargs: Any) -> DataSpec:
    """A DataSpec over `ClusteredImportanceDataset(**cfg['dataset'])`, `device_batch_size` training
    sequences per batch.

    Where max_seq_len divides the index's seq_len into k sequences, the loader reads
    device_batch_size / k index samples per batch (the dataset's and the DataLoader's batch size),
    so global_train_batch_size keeps counting training sequences. A device batch that is not a
    multiple of k truncates samples instead, with a warning. Accepts llm-foundry's both calling
    styles: `cfg=` a loader section, or its keys as keywords.
    """
    cfg = dict(cfg if cfg is not None else kwargs)
    check_keys('train_loader', cfg, LOADER_KEYS)
    dataset_cfg = dict(cfg.get('dataset') or {})
    check_keys('train_loader.dataset', dataset_cfg, CIS_DATASET_KEYS)
    if 'index' not in dataset_cfg:
        raise ValueError('train_loader.dataset.index is required (a published cis_stream index)')
    seq_len = open_index(dataset_cfg['index'], dataset_cfg.get('local')).manifest['options']['seq_len']
    split = sequences_per_sample(seq_len, dataset_cfg.get('max_seq_len') or seq_len)
    split = split if dataset_cfg.get('split_samples', True) else 1
    if device_batch_size % split:
        warnings.warn(f'train_loader: the device batch of {device_batch_size} training sequences is not a '
                      f'multiple of the {split} sequences each {seq_len}-token index sample splits into, so '
                      f'samples are truncated instead; give each device a multiple of {split} sequences '
                      f'(global_train_batch_size / processes)', stacklevel=2)
        dataset_cfg['split_samples'], split = False, 1
    dataset = ClusteredImportanceDataset(batch_size=device_batch_size // split, **dataset_cfg)
    loader = DataLoader(dataset, batch_size=device_batch_size // split, collate_fn=collate_causal_lm,
                        **_loader_options(cfg))
    return DataSpec(loader, get_num_tokens_in_batch=_tokens_in_batch)


class TokenizedTextDataset(Dataset):
    """Held-out text as EOS-joined, fixed-length token sequences (the tail shorter than one
    sequence is dropped and counted in `dropped_tokens`)."""

    def __init__(self, files: list[str], tokenizer: PreTrainedTokenizerFast, max_seq_len: int,
                 text_field: str = 'text'):
        texts = [doc.text for doc in read_documents(expand_inputs(files), text_field)
                 if isinstance(doc, Document)]
        if not texts:
            raise ValueError(f'eval files {files}: no usable document')
        encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        stream = np.concatenate([np.append(np.asarray(e.ids, np.int64), tokenizer.eos_token_id)
                                 for e in encodings])
        count = len(stream) // max_seq_len
        self.dropped_tokens = len(stream) - count * max_seq_len
        self.samples = torch.from_numpy(stream[:count * max_seq_len].reshape(count, max_seq_len))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {'input_ids': self.samples[i]}


def build_text_files_dataloader(cfg: dict[str, Any] | None = None, tokenizer: PreTrainedTokenizerFast = None,
                                device_batch_size: int = 1, **kwargs: Any) -> DataSpec:
    """Eval loader over held-out text files (`dataset: {files: [...], max_seq_len, text_field}`),
    registered for llm-foundry as `cis_text`; llm-foundry's calling style (keywords) works too."""
    cfg = dict(cfg if cfg is not None else kwargs)
    check_keys('eval_loader', cfg, LOADER_KEYS | {'label'})
    dataset_cfg = dict(cfg.get('dataset') or {})
    check_keys('eval_loader.dataset', dataset_cfg, {'files', 'max_seq_len', 'text_field'})
    dataset = TokenizedTextDataset(list(dataset_cfg['files']), tokenizer, int(dataset_cfg['max_seq_len']),
                                   dataset_cfg.get('text_field', 'text'))
    print(f"eval loader {cfg.get('label', '')}: {len(dataset)} sequences of {dataset_cfg['max_seq_len']} tokens "
          f"from {dataset_cfg['files']} ({dataset.dropped_tokens} tail tokens left out)", flush=True)
    options = _loader_options(cfg) | {'drop_last': False}
    loader = DataLoader(dataset, batch_size=device_batch_size, collate_fn=collate_causal_lm,
                        sampler=dist.get_sampler(dataset, drop_last=False, shuffle=False), **options)
    return DataSpec(loader, get_num_tokens_in_batch=_tokens_in_batch)
