"""The Qt reactor (qreactor), installed by every entry point that runs Twisted inside
Qt (the app, the test suite, the screenshot script), with one fix.

qreactor's socket notifiers are owned by Python. A connection that closes inside its
own notifier's signal (doRead, then connectionLost, then removeReader) drops the last
reference to the notifier as the slot returns, so sip deletes the QSocketNotifier
there and then, while Qt is still emitting its signal, in spite of the deleteLater
that was meant to wait for the event loop. Qt then works on freed memory: seen as a
segmentation fault, and as a hang in QObject::deleteLater on a mutex of a deleted
object (the test suite stalled on it twice). Handing both objects to C++ before the
deleteLater makes the event loop delete them, after the signal.
"""

import os


def install():
    """Install the fixed qreactor as Twisted's reactor (a QApplication must exist)."""
    os.environ.setdefault("QT_API", "pyqt6")  # qreactor reaches Qt through qtpy
    import qreactor
    from PyQt6 import sip

    shutdown = qreactor.TwistedSocketNotifier.shutdown

    def shutdown_after_the_signal(notifier):
        sip.transferto(notifier.notifier, None)
        sip.transferto(notifier, None)
        shutdown(notifier)

    qreactor.TwistedSocketNotifier.shutdown = shutdown_after_the_signal
    qreactor.install()
