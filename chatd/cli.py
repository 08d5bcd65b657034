"""The `chatd` command: `chatd run [options]` is `twistd -n chatd [options]`.

twistd finds `twistd chatd` through the dropin twisted/plugins/chatd_plugin.py,
which must sit in a directory on sys.path: a regular install puts it there, the
default editable install (`pip install -e .`) does not. `chatd run` hands
twistd this service maker directly, so it works with every kind of install.
"""

import sys

from twisted.application.service import ServiceMaker

service_maker = ServiceMaker("chatd", "chatd.tap", "A chat server speaking JSON lines.", "chatd")

USAGE = """\
Usage: chatd run [options]    run the chat server in the foreground (twistd -n chatd)
       chatd run --help       list the server's options, with their defaults
       chatd --help           this text
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in ([], ["-h"], ["--help"]):
        (sys.stdout if argv else sys.stderr).write(USAGE)
        return 0 if argv else 2
    if argv[0] != "run":
        sys.stderr.write(f"chatd: unknown command {argv[0]!r}.\n{USAGE}")
        return 2
    from twisted.python import usage
    from chatd.tap import Options
    options = Options()
    options.synopsis = "Usage: chatd run [options]"
    try:
        options.parseOptions(argv[1:])      # --help prints the options and exits here
    except usage.UsageError as e:
        sys.stderr.write(f"chatd run: {e}\n(chatd run --help lists the options.)\n")
        return 2
    _run_twistd(["-n", "chatd", *argv[1:]])
    return 0


def _run_twistd(args):
    from twisted.application import app
    from twisted.scripts.twistd import ServerOptions, runApp

    class ChatdServerOptions(ServerOptions):
        """twistd's own options, with chatd as its one subcommand (no plugin search)."""

        @property
        def subCommands(self):
            self.loadedPlugins = {service_maker.tapname: service_maker}
            yield (service_maker.tapname, None, service_maker.options,
                   service_maker.description)

    sys.argv = ["chatd run", *args]
    app.run(runApp, ChatdServerOptions)
