"""swapcli: command-line face swapping for images, videos and folders."""

__version__ = "0.1.0"
