-- chatd schema, version 2 (MariaDB / MySQL): join requests, bans, kicks, the admins' audit log.

-- Requests to join a private channel; the latest per (channel, user) is the one that counts.
CREATE TABLE join_requests (
    id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    user_name VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'pending',
    requested_at DATETIME(3) NOT NULL,
    decided_by VARCHAR(32),
    decided_at DATETIME(3),
    INDEX join_requests_by_user (user_name, id),
    INDEX join_requests_by_status (status, id),
    FOREIGN KEY (channel_id) REFERENCES channels(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- A ban is active while not lifted and not expired (expires_at NULL: permanent).
-- kind 'name': target is a user name and ip the address it had when banned;
-- kind 'ip': target is a network in CIDR form (a single address is a /32 or /128).
CREATE TABLE bans (
    id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind VARCHAR(8) NOT NULL,
    target VARCHAR(64) NOT NULL,
    ip VARCHAR(45),
    reason VARCHAR(300) NOT NULL,
    banned_by VARCHAR(32) NOT NULL,
    banned_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3),
    lifted_by VARCHAR(32),
    lifted_at DATETIME(3),
    INDEX bans_active (lifted_at, expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- kind of target as in bans: a user name, or a network whose connections were closed.
CREATE TABLE kicks (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    target VARCHAR(64) NOT NULL,
    ip VARCHAR(45),
    reason VARCHAR(300) NOT NULL,
    kicked_by VARCHAR(32) NOT NULL,
    at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Every admin action: who (a user name, or 'manhole'), what, on whom, why, when.
CREATE TABLE audit_log (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    actor VARCHAR(32) NOT NULL,
    action VARCHAR(16) NOT NULL,
    target VARCHAR(64),
    reason VARCHAR(300),
    detail TEXT,
    at DATETIME(3) NOT NULL,
    INDEX audit_log_by_time (at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE INDEX messages_by_time ON messages (sent_at);
