"""One module per ``snapcat`` subcommand; each exposes ``register(subparsers)``."""
