/*M!999999\- enable the sandbox mode */ 
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: 127.0.0.1    Database: chatd_demo
-- ------------------------------------------------------
-- Server version	10.11.19-MariaDB-0+deb12u1

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Current Database: `chatd_demo`
--

CREATE DATABASE /*!32312 IF NOT EXISTS*/ `chatd_demo` /*!40100 DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci */;

USE `chatd_demo`;

--
-- Table structure for table `audit_log`
--

DROP TABLE IF EXISTS `audit_log`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `audit_log` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `actor` varchar(32) NOT NULL,
  `action` varchar(16) NOT NULL,
  `target` varchar(64) DEFAULT NULL,
  `reason` varchar(300) DEFAULT NULL,
  `detail` text DEFAULT NULL,
  `at` datetime(3) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `audit_log_by_time` (`at`)
) ENGINE=InnoDB AUTO_INCREMENT=2 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `audit_log`
--

LOCK TABLES `audit_log` WRITE;
/*!40000 ALTER TABLE `audit_log` DISABLE KEYS */;
INSERT INTO `audit_log` VALUES
(1,'alice','create','random',NULL,'public','2026-12-03 14:22:49.765');
/*!40000 ALTER TABLE `audit_log` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `auth_log`
--

DROP TABLE IF EXISTS `auth_log`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `auth_log` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `user_name` varchar(32) NOT NULL,
  `event` varchar(16) NOT NULL,
  `ip` varchar(45) DEFAULT NULL,
  `at` datetime(3) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `auth_log_by_user` (`user_name`,`at`)
) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `auth_log`
--

LOCK TABLES `auth_log` WRITE;
/*!40000 ALTER TABLE `auth_log` DISABLE KEYS */;
INSERT INTO `auth_log` VALUES
(1,'alice','register','127.0.0.1','2026-12-03 14:22:49.370'),
(2,'alice','login','127.0.0.1','2026-12-03 14:22:49.452'),
(3,'bob','register','127.0.0.1','2026-12-03 14:22:49.532'),
(4,'bob','login','127.0.0.1','2026-12-03 14:22:49.605'),
(5,'carol','register','127.0.0.1','2026-12-03 14:22:49.682'),
(6,'carol','login','127.0.0.1','2026-12-03 14:22:49.754');
/*!40000 ALTER TABLE `auth_log` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `bans`
--

DROP TABLE IF EXISTS `bans`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `bans` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `kind` varchar(8) NOT NULL,
  `target` varchar(64) NOT NULL,
  `ip` varchar(45) DEFAULT NULL,
  `reason` varchar(300) NOT NULL,
  `banned_by` varchar(32) NOT NULL,
  `banned_at` datetime(3) NOT NULL,
  `expires_at` datetime(3) DEFAULT NULL,
  `lifted_by` varchar(32) DEFAULT NULL,
  `lifted_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `bans_active` (`lifted_at`,`expires_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `bans`
--

LOCK TABLES `bans` WRITE;
/*!40000 ALTER TABLE `bans` DISABLE KEYS */;
/*!40000 ALTER TABLE `bans` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `channels`
--

DROP TABLE IF EXISTS `channels`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `channels` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `name` varchar(32) NOT NULL,
  `private` tinyint(4) NOT NULL DEFAULT 0,
  `created_by` varchar(32) DEFAULT NULL,
  `created_at` datetime(3) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB AUTO_INCREMENT=3 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `channels`
--

LOCK TABLES `channels` WRITE;
/*!40000 ALTER TABLE `channels` DISABLE KEYS */;
INSERT INTO `channels` VALUES
(1,'general',0,NULL,'2026-01-01 00:00:00.000'),
(2,'random',0,'alice','2026-12-03 14:22:49.760');
/*!40000 ALTER TABLE `channels` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `join_requests`
--

DROP TABLE IF EXISTS `join_requests`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `join_requests` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `channel_id` int(11) NOT NULL,
  `user_name` varchar(32) NOT NULL,
  `status` varchar(16) NOT NULL DEFAULT 'pending',
  `requested_at` datetime(3) NOT NULL,
  `decided_by` varchar(32) DEFAULT NULL,
  `decided_at` datetime(3) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `join_requests_by_user` (`user_name`,`id`),
  KEY `join_requests_by_status` (`status`,`id`),
  KEY `channel_id` (`channel_id`),
  CONSTRAINT `join_requests_ibfk_1` FOREIGN KEY (`channel_id`) REFERENCES `channels` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `join_requests`
--

LOCK TABLES `join_requests` WRITE;
/*!40000 ALTER TABLE `join_requests` DISABLE KEYS */;
/*!40000 ALTER TABLE `join_requests` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `kicks`
--

DROP TABLE IF EXISTS `kicks`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `kicks` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `target` varchar(64) NOT NULL,
  `ip` varchar(45) DEFAULT NULL,
  `reason` varchar(300) NOT NULL,
  `kicked_by` varchar(32) NOT NULL,
  `at` datetime(3) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `kicks`
--

LOCK TABLES `kicks` WRITE;
/*!40000 ALTER TABLE `kicks` DISABLE KEYS */;
/*!40000 ALTER TABLE `kicks` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `membership_ends`
--

DROP TABLE IF EXISTS `membership_ends`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `membership_ends` (
  `channel_id` int(11) NOT NULL,
  `user_name` varchar(32) NOT NULL,
  `removed_by` varchar(32) DEFAULT NULL,
  PRIMARY KEY (`channel_id`,`user_name`),
  CONSTRAINT `membership_ends_ibfk_1` FOREIGN KEY (`channel_id`) REFERENCES `channels` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `membership_ends`
--

LOCK TABLES `membership_ends` WRITE;
/*!40000 ALTER TABLE `membership_ends` DISABLE KEYS */;
/*!40000 ALTER TABLE `membership_ends` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `memberships`
--

DROP TABLE IF EXISTS `memberships`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `memberships` (
  `channel_id` int(11) NOT NULL,
  `user_name` varchar(32) NOT NULL,
  `joined_at` datetime(3) NOT NULL,
  PRIMARY KEY (`channel_id`,`user_name`),
  CONSTRAINT `memberships_ibfk_1` FOREIGN KEY (`channel_id`) REFERENCES `channels` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `memberships`
--

LOCK TABLES `memberships` WRITE;
/*!40000 ALTER TABLE `memberships` DISABLE KEYS */;
INSERT INTO `memberships` VALUES
(1,'alice','2026-12-03 14:22:49.456'),
(1,'bob','2026-12-03 14:22:49.609'),
(1,'carol','2026-12-03 14:22:49.758'),
(2,'alice','2026-12-03 14:22:49.763'),
(2,'bob','2026-12-03 14:22:49.767'),
(2,'carol','2026-12-03 14:22:49.774');
/*!40000 ALTER TABLE `memberships` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `message_id_blocks`
--

DROP TABLE IF EXISTS `message_id_blocks`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `message_id_blocks` (
  `start_id` bigint(20) NOT NULL,
  `end_id` bigint(20) NOT NULL,
  PRIMARY KEY (`start_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `message_id_blocks`
--

LOCK TABLES `message_id_blocks` WRITE;
/*!40000 ALTER TABLE `message_id_blocks` DISABLE KEYS */;
INSERT INTO `message_id_blocks` VALUES
(1000001,1010001);
/*!40000 ALTER TABLE `message_id_blocks` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `message_ids`
--

DROP TABLE IF EXISTS `message_ids`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `message_ids` (
  `next_id` bigint(20) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `message_ids`
--

LOCK TABLES `message_ids` WRITE;
/*!40000 ALTER TABLE `message_ids` DISABLE KEYS */;
INSERT INTO `message_ids` VALUES
(9);
/*!40000 ALTER TABLE `message_ids` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `message_versions`
--

DROP TABLE IF EXISTS `message_versions`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `message_versions` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `message_id` bigint(20) NOT NULL,
  `body` text NOT NULL,
  `replaced_at` datetime(3) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `message_versions_by_message` (`message_id`,`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `message_versions`
--

LOCK TABLES `message_versions` WRITE;
/*!40000 ALTER TABLE `message_versions` DISABLE KEYS */;
/*!40000 ALTER TABLE `message_versions` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `message_words`
--

DROP TABLE IF EXISTS `message_words`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `message_words` (
  `word` varchar(64) NOT NULL,
  `message_id` bigint(20) NOT NULL,
  PRIMARY KEY (`word`,`message_id`),
  KEY `message_words_by_message` (`message_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `message_words`
--

LOCK TABLES `message_words` WRITE;
/*!40000 ALTER TABLE `message_words` DISABLE KEYS */;
INSERT INTO `message_words` VALUES
('afternoon',4),
('anyone',5),
('channel',1),
('chatd',1),
('everyone',2),
('for',3),
('for',5),
('friday',3),
('friday',4),
('general',1),
('glad',2),
('hello',3),
('here',2),
('lunch',5),
('planned',3),
('release',3),
('still',3),
('the',1),
('the',3),
('this',1),
('welcome',1),
('yes',4);
/*!40000 ALTER TABLE `message_words` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `messages`
--

DROP TABLE IF EXISTS `messages`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `messages` (
  `id` bigint(20) NOT NULL,
  `sender` varchar(32) NOT NULL,
  `channel_id` int(11) DEFAULT NULL,
  `recipient` varchar(32) DEFAULT NULL,
  `peer_key` varchar(80) DEFAULT NULL,
  `body` text NOT NULL,
  `sent_at` datetime(3) NOT NULL,
  `nonce` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `edited_at` datetime(3) DEFAULT NULL,
  `deleted_at` datetime(3) DEFAULT NULL,
  `deleted_by` varchar(32) DEFAULT NULL,
  `node` varchar(64) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `messages_by_nonce` (`sender`,`nonce`),
  KEY `messages_by_channel` (`channel_id`,`id`),
  KEY `messages_by_peers` (`peer_key`,`id`),
  KEY `messages_by_sender` (`sender`,`id`),
  KEY `messages_by_time` (`sent_at`),
  KEY `messages_by_recipient` (`recipient`,`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `messages`
--

LOCK TABLES `messages` WRITE;
/*!40000 ALTER TABLE `messages` DISABLE KEYS */;
INSERT INTO `messages` VALUES
(1,'alice',1,NULL,NULL,'Welcome to chatd! This is the general channel.','2026-12-03 14:22:49.776',NULL,NULL,NULL,NULL,NULL),
(2,'bob',1,NULL,NULL,'Hi everyone, glad to be here.','2026-12-03 14:22:49.830',NULL,NULL,NULL,NULL,NULL),
(3,'carol',1,NULL,NULL,'Hello! Is the release still planned for Friday?','2026-12-03 14:22:49.884',NULL,NULL,NULL,NULL,NULL),
(4,'alice',1,NULL,NULL,'Yes, Friday afternoon.','2026-12-03 14:22:49.938',NULL,NULL,NULL,NULL,NULL),
(5,'bob',2,NULL,NULL,'Anyone up for lunch?','2026-12-03 14:22:49.993',NULL,NULL,NULL,NULL,NULL),
(6,'carol',2,NULL,NULL,'Sure, 12:30?','2026-12-03 14:22:50.046',NULL,NULL,NULL,NULL,NULL),
(7,'bob',NULL,'alice','alice|bob','Can you review my patch?','2026-12-03 14:22:50.100',NULL,NULL,NULL,NULL,NULL),
(8,'alice',NULL,'bob','alice|bob','Sure, after lunch.','2026-12-03 14:22:50.106',NULL,NULL,NULL,NULL,NULL);
/*!40000 ALTER TABLE `messages` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `read_markers`
--

DROP TABLE IF EXISTS `read_markers`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `read_markers` (
  `user_name` varchar(32) NOT NULL,
  `channel_id` int(11) NOT NULL,
  `peer_key` varchar(80) NOT NULL,
  `last_read` bigint(20) NOT NULL,
  PRIMARY KEY (`user_name`,`channel_id`,`peer_key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `read_markers`
--

LOCK TABLES `read_markers` WRITE;
/*!40000 ALTER TABLE `read_markers` DISABLE KEYS */;
/*!40000 ALTER TABLE `read_markers` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `schema_version`
--

DROP TABLE IF EXISTS `schema_version`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `schema_version` (
  `version` int(11) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `schema_version`
--

LOCK TABLES `schema_version` WRITE;
/*!40000 ALTER TABLE `schema_version` DISABLE KEYS */;
INSERT INTO `schema_version` VALUES
(1),
(2),
(3),
(4),
(5),
(6),
(7),
(8),
(9);
/*!40000 ALTER TABLE `schema_version` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `search_marks`
--

DROP TABLE IF EXISTS `search_marks`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `search_marks` (
  `indexed_id` bigint(20) NOT NULL,
  `pending_seq` bigint(20) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `search_marks`
--

LOCK TABLES `search_marks` WRITE;
/*!40000 ALTER TABLE `search_marks` DISABLE KEYS */;
INSERT INTO `search_marks` VALUES
(5,0);
/*!40000 ALTER TABLE `search_marks` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `search_pending`
--

DROP TABLE IF EXISTS `search_pending`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `search_pending` (
  `seq` bigint(20) NOT NULL AUTO_INCREMENT,
  `message_id` bigint(20) NOT NULL,
  PRIMARY KEY (`seq`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `search_pending`
--

LOCK TABLES `search_pending` WRITE;
/*!40000 ALTER TABLE `search_pending` DISABLE KEYS */;
/*!40000 ALTER TABLE `search_pending` ENABLE KEYS */;
UNLOCK TABLES;

--
-- Table structure for table `users`
--

DROP TABLE IF EXISTS `users`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `users` (
  `name` varchar(32) NOT NULL,
  `email` varchar(254) NOT NULL,
  `password_hash` varchar(100) NOT NULL,
  `role` varchar(16) NOT NULL DEFAULT 'user',
  `created_at` datetime(3) NOT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `users`
--

LOCK TABLES `users` WRITE;
/*!40000 ALTER TABLE `users` DISABLE KEYS */;
INSERT INTO `users` VALUES
('alice','alice@example.org','$2b$10$2OWYQdEpf7aZDUzAH3t0GeEos/ZCn6CrI2Ic2KUsLdCZpgXEfL9Di','admin','2026-12-03 14:22:49.366'),
('bob','bob@example.org','$2b$10$CLwoKj2uOKnHWcUQqEkiiuMqXTYAtOcQZ/7tNny.mPfsJEdJxMMfe','user','2026-12-03 14:22:49.529'),
('carol','carol@example.org','$2b$10$WBpHOt5vNd6.HAyXDebQPOiW1XlT7MvS77ntQUKe9pPDhUhl0iokS','user','2026-12-03 14:22:49.681');
/*!40000 ALTER TABLE `users` ENABLE KEYS */;
UNLOCK TABLES;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed
