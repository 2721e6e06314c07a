"""The `membot` command's entry point: whatever goes wrong, one line on stderr and an exit code.

Only `io`, `os`, `signal` and `sys` are loaded before `main` runs, so a Ctrl-C while the rest
loads (about half a second: the openai client, numpy) lands inside its guard; the commands are
in adapters/commands.py. Ctrl-C is exit code 130 and a closed stdout (`membot chat | head -c1`)
exit code 1, each with one line and no traceback. The text streams never fail on bad bytes:
undecodable input becomes U+FFFD, output the terminal cannot encode is replaced.
"""

from __future__ import annotations

import io
import os
import signal
import sys

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
BROKEN_PIPE = 1


def main(argv: list[str] | None = None) -> int:
    _tolerate_bad_text()
    try:
        try:
            from adapters.commands import run

            return run(argv)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # a closed pipe shows here at the latest (`--help` too), inside the guard
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C while shutting down just ends it
        _say("membot: interrupted.")
        if argv is None:  # the real command, not a caller in-process
            # Ctrl-C can land mid-import, and the interpreter's teardown of a half-imported module
            # then sometimes ends the process by SIGINT (-2) instead of our 130: leave at once.
            _flush()
            os._exit(INTERRUPTED)
        return INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        _say("membot: the output was closed (broken pipe); stopping.")
        return BROKEN_PIPE


def _tolerate_bad_text() -> None:
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    if isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr.reconfigure(errors="backslashreplace")


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no usable stdout at all: nothing left to protect
        return


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed: nothing left to flush
            continue


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr is closed too: the exit code is all that is left
        return


if __name__ == "__main__":
    sys.exit(main())
