"""Entry point: the one module that installs Twisted's Qt reactor.

The reactor must be installed after the ``QApplication`` exists and before
anything imports ``twisted.internet.reactor``, so the rest of the client is
imported only inside :func:`main`.
"""

import argparse
import gc
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="chatd-client", description="The chatd desktop client.")
    parser.add_argument("--server", help="server address to fill in, e.g. localhost:7878 "
                        "or tls://chat.example.org:7879 for an encrypted connection; several "
                        "separated by commas (a:7878,b:7878, the nodes of one cluster) are "
                        "tried in turn, and the next one takes over when a connection is lost")
    parser.add_argument("--ca-file", metavar="PEM",
                        help="for TLS, trust only this certificate (e.g. a self-signed "
                        "server's) instead of the system's certificate authorities")
    args = parser.parse_args(argv)
    if args.ca_file and not os.path.isfile(args.ca_file):
        parser.error(f"--ca-file: no such file: {args.ca_file}")

    from PyQt6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    app.setOrganizationName("chatd")
    app.setApplicationName("chatd-client")
    from .qtreactor import install
    install()
    from twisted.internet import reactor

    from .model import ChatModel
    from .widgets.window import ChatWindow

    app.setStyle("Fusion")
    model = ChatModel(reactor, ca_file=args.ca_file)
    window = ChatWindow(model)
    if args.server:
        window.login_page.set_server(args.server)
    window.show()
    app.lastWindowClosed.connect(reactor.stop)
    reactor.run()
    # Free the widgets now, while Python still runs: left in reference cycles until exit,
    # they would be destroyed by PyQt's exit clean-up, which can crash doing so.
    del window, model
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
