"""What every layer may use: the process group, the device and precision, and checkpoint files
(atomic writes, loading that runs no code, RNG states)."""
