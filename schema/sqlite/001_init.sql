-- chatd schema, version 1 (SQLite).
CREATE TABLE users (
    name TEXT COLLATE NOCASE PRIMARY KEY,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'user',
    created_at TEXT NOT NULL
);

CREATE TABLE channels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    private INTEGER NOT NULL DEFAULT 0,
    created_by TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE memberships (
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_name TEXT COLLATE NOCASE NOT NULL,
    joined_at TEXT NOT NULL,
    PRIMARY KEY (channel_id, user_name)
);

-- Every channel and private message: the history and the admins' message log.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    channel_id INTEGER,
    recipient TEXT,
    peer_key TEXT,
    body TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE INDEX messages_by_channel ON messages (channel_id, id);
CREATE INDEX messages_by_peers ON messages (peer_key, id);
CREATE INDEX messages_by_sender ON messages (sender, id);

-- Logins, failed logins, logouts and registrations, with the address they came from.
CREATE TABLE auth_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name TEXT NOT NULL,
    event TEXT NOT NULL,
    ip TEXT,
    at TEXT NOT NULL
);
CREATE INDEX auth_log_by_user ON auth_log (user_name, at);

INSERT INTO channels (name, private, created_by, created_at) VALUES ('general', 0, NULL, '2026-01-01 00:00:00.000');
