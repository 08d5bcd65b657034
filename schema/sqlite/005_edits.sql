-- chatd schema, version 5 (SQLite): edited and deleted messages.

-- `body` is the current text; history shows a deleted message as a tombstone without
-- it, while the admins' message log keeps it, with who deleted it and when.
ALTER TABLE messages ADD COLUMN edited_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_by TEXT;

-- Every earlier text of an edited message (the admins' message log shows them all).
CREATE TABLE message_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    replaced_at TEXT NOT NULL
);
CREATE INDEX message_versions_by_message ON message_versions (message_id, id);
