"""Command families of the ``bench`` CLI, one module each.

Each module defines ``register(sub)``, which adds its parsers to the top-level sub-parser set
and binds each to a ``cmd_*`` function (``p.set_defaults(func=...)``) that returns an exit status.
Keep imports of heavy libraries inside the command functions so ``bench --help`` stays fast.
"""
