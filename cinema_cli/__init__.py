"""cinema: a command-line filmmaking toolkit (story -> keyframes -> shots -> film)."""

__version__ = "0.1.0"
