"""Training: the reference recipe's step, optimizer and schedule, checkpoints, dygraph scoring."""
