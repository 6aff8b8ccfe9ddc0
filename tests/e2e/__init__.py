"""End to end: real indexes of real text, built and read through the API, the CLI and the launchers."""
