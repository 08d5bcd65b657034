-- chatd schema, version 6 (MariaDB / MySQL): full-text search of message texts.

-- InnoDB FULLTEXT: words of 3 characters or more (innodb_ft_min_token_size), searched
-- in boolean mode with every word required.
ALTER TABLE messages ADD FULLTEXT INDEX messages_text (body);
