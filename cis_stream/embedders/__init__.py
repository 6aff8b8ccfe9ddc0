"""Text embedders behind one small interface, rebuilt exactly from what an index stores.

An embedder turns windows (their texts, or with `reads_tokens` their token ids) into L2-normalised
float32 vectors. It may need fitting on a sample
first (`lsi`); its config and fitted state are stored in the index so the specialist sample is
embedded by the very same function at weights time.

Plugging in your own: write a class with the methods of `Embedder` (a `name` attribute, `fit`,
`embed`, `config`, `save`, and a `load(config, state_dir)` classmethod) and pass its import path
`package.module:ClassName` as the embedder name (`--embedder package.module:ClassName`).
"""

from __future__ import annotations

import importlib

from cis_stream.embedders.base import Embedder
from cis_stream.embedders.lsi import LSIEmbedder
from cis_stream.embedders.minilm import MiniLMEmbedder

EMBEDDER_METHODS = ('fit', 'embed', 'config', 'save', 'load')
BUILTIN = {MiniLMEmbedder.name: MiniLMEmbedder, LSIEmbedder.name: LSIEmbedder}


def embedder_class(name: str) -> type:
    """A built-in name (`minilm`, `lsi`) or an import path `package.module:ClassName`."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ':' not in name:
        raise ValueError(f'unknown embedder {name!r}: use {", ".join(BUILTIN)} or package.module:ClassName')
    module_name, _, class_name = name.partition(':')
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f'embedder {name!r} cannot be imported: {err}') from err
    # The name may come from a downloaded manifest: call nothing that is not an embedder class.
    if not (isinstance(cls, type) and all(callable(getattr(cls, m, None)) for m in EMBEDDER_METHODS)):
        raise ValueError(f'embedder {name!r} is not an embedder class (one with {", ".join(EMBEDDER_METHODS)})')
    return cls


def reads_tokens(embedder) -> bool:
    """Whether `embedder` takes windows as token ids (Embedder.reads_tokens); a plug-in class that does
    not say takes texts."""
    return bool(getattr(embedder, 'reads_tokens', False))


def make_embedder(name: str, **config) -> Embedder:
    return embedder_class(name)(**config)


def load_embedder(name: str, config: dict, state_dir: str) -> Embedder:
    return embedder_class(name).load(config, state_dir)


# Windows handed to the embedder in one call (indexing and placing new text alike).
EMBED_BATCH = 1024
