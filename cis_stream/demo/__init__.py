"""`make demo` (`python -m cis_stream.demo`) and the real, offline text it runs on (corpora)."""
