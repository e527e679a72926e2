"""One module per command: each wires the run machinery for one job, and nothing else."""
