-- chatd schema, version 8 (MariaDB / MySQL): a word index written off the message path.

-- InnoDB maintained the FULLTEXT index inside every message commit, and a search for a
-- common word took 176-306 ms on 100,000 messages. The words are now rows, written by
-- chatd/searchindex.py (WordIndex) a moment after each commit; a search walks the
-- rarest word's rows newest first. Messages already stored are indexed by the first
-- start after this upgrade, in the background.
ALTER TABLE messages DROP INDEX messages_text;

-- One row per distinct word of a message (chatd.rules.word_key: any case, no accents).
CREATE TABLE message_words (
    word VARCHAR(64) NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (word, message_id),
    KEY message_words_by_message (message_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Messages to index again: an edit changed the text, or a replayed spool put a message
-- below the index's high-water mark. Written by the transaction that does so.
CREATE TABLE search_pending (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_id BIGINT NOT NULL
) ENGINE=InnoDB;

-- How far the index is: every message up to indexed_id, every pending row up to pending_seq.
CREATE TABLE search_marks (
    indexed_id BIGINT NOT NULL,
    pending_seq BIGINT NOT NULL
) ENGINE=InnoDB;
INSERT INTO search_marks (indexed_id, pending_seq) VALUES (0, 0);
