"""Messages the user typed that the server has not acknowledged yet, kept on disk.

Qt-free. One JSON file per server and user, rewritten (atomically) on every change,
so nothing typed is lost when the connection drops or the client quits. Each
message carries the nonce it is (re)sent with: the server stores a (sender, nonce)
once, so sending again after a doubt never makes a second copy.
"""

import dataclasses
import hashlib
import json
import os
import uuid
from datetime import datetime, timezone

from .entities import Conversation, PendingMessage, parse_time


def new_nonce():
    return uuid.uuid4().hex


class Outbox:
    """The unsent messages of one user on one server, in the order typed."""

    def __init__(self, path=None):
        self.path = path  # None: kept in memory only
        self._messages = {}  # nonce → PendingMessage, in the order typed

    @classmethod
    def for_account(cls, directory, address, user):
        """The outbox of ``user`` at ``address``, read from ``directory`` if it was saved there."""
        key = hashlib.sha256(f"{address}\n{user}".encode("utf-8")).hexdigest()[:32]
        outbox = cls(os.path.join(directory, f"outbox-{key}.json"))
        try:
            with open(outbox.path, encoding="utf-8") as file:
                saved = json.load(file)
            for entry in saved["messages"]:
                message = PendingMessage(
                    entry["nonce"], Conversation(entry["kind"], entry["name"]), entry["text"],
                    parse_time(entry["typed"]), entry.get("error"), sent=True)
                outbox._messages[message.nonce] = message
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError):
            # Not ours to read: start empty, but keep the file aside instead of overwriting it.
            outbox._messages.clear()
            os.replace(outbox.path, f"{outbox.path}.unreadable")
        return outbox

    def __len__(self):
        return len(self._messages)

    def __contains__(self, nonce):
        return nonce in self._messages

    def get(self, nonce):
        return self._messages.get(nonce)

    def all(self):
        return list(self._messages.values())

    def of(self, conversation):
        return [m for m in self._messages.values() if m.conversation == conversation]

    def to_send(self):
        """What to (re)send, in the order typed: everything the server has not refused."""
        return [m for m in self._messages.values() if m.error is None]

    def add(self, conversation, text):
        message = PendingMessage(new_nonce(), conversation, text, datetime.now(timezone.utc))
        self._messages[message.nonce] = message
        self._save()
        return message

    def replace(self, message):
        """Store a changed copy (refused, or cleared for a retry) of a message already here."""
        if message.nonce in self._messages:
            self._messages[message.nonce] = message
            self._save()

    def mark_sent(self, nonce):
        """It has gone out once: the next send is a resend. Not written to the file (no
        second fsync per message): whatever is read back from it counts as sent."""
        message = self._messages.get(nonce)
        if message is not None:
            self._messages[nonce] = dataclasses.replace(message, sent=True)

    def remove(self, nonce):
        """Take a message out (acknowledged or deleted); returns it, or None if it was not here."""
        message = self._messages.pop(nonce, None)
        if message is not None:
            self._save()
        return message

    def _save(self):
        if self.path is None:
            return
        entries = [{"nonce": m.nonce, "kind": m.conversation.kind, "name": m.conversation.name,
                    "text": m.text, "typed": m.typed.isoformat(), "error": m.error}
                   for m in self._messages.values()]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"messages": entries}, file, ensure_ascii=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
