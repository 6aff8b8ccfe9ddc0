"""Building an index and growing it: options, the per-part stages (parts), the job that shares parts
between ranks and publishes (job), `cis-stream add` (add), the window spool and the process group.

`python -m cis_stream.index` (torchrun, composer -n N) runs `cis-stream index`. Kept light: importing
`cis_stream.index.options` must not pull in torch, faiss or Streaming."""
