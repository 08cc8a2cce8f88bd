"""A compress run: the stages in recipe order, the run directory as a transaction, the manifest."""
