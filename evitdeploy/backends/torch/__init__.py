"""PyTorch eager: the reference every artifact is compared against; it exports nothing."""
