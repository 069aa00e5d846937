"""Reference stand-in for the ADE engine.

Only the Python standard library is used, so the package installs and runs
on a machine without network access.  See README.md for its scope.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
