"""The published index on disk, read and write, in one place.

layout (every name), files (atomic writes, hashes), leaves (MDS packing, leaf index.json, the bundle),
manifest (node records, fingerprint), publish (staging, lock, rename into place), reader (CISIndex),
validate (the shapes of the JSON files), verify (shard integrity), samples (reading one sample).
The builder (index/) and the readers (dataset, weights, report) use these, never each other."""
