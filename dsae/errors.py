"""A user's mistakes, told apart from the framework's own faults.

A bad setting, a missing checkpoint or a corrupt dataset raises a :class:`UserError` whose
message names the problem and the fix; the scripts print that message as one line and exit
with status 2 (:func:`report_user_errors`). Any other exception is a fault in the code and
keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from envs.scene import SceneError


class UserError(Exception):
    """Something the user asked for cannot be done as asked; the message says what to change."""


class ConfigError(UserError, ValueError):
    """A setting (a config key, a command-line override, an argument) has an invalid value."""


USER_ERRORS = (UserError, SceneError)  # envs does not depend on dsae: its scene errors count too
EXIT_USER_ERROR = 2


def report_user_errors(task: Callable) -> Callable:
    """Decorate a script's Hydra task (beneath ``@hydra.main``): a user error becomes
    ``error: <message>`` on stderr and exit status 2, instead of Hydra's report and a stack."""

    @functools.wraps(task)
    def guarded(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except USER_ERRORS as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return guarded
