"""Training one run: the loop, its checkpoints, data parallelism, and loading a finished run."""
