-- chatd schema, version 1 (MariaDB / MySQL).
CREATE TABLE users (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    email VARCHAR(254) NOT NULL,
    password_hash VARCHAR(100) NOT NULL,
    role VARCHAR(16) NOT NULL DEFAULT 'user',
    created_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE channels (
    id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(32) NOT NULL UNIQUE,
    private TINYINT NOT NULL DEFAULT 0,
    created_by VARCHAR(32),
    created_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE memberships (
    channel_id INTEGER NOT NULL,
    user_name VARCHAR(32) NOT NULL,
    joined_at DATETIME(3) NOT NULL,
    PRIMARY KEY (channel_id, user_name),
    FOREIGN KEY (channel_id) REFERENCES channels(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Every channel and private message: the history and the admins' message log.
CREATE TABLE messages (
    id BIGINT NOT NULL PRIMARY KEY,
    sender VARCHAR(32) NOT NULL,
    channel_id INTEGER,
    recipient VARCHAR(32),
    peer_key VARCHAR(80),
    body TEXT NOT NULL,
    sent_at DATETIME(3) NOT NULL,
    INDEX messages_by_channel (channel_id, id),
    INDEX messages_by_peers (peer_key, id),
    INDEX messages_by_sender (sender, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Logins, failed logins, logouts and registrations, with the address they came from.
CREATE TABLE auth_log (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_name VARCHAR(32) NOT NULL,
    event VARCHAR(16) NOT NULL,
    ip VARCHAR(45),
    at DATETIME(3) NOT NULL,
    INDEX auth_log_by_user (user_name, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

INSERT INTO channels (name, private, created_by, created_at) VALUES ('general', 0, NULL, '2026-01-01 00:00:00.000');
