"""dasim: data assimilation with a scikit-learn API."""

__version__ = "0.1.0.dev0"
