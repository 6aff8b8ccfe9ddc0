"""cis_stream: clustered importance sampling (CRISP) for MosaicML Streaming and Composer.

The public names are imported lazily so that `cis-stream index` does not pay for torch.
"""

from importlib import import_module, metadata

_EXPORTS = {
    'build_index': 'cis_stream.index.job', 'IndexOptions': 'cis_stream.index.options',
    'add_to_index': 'cis_stream.index.add',
    'CISIndex': 'cis_stream.format.reader',
    'compute_weights': 'cis_stream.weights', 'write_weights': 'cis_stream.weights',
    'read_weights': 'cis_stream.weights', 'WeightOptions': 'cis_stream.weights',
    'ClusteredImportanceDataset': 'cis_stream.dataset',
    'build_cis_dataloader': 'cis_stream.training.loaders',
}
__all__ = sorted(_EXPORTS)
__version__ = metadata.version('cis_stream')  # pyproject.toml's, from the installed package's metadata


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f'module cis_stream has no attribute {name!r}')
