-- chatd schema, version 9 (MariaDB / MySQL): how each membership ended.

-- The latest end of each (channel, user) membership: removed_by names the admin who
-- removed the member, NULL when they left themselves. A cluster node that reads from
-- here what a lost node did but never told (chatd/cluster.py reload_state) tells the
-- member as the live path would have: a leave as a leave, a removal with its admin.
CREATE TABLE membership_ends (
    channel_id INTEGER NOT NULL,
    user_name VARCHAR(32) NOT NULL,
    removed_by VARCHAR(32),
    PRIMARY KEY (channel_id, user_name),
    FOREIGN KEY (channel_id) REFERENCES channels(id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
