"""One run: build it from its config, execute it, persist what it measured."""
