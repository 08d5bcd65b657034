"""--reuse-port: several nodes of a cluster on one host listen on one port.

Twisted's tcp: and ssl: endpoints listen through reactor.listenTCP/listenSSL,
which cannot set SO_REUSEPORT. ReusingPort stands in for the reactor while the
--listen endpoint listens: it makes the socket itself, with SO_REUSEPORT set
before the bind, and hands it to the real reactor (adoptStreamPort). The
kernel (Linux) then spreads new connections over every process listening on
that port, by a hash of the connection's addresses, and stops sending them to
a process once it is gone. Only processes of the same user can share a port.
"""

import socket

from twisted.internet import error
from twisted.protocols.tls import TLSMemoryBIOFactory


class ReusingPort:
    """The reactor, as an endpoint sees it, with listenTCP/listenSSL sharing the port."""

    def __init__(self, reactor):
        self._reactor = reactor

    def __getattr__(self, name):
        if name.startswith("listen"):   # unix:, systemd:, ...: there is no port to share
            raise error.CannotListenError(
                None, None, "--reuse-port works with tcp: and ssl: endpoints only")
        return getattr(self._reactor, name)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's own
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, port))
            sock.listen(backlog)
            sock.setblocking(False)
            return self._reactor.adoptStreamPort(sock.fileno(), family, factory)
        except OSError as e:
            raise error.CannotListenError(interface, port, e) from e
        finally:
            sock.close()    # the reactor's port holds its own copy of the descriptor

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        """TLS over the shared TCP port, as the reactor's own listenSSL does it."""
        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory),
                              backlog, interface)
