-- chatd schema, version 2 (SQLite): join requests, bans, kicks, the admins' audit log.

-- Requests to join a private channel; the latest per (channel, user) is the one that counts.
CREATE TABLE join_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_name TEXT COLLATE NOCASE NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    requested_at TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT
);
CREATE INDEX join_requests_by_user ON join_requests (user_name, id);
CREATE INDEX join_requests_by_status ON join_requests (status, id);

-- A ban is active while not lifted and not expired (expires_at NULL: permanent).
-- kind 'name': target is a user name and ip the address it had when banned;
-- kind 'ip': target is a network in CIDR form (a single address is a /32 or /128).
CREATE TABLE bans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    ip TEXT,
    reason TEXT NOT NULL,
    banned_by TEXT NOT NULL,
    banned_at TEXT NOT NULL,
    expires_at TEXT,
    lifted_by TEXT,
    lifted_at TEXT
);
CREATE INDEX bans_active ON bans (lifted_at, expires_at);

-- kind of target as in bans: a user name, or a network whose connections were closed.
CREATE TABLE kicks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    ip TEXT,
    reason TEXT NOT NULL,
    kicked_by TEXT NOT NULL,
    at TEXT NOT NULL
);

-- Every admin action: who (a user name, or 'manhole'), what, on whom, why, when.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    reason TEXT,
    detail TEXT,
    at TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at);
CREATE INDEX messages_by_time ON messages (sent_at);
