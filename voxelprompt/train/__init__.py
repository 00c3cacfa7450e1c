"""Training in stages: the loop, its data and validations, and its checkpoints."""
