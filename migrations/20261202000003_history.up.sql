-- A history you can ask questions of (SPEC §6).
--
-- "The balance at a moment" is the `balance_after` of the account's last entry at or before it,
-- by (created_at, id): one probe of this index, however long the history. An entry's created_at
-- is its transaction's start, so a moment between a transfer's start and its commit counts it.
CREATE INDEX entries_account_time_idx ON entries (account_id, created_at, id);
