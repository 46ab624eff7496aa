"""Model and training: the PyTorch MemAE network, the training loop, scaling, streamed fits."""
