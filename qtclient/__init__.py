"""The chatd desktop client: a PyQt6 application driven by a Twisted Qt reactor.

Layers, from the wire up: :mod:`qtclient.protocol` (JSON lines, no Qt),
:mod:`qtclient.model` (a ``QObject`` that turns server lines into typed
signals) and :mod:`qtclient.widgets` (which only talk to the model).
:mod:`qtclient.app` is the one module that installs the reactor.
"""
