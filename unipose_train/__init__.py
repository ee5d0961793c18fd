"""Training package for UniPose: UniKPT data (unikpt/), evaluation (evaluation/), losses and trainer."""
