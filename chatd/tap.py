"""twistd integration: `twistd -n chatd [options]`, derived from chatd/options.py."""

import atexit
import os
import sys

from twisted.application import service
from twisted.python import usage

from chatd.options import OPTIONS, OptionError, config_from
from chatd.server import ChatServer


def _repeatable(option):
    def append(self, value):
        self[option.name].append(value)
    append.__doc__ = option.describe()
    return append


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the chatd chat server (JSON lines over TCP or TLS)."
    optParameters = [
        [option.name, option.short, None if option.default is None else str(option.default),
         option.describe()]
        for option in OPTIONS if option.type not in (list, bool)]
    optFlags = [[option.name, option.short, option.describe()]
                for option in OPTIONS if option.type is bool]

    def __init__(self):
        super().__init__()
        for option in OPTIONS:
            if option.type is list:
                self[option.name] = []

    def postOptions(self):
        self.config()

    def config(self):
        """The ServerConfig these options give; UsageError (one sentence) if one is wrong."""
        try:
            return config_from(self)
        except OptionError as e:
            raise usage.UsageError(str(e)) from None


for _option in OPTIONS:
    if _option.type is list:
        setattr(Options, "opt_" + _option.name.replace("-", "_"), _repeatable(_option))


def makeService(options):
    top = service.MultiService()
    server = ChatServer(options.config())
    server.ready.addErrback(_exit_when_start_fails, server.reactor)
    server.setServiceParent(top)
    return top


def _exit_when_start_fails(failure, reactor):
    """One line on stderr, then stop; the process exits 1 once twistd has cleaned up.

    twistd has no exit status of its own (it exits 0 whenever the reactor
    stops), so an exit handler sets ours after its pidfile and log are closed.
    """
    sys.__stderr__.write(f"chatd: could not start: {failure.getErrorMessage()}\n")
    sys.__stderr__.flush()
    atexit.register(_exit_failed)
    reactor.callWhenRunning(reactor.stop)


def _exit_failed():
    sys.__stdout__.flush()
    sys.__stderr__.flush()
    os._exit(1)
