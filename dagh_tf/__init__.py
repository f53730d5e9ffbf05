"""DAGH (Deep Discrete Attention Guided Hashing, ICMR 2020) on DDAH's foundation."""
