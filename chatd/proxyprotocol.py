"""--proxy-protocol: each client's own address, from the PROXY header HAProxy sends.

Behind HAProxy every connection comes from HAProxy's address, so the IP
dictionary, IP bans and the per-address limits would all see that one address.
With `send-proxy` (or `send-proxy-v2`) HAProxy starts each connection with a
PROXY header naming the client's address. Twisted parses it
(twisted.protocols.haproxy), but its wrapper starts the wrapped protocol at
once, before the header has arrived, and chatd reads the address (and refuses
a banned one) at that moment; HeaderFirst starts the chat protocol only once
the header is read. A connection that does not begin with a header within
HEADER_TIMEOUT is closed. Only HAProxy may reach such a port: anyone else could
claim any address.
"""

from twisted.internet.protocol import Protocol
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import directlyProvides, providedBy

HEADER_TIMEOUT = 10.0   # seconds HAProxy has to send the header (it sends it at once)


class HeaderFirst(HAProxyProtocolWrapper):
    """Twisted's PROXY wrapper, starting the wrapped protocol once the header is read.
    A header without addresses (HAProxy's own health checks: PROXY UNKNOWN / LOCAL)
    leaves the address of the connection itself."""

    started = False

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timeout = self.factory.clock.callLater(HEADER_TIMEOUT, transport.abortConnection)

    def dataReceived(self, data):
        if self.started:
            return self.wrappedProtocol.dataReceived(data)
        if self._parser is None:
            if data[:12] == V2Parser.PREFIX:
                self._parser = V2Parser()
            elif data[:5] == V1Parser.PROXYSTR:
                self._parser = V1Parser()
            else:
                return self._refuse()
        try:
            self._proxyInfo, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            return self._refuse()
        if self._proxyInfo is None:
            return None     # the rest of the header is still to come
        self._timeout.cancel()
        self.started = True
        self.wrappedProtocol.makeConnection(self)
        if remaining and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(remaining)

    def _refuse(self):
        self._timeout.cancel()
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if self.started:
            return super().connectionLost(reason)
        if self._timeout.active():
            self._timeout.cancel()
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None


class HeaderFirstFactory(HAProxyWrappingFactory):
    protocol = HeaderFirst

    def __init__(self, wrappedFactory, clock):
        super().__init__(wrappedFactory)
        self.clock = clock
