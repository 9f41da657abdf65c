"""The ``ticker`` subcommands beyond ``serve``: each module adds its parser and runs it."""
