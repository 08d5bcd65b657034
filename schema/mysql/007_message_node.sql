-- chatd schema, version 7 (MariaDB / MySQL): the cluster node that stored each message.

-- When a node dies before its messages reached the bus, the other nodes relay them from
-- here (chatd/cluster.py: messages of that node above the last one they saw). NULL for a
-- single server.
ALTER TABLE messages ADD COLUMN node VARCHAR(64) NULL;
