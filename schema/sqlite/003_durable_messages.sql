-- chatd schema, version 3 (SQLite): ids assigned at commit, and resend-safe nonces.

-- A client's optional nonce: a second message with the same (sender, nonce) is the
-- same message (NULLs are distinct, so messages without a nonce never collide).
ALTER TABLE messages ADD COLUMN nonce TEXT;
CREATE UNIQUE INDEX messages_by_nonce ON messages (sender, nonce);

-- The next message id. A commit takes its ids here in the same transaction as the
-- insert, so ids increase in commit order and are never handed out twice; a block
-- reserved for outages is skipped by every commit (see MessageLog in chatd/store.py).
CREATE TABLE message_ids (next_id INTEGER NOT NULL);
INSERT INTO message_ids (next_id) SELECT COALESCE(MAX(id), 0) + 1 FROM messages;

-- Ids reserved by a chatd for messages it spools while the database is away.
CREATE TABLE message_id_blocks (start_id INTEGER NOT NULL PRIMARY KEY, end_id INTEGER NOT NULL);
