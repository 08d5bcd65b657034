-- chatd schema, version 3 (MariaDB / MySQL): ids assigned at commit, and resend-safe nonces.

-- A client's optional nonce: a second message with the same (sender, nonce) is the
-- same message (NULLs are distinct, so messages without a nonce never collide).
ALTER TABLE messages ADD COLUMN nonce VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    ADD UNIQUE INDEX messages_by_nonce (sender, nonce);

-- The next message id. A commit takes its ids here (row lock held to the commit), so
-- ids increase in commit order across every chatd sharing this database and are
-- never handed out twice; a block reserved for outages is skipped by every
-- commit (see MessageLog in chatd/store.py).
CREATE TABLE message_ids (next_id BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO message_ids (next_id) SELECT COALESCE(MAX(id), 0) + 1 FROM messages;

-- Ids reserved by a chatd for messages it spools while the database is away.
CREATE TABLE message_id_blocks (
    start_id BIGINT NOT NULL PRIMARY KEY,
    end_id BIGINT NOT NULL
) ENGINE=InnoDB;
