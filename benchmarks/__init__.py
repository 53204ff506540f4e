"""Tools that measure and show ShardSense: benchmarks, the demo, screenshots, console fixtures.

A composition root like ``infra``: it may import every service, and no
service imports it (``make lint`` checks both with import-linter). Each tool
is a ``shardsense <name>`` command (``infra.cli.TOOLS``) or ``python -m``.
"""
