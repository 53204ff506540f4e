"""Public import path: ``from shardsense.runtime.engine import ShardSenseRuntime``.

The one place the core reaches into a service (``producers``): the runtime
façade users import. import-linter's contracts (pyproject.toml) allow exactly
this import.
"""

from producers.engine import LoaderOptions, ShardSenseRuntime

__all__ = ["LoaderOptions", "ShardSenseRuntime"]
