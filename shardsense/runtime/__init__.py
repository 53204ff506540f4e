"""Training-side runtime (implemented in ``producers``; needs the ``train`` extra)."""
