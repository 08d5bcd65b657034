-- chatd schema, version 8 (SQLite): the search index moves to a file of its own.

-- It is written off the message path now (chatd/searchindex.py), in
-- <stem>-search.sqlite, which rebuilds itself from the messages at the next start.
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_update;
DROP TRIGGER messages_fts_delete;
DROP TABLE messages_fts;

-- Messages to index again: an edit changed the text, or a replayed spool put a
-- message below the index's high-water mark. Written by the transaction that does so.
CREATE TABLE search_pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL
);
