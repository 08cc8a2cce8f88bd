"""The training wing: the loop over loaders (device, AMP, DDP), evaluation, the objective, teacher outputs."""
