"""The one exception type for mistakes a user can make (bad config, missing data, ...).

CLIs catch it and print its message on one line, so messages must say what is wrong and
how to fix it.
"""

import sys
from collections.abc import Callable


class GptkitError(Exception):
    """A problem the user can fix; the message tells them how."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a CLI entry point: user errors become one line on stderr and exit code 1."""
    try:
        main()
    except GptkitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        # gptkit.runguard.Interrupted carries the signal and says what was saved
        print(str(e) or "interrupted", file=sys.stderr)
        sys.exit(128 + getattr(e, "signum", 2))
