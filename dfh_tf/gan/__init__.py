"""The GAN side of DFH-GANs: a DAGAN-style generator that enlarges a training split.

Wang (2021) uses a GAN to edit the face attributes of the training images, keeping their
identity, so that identities with few images get more. The thesis publishes no code and
the data sets carry no attribute labels, so this package builds an image-conditioned,
label-free generator (DAGAN, Antoniou et al. 2017): see ``dfh_tf/gan/README.md``.

Entry points (absl flags; importing them defines flags, so library code lives elsewhere):

* ``python -m dfh_tf.gan.train``   trains G, D and C into a run folder (resumable);
* ``python -m dfh_tf.gan.augment`` writes an enlarged train split in the pickle layout.

Importing this package imports neither TensorFlow nor any flags.
"""
