"""The pure core, tested directly: no index is built here, the whole tier runs in seconds."""
