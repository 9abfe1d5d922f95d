DROP TABLE IF EXISTS email_outbox;
-- Hashes cannot become codes again; the verifications they belong to are void either way.
DELETE FROM verify_emails;
ALTER TABLE verify_emails DROP CONSTRAINT verify_emails_secret_code_hash_sha256;
ALTER TABLE verify_emails RENAME COLUMN secret_code_hash TO secret_code;
