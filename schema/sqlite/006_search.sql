-- chatd schema, version 6 (SQLite): full-text search of message texts (FTS5).

-- An external-content index of messages.body, kept by the triggers below (an edit
-- replaces the indexed text; deleted messages stay indexed for admins, and search
-- leaves them out).
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='id');
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
