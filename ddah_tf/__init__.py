"""DDAH: Discriminative Deep Attention-aware Hashing (PRICAI 2019), ported from the authors'
PyTorch code (``deephashface/DDAH``). See ddah_tf/README.md."""
