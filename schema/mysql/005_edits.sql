-- chatd schema, version 5 (MariaDB / MySQL): edited and deleted messages.

-- `body` is the current text; history shows a deleted message as a tombstone without
-- it, while the admins' message log keeps it, with who deleted it and when.
ALTER TABLE messages ADD COLUMN edited_at DATETIME(3), ADD COLUMN deleted_at DATETIME(3),
    ADD COLUMN deleted_by VARCHAR(32);

-- Every earlier text of an edited message (the admins' message log shows them all).
CREATE TABLE message_versions (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    replaced_at DATETIME(3) NOT NULL,
    INDEX message_versions_by_message (message_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
