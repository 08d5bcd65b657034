"""ChatProtocol: JSON lines in, dispatch on the action key, JSON lines out.

Like Twisted's irc.IRC.handleCommand: the action key names a `do_<action>`
method, which gets the action's value and the request's other fields as
keyword arguments; an unknown action gets an error reply. The actions, their
fields (types, defaults), who may use them and their flood cost are declared
in chatd/registry.py: missing, unexpected and mistyped fields are refused with
a sentence naming the field before the handler runs. The structured admin
actions declared there go to chatd.moderation.
"""

import json

from twisted.internet import defer
from twisted.internet.interfaces import INegotiated, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.accounts import Credentials
from chatd.addresses import address_group, plain_address
from chatd.auth import ChatError
from chatd.bus import encode
from chatd.deadlines import Deadlines
from chatd.limits import TOO_FAST, FloodGuard
from chatd.output import HELD, UNREAD, FlushQueue, Output
from chatd.moderation.commands import actor_of, check_access
from chatd.presence import ONLINE, OFFLINE
from chatd.registry import ACTIONS, ANYONE, LIST_MAX
from chatd.rules import fold
from chatd.store import MESSAGE_ID_MAX, ServerBusy, wire_time

log = Logger()

HISTORY_DEFAULT, HISTORY_MAX = 50, 200
REPLY_OVERHEAD = 512    # bytes of --max-reply kept for a reply's own keys (reply_to, ok, next)
UNAVAILABLE = "The server cannot reach its database right now; try again in a minute."
BUSY = "The server is busy storing messages; send that one again in a moment."
PIPELINED = {"channel_message", "private_message"}  # read on while these wait for a commit
CLOSE_TIMEOUT = 10.0    # seconds a closing connection may take to flush before it is aborted


def _is_unicode(request):
    """True if every string at the top of `request` (keys and values) encodes as UTF-8.

    Nested values need no check: no handler accepts a list or an object, and
    errors quote names with repr(), which escapes surrogates.
    """
    for text in list(request) + [v for v in request.values() if isinstance(v, str)]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def _stored(message):
    """The ok reply to a message: its id and time as stored (the original's, for a resend)."""
    return {"id": message.id, "time": wire_time(message.time)}


class DuplicateKey(ValueError):
    """A JSON object names one key twice (json.loads would silently keep the last)."""


def _refuse_duplicates(pairs):
    request = dict(pairs)
    if len(request) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateKey(key)
    return request


# Made once: json.loads given a hook builds a new JSONDecoder (and its scanner) per line.
_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates)


def _decode(line):
    """json.loads(line, object_pairs_hook=_refuse_duplicates), with the one decoder."""
    return _DECODER.decode(line.decode(json.detect_encoding(line), "surrogatepass"))


class ChatProtocol(Protocol):
    """One client connection: lines in (split in one pass per read), JSON lines out."""

    def __init__(self, server, clock, flushes, deadlines):
        self.server = server
        self.hub = server.hub
        self.clock = clock
        self.flushes = flushes  # the FlushQueue this connection's Output joins (chatd.output)
        self.deadlines = deadlines  # chatd.deadlines.Deadlines: the login, then idle, deadline
        self.output = None
        config = server.config
        self.MAX_LENGTH = config.max_line
        self.flood = FloodGuard(clock, config.flood_rate, config.flood_burst, config.flood_strikes)
        self.session = None
        self.ip = None
        self.group = None       # what per-address limits count by (chatd.addresses)
        self.closing = False    # said goodbye or aborted: read and send nothing more
        self.aborted = False    # dropped without a goodbye
        self.paused = False     # a Deferred reply is pending: handle no further line yet
        self._reads_paused = False  # the transport is paused too (data came while paused)
        self._buffer = b""      # received bytes not yet handled (from _offset on)
        self._offset = 0
        self._splitting = False
        self._abort_call = None
        self._drain_call = None     # set while the unsent output is over the limit
        self._last_heard = None
        self._anonymous_since = None
        self._replies = []          # [payload, settled] in request order (a list: an
                                    # empty deque is 760 bytes, and this one stays short)
        self._held = None           # a request waiting for the messages sent before it
        self.login_pending = False  # logged in, the login reply not yet written
        self.close_after_login = None   # (kind, reason) of a close asked for meanwhile

    # -- connection --------------------------------------------------------

    def connectionMade(self):
        self.ip = plain_address(self.transport.getPeer().host)
        self.group = address_group(self.ip)
        self.output = Output(self.transport, self.flushes, self.server.config.max_output_buffer)
        # Without it a second small write waits for the client's delayed ACK (40 ms tail).
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.hub.add_connection(self)
        self.server.connections.add(self.group)
        self._last_heard = self._anonymous_since = self.clock.seconds()
        self.deadlines.set(self, self.server.config.login_timeout, self._check_deadline)
        refusal = self.server.refuse_connection(self)
        if refusal is not None:
            kind, reason = refusal
            self.disconnect(kind, reason, at_once=True)

    def connectionLost(self, reason):
        self.output.discard()
        self.hub.remove_connection(self)
        self.server.connections.remove(self.group)
        self.deadlines.cancel(self)
        for call in (self._abort_call, self._drain_call):
            if call is not None and call.active():
                call.cancel()
        if self.session is not None:
            self.hub.end_session(self.session)
            self.session = None

    def _check_deadline(self):
        """Close a connection that has not logged in within --login-timeout, or that
        (logged in) sent nothing for --idle-timeout; else look again when it could be due."""
        self.deadlines.cancel(self)
        if self.closing:
            return
        now = self.clock.seconds()
        if self.session is None:
            if self._anonymous_since is None:   # logged out since the last look
                self._anonymous_since = now
            timeout = self.server.config.login_timeout
            left = self._anonymous_since + timeout - now
            reason = f"You did not log in within {timeout:g} s; this connection is closed."
        else:
            self._anonymous_since = None
            timeout = self.server.idle_timeout
            left = self._last_heard + timeout - now
            reason = (f"Nothing heard from you for {timeout:g} s (a client sends a heartbeat "
                      "every few seconds); this connection is closed.")
        if left > 0:
            self.deadlines.set(self, left, self._check_deadline)
        else:
            log.info("closing {who} from {ip}: {reason}", who=self._who(), ip=self.ip,
                     reason=reason)
            self.disconnect("timeout", reason)

    def write_line(self, line):
        """Write one line, unless the client has left too much earlier output unread.

        Checked before writing: what the server holds for one client stays
        below --max-output-buffer plus one line. Checked after writing too: a
        client for which the transport then holds more than the limit (one
        large history page, say) must read it down below the limit within
        --drain-timeout seconds, or it is dropped, even if nothing more is ever
        written to it. That check counts what the output keeps in memory
        (Output.held: the lines queued for this turn, and chatd.limits.held_bytes
        of the transport, which includes the sent start of a large write until
        little of it is left).
        """
        if self.closing:
            return      # after the goodbye (or an abort) nothing more is sent
        verdict = self.output.write(line)
        if verdict is UNREAD:
            self._drop_slow_reader(f"{self.output.unsent()} bytes of output not read")
        elif verdict is HELD and self._drain_call is None:
            self._drain_call = self.clock.callLater(self.server.config.drain_timeout,
                                                    self._check_drained)

    def write_lines(self, lines, chunk):
        """Several lines (`chunk` the same joined): one write while they fit within
        --max-output-buffer, else one by one, so the limit stays exact."""
        if self.output.fits(len(chunk)):
            self.write_line(chunk)
        else:
            for line in lines:
                self.write_line(line)

    def _check_drained(self):
        self._drain_call = None
        held = self.output.held()
        if not self.closing and held is not None and held > self.server.config.max_output_buffer:
            self._drop_slow_reader(f"{held} bytes of output held after "
                                   f"--drain-timeout {self.server.config.drain_timeout:g} s")

    def _drop_slow_reader(self, why):
        log.warn("dropping {who} from {ip}: {why} (--max-output-buffer {limit})",
                 who=self._who(), ip=self.ip, why=why, limit=self.server.config.max_output_buffer)
        self._abort()

    def _who(self):
        return self.session.name if self.session is not None else "a client (not logged in)"

    def _abort(self):
        """Close at once, dropping unsent output (a goodbye line would never be read)."""
        self.closing = self.aborted = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        self.output.discard()
        self.transport.abortConnection()

    def send(self, payload):
        self.write_line(encode(payload))

    def disconnect(self, kind, reason, at_once=False):
        """Say why, then close: the one way the server ends a connection.

        The session ends at once (out of member lists, its name free), and
        nothing more is read from it. On plain TCP only the write side is
        closed, and what the client still sends is read and dropped until it
        closes too: closing a socket with unread input makes the kernel send a
        reset, which can destroy the goodbye before the client has read it. If
        the client does not take the goodbye and close within CLOSE_TIMEOUT
        seconds, the connection is aborted. A connection refused at accept
        (`at_once`) is closed as soon as its line is written instead: a flood
        of them must not hold descriptors while waiting for the clients.
        """
        if self.transport is None or self.closing:
            return
        self.send({"event": "disconnect", "kind": kind, "reason": reason})
        if self.closing:
            return  # that write found a stalled reader and aborted
        self.closing = True
        self.output.flush()     # the goodbye and the lines before it, then the close
        if self.session is not None:
            self.hub.end_session(self.session)
        if not at_once and ITCPTransport.providedBy(self.transport) and \
                not INegotiated.providedBy(self.transport):
            self.transport.loseWriteConnection()
            self.transport.resumeProducing()
        else:
            self.transport.loseConnection()
        self._abort_call = self.clock.callLater(CLOSE_TIMEOUT, self._abort)

    # -- lines ---------------------------------------------------------------

    def dataReceived(self, data):
        """Split what arrived into lines in one pass (bytes.find from an offset).

        A line is at most --max-line bytes, not counting its end (`\\n` or `\\r\\n`).
        While a reply is pending (`paused`) lines stay in the buffer; a read that
        comes meanwhile pauses the transport, so at most that read and the rest of
        the one before wait here.
        """
        if self.closing:
            return
        self._buffer = self._buffer[self._offset:] + data if self._buffer else data
        self._offset = 0
        if self.paused and not self._reads_paused:
            self._reads_paused = True
            self.transport.pauseProducing()
        self._split()

    def _split(self):
        if self._splitting:
            return      # re-entered from a reply that completed at once; the loop goes on
        self._splitting = True
        try:
            buffer, limit = self._buffer, self.MAX_LENGTH
            while not self.paused and not self.closing:
                end = buffer.find(b"\n", self._offset)
                if end < 0:
                    rest = len(buffer) - self._offset
                    if rest > limit + 1 or (rest == limit + 1 and buffer[-1:] != b"\r"):
                        self.lineLengthExceeded()
                    break
                start, self._offset = self._offset, end + 1
                if end > start and buffer[end - 1] == 0x0D:
                    end -= 1
                if end - start > limit:
                    self.lineLengthExceeded()
                    break
                self.lineReceived(buffer[start:end])
            if self.closing:
                self._buffer, self._offset = b"", 0
            elif not self.paused:   # keep only the unfinished line (at most --max-line)
                self._buffer, self._offset = buffer[self._offset:], 0
        finally:
            self._splitting = False

    def pauseProducing(self):
        """Handle no further line until resumed. The transport is paused only if data
        comes meanwhile (dataReceived): a client that waits for the answer, as most
        do, costs no epoll changes (two system calls per login)."""
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self._split()
        if not self.paused and not self.closing and self._reads_paused:
            self._reads_paused = False
            self.transport.resumeProducing()

    def lineLengthExceeded(self):
        self.disconnect("abuse", f"A line is at most {self.MAX_LENGTH} bytes; "
                                 "this connection is closed.")

    # -- parsing and dispatch ----------------------------------------------

    def lineReceived(self, line):
        if self.closing:
            return
        self._last_heard = self.clock.seconds()
        if not line.strip():
            # A blank line does nothing, but it costs a request like any other line.
            self._admit(None, None)
            return
        action, ref, request, error = self._parse(line)
        if not self._admit(action, ref):
            return
        if (error is None and self._replies and action not in PIPELINED
                and not ACTIONS[action].silent):
            # Read your writes: wait until the messages sent before are stored (a
            # heartbeat reads nothing and is answered by nothing: it goes on at once).
            self._held = (action, ref, request)
            self.pauseProducing()
            return
        self._handle(action, ref, request, error)

    def _handle(self, action, ref, request, error=None):
        if error is not None:
            return self.reply(None, ref, error=error)
        try:
            result = self.dispatch(action, request)
        except ChatError as e:
            return self.reply(action, ref, error=str(e))
        except Exception:
            log.failure("handling {action!r}", action=action)
            return self.reply(action, ref, error="Something went wrong on the server; "
                                                 "it was logged. Please try again.")
        if isinstance(result, defer.Deferred):
            self._reply_later(action, ref, result)
        else:
            self.reply(action, ref, result=result)

    def _reply_later(self, action, ref, result):
        """Replies go out in request order. Messages are pipelined (the next one is read
        while this one waits for its commit, so they share it); any other request that
        waits pauses reading until it is answered."""
        slot = [None, False]    # payload, settled
        self._replies.append(slot)

        def settle(payload):
            slot[:] = [payload, True]
            self._session_changed()
            self._send_replies()
        result.addCallbacks(lambda r: settle(self._payload(action, ref, result=r)),
                            lambda f: settle(self._failure_payload(action, ref, f)))
        if action not in PIPELINED and not slot[1]:
            self.pauseProducing()
            result.addBoth(lambda _: self.resumeProducing()
                           if self.connected and not self.closing else None)

    def _send_replies(self):
        while self._replies and self._replies[0][1]:
            payload = self._replies.pop(0)[0]
            if payload is not None and self.transport is not None and self.connected:
                self.send(payload)
        if not self._replies and self._held is not None and not self.closing:
            held, self._held = self._held, None
            self._handle(*held)     # before the lines after it (resuming reads them)
            if not self._replies and not self.closing:
                self.resumeProducing()

    @staticmethod
    def _parse(line):
        """(action, ref, request, None), or (None, ref if known, None, error sentence)."""
        try:
            request = _decode(line)
        except RecursionError:
            return (None, None, None,
                    "That line nests too deeply; a request is one flat JSON object.")
        except DuplicateKey as e:
            return (None, None, None,
                    f"That line has the key {e.args[0]!r} twice; send each field once.")
        except (ValueError, UnicodeDecodeError):
            return None, None, None, "That line is not valid JSON (UTF-8, one object per line)."
        if not isinstance(request, dict):
            return (None, None, None,
                    "Each line must be a JSON object, like {\"list_channels\": \"\"}.")
        # In UTF-8 a lone surrogate comes from a \u escape or raw bytes 0xED 0xA0-0xBF
        # ("surrogatepass" lets them through); UTF-16 and UTF-32 lines have zero bytes.
        if (b"\\u" in line or b"\xed" in line or b"\x00" in line) and not _is_unicode(request):
            # json.loads turns an escape like "\ud800" into a lone surrogate, which
            # can be neither relayed (UTF-8) nor stored.
            return (None, None, None, "That line has a \\u escape of half a character "
                                      "(a lone surrogate like \\ud800); send real text.")
        ref = request.pop("ref", None)
        if not isinstance(ref, (str, int, type(None))) or isinstance(ref, bool):
            return None, None, None, "'ref' must be a string or an integer."
        actions = [key for key in request if key in ACTIONS]
        if len(actions) != 1:
            if actions:
                error = f"One action per line, please; this one has {', '.join(sorted(actions))}."
            else:
                error = "No known action in that line. Known actions: " + ", ".join(ACTIONS) + "."
            return None, ref, None, error
        return actions[0], ref, request, None

    def _admit(self, action, ref):
        """Flood control: True if this line may be handled; else refuse it or disconnect."""
        verdict = self.flood.check(ACTIONS[action].cost if action is not None else 1.0)
        if verdict == FloodGuard.ALLOW:
            return True
        if verdict == FloodGuard.REFUSE:
            self.reply(action, ref, error=TOO_FAST)
        else:
            log.warn("disconnecting {who} from {ip}: still sending too fast after "
                     "{strikes} refusals", who=self._who(), ip=self.ip, strikes=self.flood.strikes)
            self.disconnect("abuse", "You kept sending too fast after being asked to wait; "
                                     "this connection is closed.")
        return False

    def dispatch(self, key, request):
        action = ACTIONS[key]
        value = request.pop(key)
        claimed = request.pop("user", None)
        if self.session is None and action.access != ANYONE:
            raise ChatError("Log in first (send user:pwd), or register an account.")
        self._check_claim(key, value, claimed)
        if action.command is None:
            return getattr(self, action.handler_name)(**action.bind(value, request))
        actor = actor_of(self.session)
        check_access(action.command, actor, key)    # before the fields, as in the text form
        arguments = action.command.own(action.bind(value, request))
        return self.server.moderation.run(actor, action.command, arguments)

    def _check_claim(self, action, value, claimed):
        """The `user` field is a claim; it must be who this session is."""
        if claimed is None:
            return
        if not isinstance(claimed, str):
            raise ChatError("'user' must be a string: your user name.")
        if self.session is not None:
            me = self.session.name
        elif action == "user:pwd" and isinstance(value, str):
            me = value.partition(":")[0]
        else:
            me = value if isinstance(value, str) else ""
        if fold(claimed) != fold(me):
            raise ChatError(f"You are {me or 'not logged in'}; you cannot speak as {claimed!r}.")

    def _session_changed(self):
        if (self.session is None) != (self._anonymous_since is not None):
            self._check_deadline()  # logged in or out: the other deadline applies from now

    def reply(self, action, ref, result=None, error=None):
        self._session_changed()
        payload = self._payload(action, ref, result, error)
        if self._replies:
            self._replies.append([payload, True])
        elif payload is not None and self.transport is not None and self.connected:
            self.send(payload)

    @staticmethod
    def _payload(action, ref, result=None, error=None):
        payload = {"reply_to": action}
        if ref is not None:
            payload["ref"] = ref
        if error is not None:
            payload["error"] = error
        elif result is None and action in ACTIONS and ACTIONS[action].silent:
            return None  # an accepted heartbeat is answered by nothing
        else:
            payload["ok"] = True
            payload.update(result or {})
        return payload

    def _failure_payload(self, action, ref, failure):
        if failure.check(ChatError):
            return self._payload(action, ref, error=str(failure.value))
        if failure.check(ServerBusy):
            return self._payload(action, ref, error=BUSY)
        if self.server.store.is_unavailable(failure):
            log.warn("database unavailable during {action!r}: {error}",
                     action=action, error=failure.getErrorMessage())
            return self._payload(action, ref, error=UNAVAILABLE)
        log.failure("handling {action!r}", failure, action=action)
        return self._payload(action, ref, error="Something went wrong on the server; "
                                                "it was logged. Please try again.")

    # -- accounts ----------------------------------------------------------

    @defer.inlineCallbacks
    def do_register(self, name, password, email):
        registered = yield self.server.accounts.register(name, password, email, self.ip)
        return {"user": registered}

    @defer.inlineCallbacks
    def do_login(self, credentials):
        credentials = Credentials.from_wire(credentials)
        if self.session is not None:
            raise ChatError(f"You are already logged in as {self.session.name}; log out first.")
        self.session = session = yield self.server.accounts.login(credentials, self.ip,
                                                                  self._start_session)
        reply = {"user": session.name, "role": session.role,
                 "channels": self.hub.channels_of(session.name)}
        self.login_pending = True
        try:
            conversations = yield self.server.conversations.summaries(session)
        except Exception as e:
            if not self.server.store.is_unavailable(Failure(e)):
                raise
            conversations = None    # logged in all the same; list_conversations later
        finally:
            self.login_pending = False
            if self.close_after_login is not None:
                # Closed (a newer login) while the counts were read: the reply, then goodbye.
                self.clock.callLater(0, self.disconnect, *self.close_after_login)
        if conversations is not None:
            for c in conversations:
                if "channel" in c:
                    session.unread[c["channel"]] = c["unread"]
            reply["conversations"] = conversations
        return reply

    def _start_session(self, name):
        """The realm: this connection's Session for `name`, unless it changed meanwhile."""
        if self.session is not None or self.closing or not self.connected:
            raise ChatError("This connection logged in or closed meanwhile.")
        return self.hub.start_session(self, name, self.ip)

    def do_logout(self, name):
        if name and fold(name) != fold(self.session.name):
            raise ChatError(f"You are {self.session.name}; you can only log yourself out.")
        session, self.session = self.session, None
        self.hub.end_session(session)
        self.server.accounts.logout(session.name, self.ip)
        return {}

    # -- directory ---------------------------------------------------------

    def _reply_budget(self):
        return self.server.config.max_reply - REPLY_OVERHEAD

    def _directory_page(self, entries, limit):
        """Take (cursor, entry) pairs while they fit in one reply: (entries, next cursor or None)."""
        if limit is None:
            limit = LIST_MAX
        if not 1 <= limit <= LIST_MAX:
            raise ChatError(f"'limit' is between 1 and {LIST_MAX}.")
        budget, page, last = self._reply_budget(), [], None
        for cursor, entry in entries:
            size = len(encode(entry))
            if len(page) == limit or (page and size > budget):
                return page, last
            page.append(entry)
            budget -= size
            last = cursor
        return page, None

    def do_list_channels(self, _, after, limit):
        requests = self.server.moderation.join_request_states(self.session.name)
        channels = self.hub.channels
        entries = ((name, {"name": name, "private": channels[name].private,
                           "member": self.session.name in channels[name].members,
                           "request": requests.get(name)})
                   for name in sorted(channels) if after is None or name > after)
        page, cursor = self._directory_page(entries, limit)
        return {"channels": page, "next": cursor}

    def do_list_users(self, _, after, limit):
        page, cursor = self._directory_page(self.hub.directory(after or ""), limit)
        return {"users": page, "next": cursor}

    def do_list_members(self, channel, after, limit):
        name, entries = self.server.conversations.members(self.session, channel, after)
        page, cursor = self._directory_page(entries, limit)
        return {"channel": name, "members": page, "next": cursor}

    # -- conversations and read markers ------------------------------------

    @defer.inlineCallbacks
    def do_list_conversations(self, _):
        return {"conversations": (yield self.server.conversations.summaries(self.session))}

    def do_mark_read(self, id, channel, other_user):
        return self.server.conversations.mark_read(self.session, id, channel, other_user)

    def do_search(self, text, channel, other_user, before, limit):
        before, limit = self._page(before, limit)
        return self.server.conversations.search(self.session, text, channel, other_user,
                                                before, limit)

    def do_typing(self, active, channel, other_user):
        self.server.conversations.typing(self.session, active, channel, other_user)

    # -- channels and messages ---------------------------------------------

    def do_join(self, channel):
        return self.hub.join(self.session, channel)

    def do_leave(self, channel):
        return self.hub.leave(self.session, channel)

    def do_channel_message(self, text, channel, nonce=None, resend=False):
        return self.hub.channel_message(self.session, channel, text, nonce,
                                        resend).addCallback(_stored)

    def do_private_message(self, text, other_user, nonce=None, resend=False):
        return self.hub.private_message(self.session, other_user, text, nonce,
                                        resend).addCallback(_stored)

    def do_edit_message(self, text, id):
        return self.server.revisions.edit(self.session, id, text)

    def do_delete_message(self, id):
        return self.server.revisions.delete(self.session, id)

    def _looking_status(self):
        return self.session.status if self.session.status != OFFLINE else ONLINE

    @staticmethod
    def _page(before, limit):
        if limit is None:
            limit = HISTORY_DEFAULT
        if not 1 <= limit <= HISTORY_MAX:
            raise ChatError(f"'limit' is between 1 and {HISTORY_MAX}.")
        if before is not None and not 1 <= before <= MESSAGE_ID_MAX:
            raise ChatError("'before' is a message id: a whole number from 1 up.")
        return before, limit

    @defer.inlineCallbacks
    def do_get_channel(self, channel, before, limit):
        before, limit = self._page(before, limit)
        found = self.hub.readable_channel(self.session, channel)
        self.hub.presence.heartbeat(self.session, self._looking_status(), channel=found.name)
        messages, more = yield self.server.store.channel_history(found.name, found.id, before, limit)
        messages, more = self._fit_history(messages, more)
        return {"channel": found.name, "has_more": more, "messages": messages}

    @defer.inlineCallbacks
    def do_get_private(self, other_user, before, limit):
        before, limit = self._page(before, limit)
        other = self.hub.account_name(other_user)
        self.hub.presence.heartbeat(self.session, self._looking_status(), other_user=other)
        messages, more = yield self.server.store.private_history(
            self.session.name, other, before, limit)
        messages, more = self._fit_history(messages, more)
        return {"other_user": other, "has_more": more, "messages": messages}

    def _fit_history(self, messages, more):
        """The newest of `messages` (oldest first) that fit in one reply, at least one, and
        whether older ones exist: those left out here are older, so `has_more` holds."""
        wire = [m.to_wire() for m in messages]
        budget, start = self._reply_budget(), len(wire)
        while start > 0:
            size = len(encode(wire[start - 1]))
            if size > budget and start < len(wire):
                break
            budget -= size
            start -= 1
        return wire[start:], more or start > 0

    def do_presence(self, status, channel, other_user):
        self.hub.presence.heartbeat(self.session, status, channel=channel, other_user=other_user)

    # -- commands and requests (moderation) --------------------------------

    def do_command(self, line):
        return self.server.moderation.run_command(self.session, line)

    def do_my_requests(self, _):
        return self.server.moderation.my_requests(self.session)


class ChatFactory(Factory):
    def __init__(self, server, clock=None):
        self.server = server
        self.clock = server.reactor if clock is None else clock
        self.flushes = FlushQueue(self.clock)
        self.deadlines = Deadlines(self.clock)

    def buildProtocol(self, addr):
        protocol = ChatProtocol(self.server, self.clock, self.flushes, self.deadlines)
        protocol.factory = self
        return protocol
