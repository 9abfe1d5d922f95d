DROP INDEX entries_account_time_idx;
