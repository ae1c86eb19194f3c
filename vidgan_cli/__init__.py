"""vidgan: train video GANs from the command line and sample them to MP4."""

__version__ = "0.1.0"
