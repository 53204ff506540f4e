"""dash_app package."""
