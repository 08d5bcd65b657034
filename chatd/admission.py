"""Who may register, and whose login goes first: limits per address, kept in bounded memory.

An "address" here is chatd.addresses.address_group: one IPv4 address, or one
IPv6 /64 (what one customer of an ISP usually gets).

- RegistrationLimit: at most N accounts created per address in a sliding hour.
- KnownLogins: the (account, address) pairs that logged in successfully, newest
  kept, oldest forgotten past a bound. In memory only: after a restart every
  pair is unknown until its next successful login. A known pair's login goes
  to the front of the bcrypt queue, and the per-account failed-login backoff
  (which anyone can run up by failing on a name) does not apply to it.
- AddressAwareThrottle: chatd.limits.LoginThrottle with that exception.
"""

import math
from collections import OrderedDict, deque

from chatd.addresses import address_group
from chatd.auth import ChatError
from chatd.limits import LoginThrottle
from chatd.rules import fold

REGISTRATION_WINDOW = 3600.0    # seconds: --registrations-per-hour counts in this window


class RegistrationLimit:
    """At most `per_hour` registrations from one address within any REGISTRATION_WINDOW."""

    def __init__(self, clock, per_hour):
        self.clock = clock
        self.per_hour = per_hour
        self._times = {}        # address key -> deque of registration times, oldest first

    def take(self, ip):
        """Count one registration from `ip`, or raise ChatError if it is over the limit."""
        now = self.clock.seconds()
        self._forget_before(now - REGISTRATION_WINDOW)
        key = address_group(ip)
        times = self._times.setdefault(key, deque())
        if len(times) >= self.per_hour:
            wait = math.ceil((times[0] + REGISTRATION_WINDOW - now) / 60)
            raise ChatError(f"Too many accounts were created from your address in the last hour "
                            f"(at most {self.per_hour}); try again in {wait} min.")
        times.append(now)

    def give_back(self, ip):
        """Uncount the latest registration from `ip` (it did not happen)."""
        times = self._times.get(address_group(ip))
        if times:
            times.pop()

    def _forget_before(self, cutoff):
        for key in list(self._times):
            times = self._times[key]
            while times and times[0] <= cutoff:
                times.popleft()
            if not times:
                del self._times[key]


class KnownLogins:
    """The latest `capacity` (account, address) pairs that logged in successfully."""

    def __init__(self, capacity):
        self.capacity = capacity
        self._pairs = OrderedDict()     # (folded name, address key) -> None, oldest first

    @staticmethod
    def _pair(name, ip):
        return fold(name), address_group(ip)

    def __contains__(self, name_and_ip):
        return self._pair(*name_and_ip) in self._pairs

    def __len__(self):
        return len(self._pairs)

    def add(self, name, ip):
        pair = self._pair(name, ip)
        self._pairs[pair] = None
        self._pairs.move_to_end(pair)
        while len(self._pairs) > self.capacity:
            self._pairs.popitem(last=False)


class AddressAwareThrottle(LoginThrottle):
    """Failed-login backoff per account and per address, except that the account's
    backoff does not apply from an address the account logged in from before.

    Anyone can fail logins on a name from fresh addresses; that must slow the
    guessers, not lock the account's owner out at home. The per-address backoff
    still applies everywhere.
    """

    def __init__(self, clock, threshold, cap, known):
        super().__init__(clock, threshold, cap)
        self.known = known

    def keys(self, name, ip):
        keys = [(kind, fold(value) if kind == "user" else value)
                for kind, value in super().keys(name, ip)]
        if (name, ip) in self.known:
            keys = [key for key in keys if key[0] != "user"]
        return keys

    def succeeded(self, name, ip):
        self._records.pop(("user", fold(name)), None)
        super().succeeded(name, ip)
