"""Composer training on a CIS mixture: `composer train.py yamls/cis.yaml [key=value ...]`.

The YAML follows Composer / llm-foundry conventions. The model is a small causal LM built from a
config through transformers (GPT-2 or Llama shapes; no download), wrapped in Composer's
HuggingFaceModel with its language cross-entropy and perplexity metrics.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import yaml

from cis_stream.training.config import check_keys

TOP_KEYS = {
    'run_name', 'seed', 'max_seq_len', 'global_train_batch_size', 'device_train_microbatch_size',
    'device_eval_batch_size', 'max_duration', 'eval_interval', 'eval_first', 'eval_subset_num_batches',
    'model', 'optimizer', 'scheduler', 'train_loader', 'eval_loaders', 'save_folder', 'save_interval',
    'save_num_checkpoints_to_keep', 'save_overwrite', 'autoresume', 'load_path', 'load_weights_only',
    'progress_bar', 'log_to_console', 'console_log_interval', 'callbacks', 'precision', 'dist_timeout',
    'results_path',
}
MODEL_KEYS = {'name', 'd_model', 'n_layers', 'n_heads', 'mlp_ratio', 'dropout'}
OPTIMIZER_KEYS = {'name', 'lr', 'betas', 'eps', 'weight_decay'}
SCHEDULER_KEYS = {'name', 't_warmup', 'alpha_f'}
CALLBACK_KEYS = {'sample_order', 'eval_history', 'cluster_loss', 'speed_monitor', 'lr_monitor'}


def _set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c`, creating missing mappings; a number indexes a list (`eval_loaders.0.label=x`)."""
    keys = dotted.split('.')
    node: Any = cfg
    for depth, key in enumerate(keys):
        where = '.'.join(keys[:depth])
        if isinstance(node, list):
            if not (key.isdigit() and int(key) < len(node)):
                entries = f'entries 0..{len(node) - 1}' if node else 'no entries (set the whole list instead)'
                raise ValueError(f'override {dotted!r}: {where} is a list with {entries}, not {key!r}')
            key = int(key)
        elif not isinstance(node, dict):
            raise ValueError(f'override {dotted!r}: {where} is {node!r}, not a mapping or a list')
        if depth == len(keys) - 1:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


def load_config(path: str, overrides: list[str]) -> dict:
    """YAML (safe_load) plus `a.b=value` overrides (values parsed as YAML), checked for typos."""
    try:
        with open(path, encoding='utf-8') as handle:
            cfg = yaml.safe_load(handle) or {}
    except OSError as err:
        raise ValueError(f'{path}: cannot read config ({err.strerror})') from err
    except yaml.YAMLError as err:
        raise ValueError(f'{path}: invalid YAML ({err})') from err
    for item in overrides:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'override {item!r}: expected key=value, e.g. max_duration=20ba')
        try:
            _set_dotted(cfg, key, yaml.safe_load(value))
        except yaml.YAMLError as err:
            raise ValueError(f'override {item!r}: invalid YAML value ({err})') from err
    check_keys(path, cfg, TOP_KEYS)
    for section, allowed in (('model', MODEL_KEYS), ('optimizer', OPTIMIZER_KEYS),
                             ('scheduler', SCHEDULER_KEYS), ('callbacks', CALLBACK_KEYS)):
        if section in cfg:
            check_keys(f'{path}: {section}', cfg[section], allowed)
    for key in ('max_seq_len', 'global_train_batch_size', 'max_duration', 'model', 'train_loader'):
        if key not in cfg:
            raise ValueError(f'{path}: missing required key {key!r}')
    return cfg


def build_model(cfg: dict, tokenizer, max_seq_len: int):
    from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
    from composer.models import HuggingFaceModel
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    name = cfg.get('name', 'gpt2')
    d_model, n_layers, n_heads = int(cfg.get('d_model', 128)), int(cfg.get('n_layers', 2)), int(cfg.get('n_heads', 4))
    dropout = float(cfg.get('dropout', 0.0))
    vocab = len(tokenizer)
    if name == 'gpt2':
        config = GPT2Config(vocab_size=vocab, n_positions=max_seq_len, n_embd=d_model, n_layer=n_layers,
                            n_head=n_heads, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    elif name == 'llama':
        config = LlamaConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers,
                             num_attention_heads=n_heads, intermediate_size=int(cfg.get('mlp_ratio', 4) * d_model),
                             max_position_embeddings=max_seq_len, attention_dropout=dropout,
                             bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                             tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f'model.name {name!r}: use gpt2 or llama')
    # No train metrics: the loss is logged anyway, and a second pass over the logits costs ~10%.
    return HuggingFaceModel(model, tokenizer=tokenizer, use_logits=True, metrics=[],
                            eval_metrics=[LanguageCrossEntropy(), LanguagePerplexity()], shift_labels=True)


def build_optimizer(cfg: dict, model):
    from composer.optim import DecoupledAdamW
    name = cfg.get('name', 'decoupled_adamw')
    if name != 'decoupled_adamw':
        raise ValueError(f'optimizer.name {name!r}: use decoupled_adamw')
    return DecoupledAdamW(model.parameters(), lr=float(cfg.get('lr', 1e-3)),
                          betas=tuple(cfg.get('betas', (0.9, 0.95))), eps=float(cfg.get('eps', 1e-8)),
                          weight_decay=float(cfg.get('weight_decay', 0.0)))


def build_scheduler(cfg: dict):
    from composer.optim import (
        ConstantWithWarmupScheduler,
        CosineAnnealingWithWarmupScheduler,
        LinearWithWarmupScheduler,
    )
    kinds = {'cosine_with_warmup': CosineAnnealingWithWarmupScheduler,
             'linear_decay_with_warmup': LinearWithWarmupScheduler,
             'constant_with_warmup': ConstantWithWarmupScheduler}
    name = cfg.get('name', 'cosine_with_warmup')
    if name not in kinds:
        raise ValueError(f'scheduler.name {name!r}: use one of {sorted(kinds)}')
    options = {'t_warmup': cfg.get('t_warmup', '0ba')}
    if name != 'constant_with_warmup':
        options['alpha_f'] = float(cfg.get('alpha_f', 0.1))
    return kinds[name](**options)


def build_callbacks(cfg: dict) -> list:
    from composer.callbacks import LRMonitor, SpeedMonitor

    from cis_stream.training.callbacks import ClusterLossLogger, EvalHistoryLogger, SampleOrderLogger
    callbacks = []
    if 'cluster_loss' in cfg:
        callbacks.append(ClusterLossLogger(**cfg['cluster_loss']))
    if 'sample_order' in cfg:
        callbacks.append(SampleOrderLogger(**cfg['sample_order']))
    if 'eval_history' in cfg:
        callbacks.append(EvalHistoryLogger(**cfg['eval_history']))
    if 'speed_monitor' in cfg:
        callbacks.append(SpeedMonitor(**(cfg['speed_monitor'] or {})))
    if 'lr_monitor' in cfg:
        callbacks.append(LRMonitor())
    return callbacks


def eval_schedule(interval: Any) -> Any:
    """Composer's eval_interval; a list of batch counts evaluates after exactly those batches (and at
    the end), so a curve can be dense early, where it bends, and sparse later."""
    if not isinstance(interval, list):
        return interval
    if not interval or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in interval):
        raise ValueError(f'eval_interval {interval}: a list must hold positive batch counts, e.g. [50, 100, 200]')
    from composer.core import Event
    batches = set(interval)

    def due(state, event) -> bool:
        return event == Event.BATCH_END and int(state.timestamp.batch.value) in batches
    return due


def fit_microbatch(requested: Any, device_batch: int) -> Any:
    """`device_train_microbatch_size` where it divides the device batch; else the largest size that
    does and is not above it (Composer would otherwise warn at every step and run uneven microbatches).
    'auto' and other non-integers pass through to Composer."""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1 or device_batch % requested == 0:
        return requested
    return max(size for size in range(1, min(requested, device_batch) + 1) if device_batch % size == 0)


def train(cfg: dict) -> dict:
    """Build everything from `cfg`, fit, and return the final eval metrics per loader."""
    from composer import Evaluator, Trainer
    from composer.utils import dist, format_name_with_dist, get_device, reproducibility

    from cis_stream.format.store import open_index
    from cis_stream.training.adaptive import AdaptiveMixture
    from cis_stream.training.loaders import build_cis_dataloader, build_text_files_dataloader
    from cis_stream.training.tokenizer import hf_tokenizer

    device = get_device(None)
    dist.initialize_dist(device, timeout=float(cfg.get('dist_timeout', 300)))
    world = dist.get_world_size()
    global_batch = int(cfg['global_train_batch_size'])
    if global_batch % world:
        raise ValueError(f'global_train_batch_size {global_batch} is not divisible by {world} processes')
    device_batch = global_batch // world
    requested = cfg.get('device_train_microbatch_size', 'auto' if device.name == 'gpu' else device_batch)
    microbatch = fit_microbatch(requested, device_batch)
    if microbatch != requested and dist.get_global_rank() == 0:
        print(f'train.py: device_train_microbatch_size {requested} does not divide the device batch of '
              f'{device_batch} sequences (global_train_batch_size {global_batch} / {world} processes): '
              f'using microbatches of {microbatch}', file=sys.stderr, flush=True)
    max_seq_len = int(cfg['max_seq_len'])
    loader_cfg = dict(cfg['train_loader'])
    dataset_cfg = dict(loader_cfg.get('dataset') or {})
    dataset_cfg.setdefault('max_seq_len', max_seq_len)
    if {'sample_order', 'cluster_loss'} & set(cfg.get('callbacks') or {}):
        dataset_cfg['sample_ids'] = True  # the order log and the cluster losses read them from each batch
    loader_cfg['dataset'] = dataset_cfg
    if 'index' not in dataset_cfg:
        raise ValueError('train_loader.dataset.index is required')
    adaptive = any(isinstance(p, dict) and p.get('adapt') for p in dataset_cfg.get('schedule') or [])
    if adaptive and not dataset_cfg.get('adapt_dir'):
        if not cfg.get('save_folder'):
            raise ValueError('the schedule has an adaptive phase: set save_folder (its measured proportions go to '
                             'save_folder/mixture) or train_loader.dataset.adapt_dir')
        dataset_cfg['adapt_dir'] = os.path.join(format_name_with_dist(cfg['save_folder'], cfg.get('run_name')),
                                                'mixture')
    tokenizer = hf_tokenizer(open_index(dataset_cfg['index'], dataset_cfg.get('local')))
    train_loader = build_cis_dataloader(loader_cfg, tokenizer, device_batch)
    eval_batch = int(cfg.get('device_eval_batch_size', device_batch))
    evaluators = []
    for eval_cfg in cfg.get('eval_loaders') or []:
        eval_cfg = dict(eval_cfg)
        label = eval_cfg.get('label')
        if not label:
            raise ValueError('each eval_loaders entry needs a label')
        eval_cfg.setdefault('dataset', {}).setdefault('max_seq_len', max_seq_len)
        spec = build_text_files_dataloader(eval_cfg, tokenizer, eval_batch)
        evaluators.append(Evaluator(label=label, dataloader=spec,
                                    metric_names=['LanguageCrossEntropy', 'LanguagePerplexity']))
    # The model's initial weights come from `seed` (as the data order does): without this they came
    # from torch's per-process random seed, so every run started from another model.
    reproducibility.seed_all(int(cfg.get('seed', 17)))
    model = build_model(cfg['model'], tokenizer, max_seq_len)
    optimizer = build_optimizer(cfg.get('optimizer') or {}, model)
    trainer = Trainer(
        run_name=cfg.get('run_name'),
        seed=int(cfg.get('seed', 17)),
        model=model,
        train_dataloader=train_loader,
        eval_dataloader=evaluators or None,
        eval_interval=eval_schedule(cfg.get('eval_interval', 1)),
        eval_subset_num_batches=int(cfg.get('eval_subset_num_batches', -1)),
        optimizers=optimizer,
        schedulers=build_scheduler(cfg.get('scheduler') or {}),
        max_duration=cfg['max_duration'],
        device=device,
        device_train_microbatch_size=microbatch,
        precision=cfg.get('precision'),
        save_folder=cfg.get('save_folder'),
        save_interval=cfg.get('save_interval', '1ep'),
        save_num_checkpoints_to_keep=int(cfg.get('save_num_checkpoints_to_keep', -1)),
        save_overwrite=bool(cfg.get('save_overwrite', False)),
        autoresume=bool(cfg.get('autoresume', False)),
        load_path=cfg.get('load_path'),
        load_weights_only=bool(cfg.get('load_weights_only', False)),
        callbacks=build_callbacks(cfg.get('callbacks') or {}) + ([AdaptiveMixture()] if adaptive else []),
        progress_bar=bool(cfg.get('progress_bar', False)),
        log_to_console=bool(cfg.get('log_to_console', True)),
        console_log_interval=cfg.get('console_log_interval', '10ba'),
        dist_timeout=float(cfg.get('dist_timeout', 300)),
    )
    if cfg.get('eval_first') and evaluators:
        trainer.eval()
    trainer.fit()
    results = {label: {name: float(metric.compute()) for name, metric in metrics.items()}
               for label, metrics in trainer.state.eval_metrics.items()}
    if cfg.get('results_path') and dist.get_global_rank() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(cfg['results_path'])), exist_ok=True)
        with open(cfg['results_path'], 'w', encoding='utf-8') as handle:
            json.dump(results, handle, indent=1, sort_keys=True)
    trainer.close()
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        print('usage: composer train.py CONFIG.yaml [key=value ...]   (or python train.py ...)')
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
        results = train(cfg)
    except ValueError as err:
        print(f'train.py: error: {err}', file=sys.stderr)
        return 2
    for label, metrics in results.items():
        print(f'final {label}: ' + ', '.join(f'{k}={v:.4f}' for k, v in sorted(metrics.items())))
    return 0
