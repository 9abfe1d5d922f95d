DROP INDEX transfers_reference_idx;
ALTER TABLE transfers
    DROP CONSTRAINT transfers_metadata_object,
    DROP CONSTRAINT transfers_reference_format,
    DROP COLUMN metadata,
    DROP COLUMN reference;
