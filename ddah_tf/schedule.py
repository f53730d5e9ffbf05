"""The original's optimisation settings (train.py, utils.py) and its learning-rate schedule."""

from __future__ import annotations

EPOCHS = 1000                  # train.py EPOCHS
BATCH_SIZE = 256               # utils.py get_loader: DataLoader(batch_size=256, shuffle=True)
SHUFFLE = True                 # reshuffled every epoch; the last, partial batch is kept
LEARNING_RATE = 1e-3           # train.py LR, both optimisers
HALVE_EVERY_EPOCHS = 100       # adjust_learning_rate: LR * 0.5 ** (epoch // 100)
ADAM_BETAS = (0.9, 0.999)      # torch.optim.Adam defaults
ADAM_EPSILON = 1e-8            # torch.optim.Adam default (Keras' is 1e-7)
HASH_BITS = 48                 # train.py HASH_BITS = [48]
NUM_CLASSES_FACESCRUB = 530    # utils.py C


def learning_rate(epoch: int, base: float = LEARNING_RATE,
                  halve_every: int = HALVE_EVERY_EPOCHS) -> float:
    """The rate of 0-based ``epoch``: base * 0.5 ** (epoch // halve_every).

    The original sets it on both optimisers at the start of every epoch (its docstring
    says "decayed by 10 every 30 epochs", copied from the ImageNet example; the code halves
    every 100). Epochs 0-99: 1e-3, 100-199: 5e-4, ..., 900-999: about 1.95e-6.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if halve_every < 1:
        raise ValueError(f"halve_every must be >= 1, got {halve_every}")
    return base * 0.5 ** (epoch // halve_every)
