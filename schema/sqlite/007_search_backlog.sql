-- chatd schema, version 7 (SQLite): the search index is brought up to date in
-- batches, not inside every message commit.

-- A new message's id waits here until the store indexes a batch of them (every
-- second, and before each search): one small b-tree row per message instead of an
-- FTS5 segment (tokenizing, several pages and merges) per commit, which had tripled
-- the cost of a commit. The same idea as Zulip's fts_update_log.
CREATE TABLE search_backlog (message_id INTEGER PRIMARY KEY);

DROP TRIGGER messages_fts_insert;
CREATE TRIGGER messages_search_backlog AFTER INSERT ON messages BEGIN
    INSERT INTO search_backlog (message_id) VALUES (new.id);
END;

-- An edit or a delete changes the index only for a message already in it; one
-- still waiting is indexed (or dropped) as it is when its turn comes.
DROP TRIGGER messages_fts_update;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages
    WHEN NOT EXISTS (SELECT 1 FROM search_backlog WHERE message_id = old.id) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
DROP TRIGGER messages_fts_delete;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) SELECT 'delete', old.id, old.body
        WHERE NOT EXISTS (SELECT 1 FROM search_backlog WHERE message_id = old.id);
    DELETE FROM search_backlog WHERE message_id = old.id;
END;
