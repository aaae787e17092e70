"""What every layer may use: the process group, the device and precision, and checkpoint files
(atomic writes, loading that runs no code, RNG states), and gradient caching (a training step's
chunked replay: it knows autograd, RNG, autocast and DDP, not models or losses)."""
