"""Exit codes of the ``smithers`` command (documented in the README)."""

from __future__ import annotations

OK = 0  # the run succeeded / the command did what was asked
RUN_FAILED = 1  # the run failed
BAD_INPUT = 2  # usage error or invalid input; nothing was written
WAITING_APPROVAL = 3  # the run is waiting for a person (approval or diff review)
CANCELLED = 4  # the run was cancelled
UNAVAILABLE = 5  # store or broker unreachable, or no `smithers up` running
NOT_FOUND = 6  # no such run, approval or workflow
CONFLICT = 7  # the request contradicts the current state
TIMED_OUT = 8  # --timeout passed before the run ended
NO_HOLDER = 9  # launched, but no live scheduler or worker holds the workflow's revision
DENIED = 10  # refused: the token lacks the scope, or the caller is not the approval's owner (403)
UNAUTHENTICATED = 11  # no token, or one expired, revoked or not accepted (401): `smithers login`
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
BROKEN_PIPE = 141  # stdout closed early, as by `| head` (128 + SIGPIPE, what a shell reports)
