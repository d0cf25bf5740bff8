"""Data files shipped with the engine (the built-in default configuration)."""
