"""Text in: files -> documents (readers), documents -> token windows (tokens), eval overlap dropped
(decontam), exact duplicates counted (duplicates). Shared by the indexer, `add` and `weights`."""
