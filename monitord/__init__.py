"""monitord: service monitoring and compliance for the Suzhou legal-person service portal."""

__version__ = "0.1.0"
