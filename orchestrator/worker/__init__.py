"""The Ray actors that train: one DeepSpeed engine per rank, their gang, and the gradient probe."""
