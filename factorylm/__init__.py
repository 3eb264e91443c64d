"""FactoryLM shared kernel: settings, domain models, database access, PLC drivers and the CLI."""

__version__ = "0.1.0"
