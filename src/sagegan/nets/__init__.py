"""Neural networks: plain ``nn.Module``s with no I/O and no training logic."""
