"""Recipe entry points behind the ``seerflex`` command (configs live in the top-level ``recipes/``)."""
