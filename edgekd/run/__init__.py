"""A compress run: the recipe settled against its targets, the stages in recipe order, the manifest."""
