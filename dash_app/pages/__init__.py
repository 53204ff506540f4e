"""The console's pages; each module has ``layout(console)`` and ``register(app, console)``."""
