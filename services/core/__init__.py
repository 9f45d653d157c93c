"""The core layer: settings, Kafka and ClickHouse access, migrations, raw table rows, shipped defaults.

Everything above it (``streams``, the other ``services`` packages, the CLI) builds on it; it imports
nothing of the project but ``schemas``.
"""
