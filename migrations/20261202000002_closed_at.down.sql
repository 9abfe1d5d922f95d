ALTER TABLE accounts
    DROP CONSTRAINT accounts_closed_at_when_closed,
    DROP COLUMN closed_at;
