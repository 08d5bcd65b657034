-- chatd schema, version 4 (SQLite): read markers.

-- Each user's read marker per conversation: the newest message id they have read
-- (it only moves forward). A channel's row has its channel_id and peer_key ''; a
-- private conversation's has channel_id 0 and its peer_key (chatd/store.py peer_key).
CREATE TABLE read_markers (
    user_name TEXT COLLATE NOCASE NOT NULL,
    channel_id INTEGER NOT NULL,
    peer_key TEXT NOT NULL,
    last_read INTEGER NOT NULL,
    PRIMARY KEY (user_name, channel_id, peer_key)
);

-- A user's private conversations: what they received (what they sent: messages_by_sender).
CREATE INDEX messages_by_recipient ON messages (recipient, id);

-- Everything stored before the upgrade counts as read.
INSERT INTO read_markers (user_name, channel_id, peer_key, last_read)
    SELECT m.user_name, m.channel_id, '',
           COALESCE((SELECT MAX(x.id) FROM messages x WHERE x.channel_id = m.channel_id), 0)
    FROM memberships m;
INSERT OR IGNORE INTO read_markers (user_name, channel_id, peer_key, last_read)
    SELECT DISTINCT x.sender, 0, x.peer_key,
           (SELECT MAX(y.id) FROM messages y WHERE y.peer_key = x.peer_key)
    FROM messages x WHERE x.peer_key IS NOT NULL;
INSERT OR IGNORE INTO read_markers (user_name, channel_id, peer_key, last_read)
    SELECT DISTINCT x.recipient, 0, x.peer_key,
           (SELECT MAX(y.id) FROM messages y WHERE y.peer_key = x.peer_key)
    FROM messages x WHERE x.peer_key IS NOT NULL;
