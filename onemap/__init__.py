"""OneMap: settings and the command line shared by every package."""

__version__ = "0.1.0"
