-- chatd schema, version 7 (SQLite): the cluster node that stored each message.

-- Only a cluster (MariaDB) fills it; kept here so both engines have one shape.
ALTER TABLE messages ADD COLUMN node TEXT;
