"""What reads finished run directories: the report, attribution of a change, two runs compared, the budget
gate and baselines."""
