"""DFH-GANs (Wang, 2021): metric hash loss, quadratic quantization, distillation, GAN
augmentation."""
