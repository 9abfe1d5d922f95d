-- References and metadata on transfers, deposits and withdrawals (SPEC §6): the client's own
-- words, stored, returned by every read and searchable by reference. A capture's transfer
-- carries its hold's.
ALTER TABLE transfers
    ADD COLUMN reference text,
    ADD COLUMN metadata jsonb,
    ADD CONSTRAINT transfers_reference_format CHECK (reference ~ '^[\x20-\x7e]{1,64}$'),
    ADD CONSTRAINT transfers_metadata_object CHECK (jsonb_typeof(metadata) = 'object');

-- `?reference=` on an account's transfers: the few transfers with that reference, then each
-- one's entry for the account (`entries_transfer_account_key`). Partial: transfers without a
-- reference cost it nothing.
CREATE INDEX transfers_reference_idx ON transfers (reference) WHERE reference IS NOT NULL;
