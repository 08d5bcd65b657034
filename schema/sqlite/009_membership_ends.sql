-- chatd schema, version 9 (SQLite): how each membership ended.

-- Only a cluster (MariaDB) reads it; kept here so both engines have one shape
-- (schema/mysql/009_membership_ends.sql says what it is for).
CREATE TABLE membership_ends (
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_name TEXT COLLATE NOCASE NOT NULL,
    removed_by TEXT,
    PRIMARY KEY (channel_id, user_name)
);
