DROP FUNCTION move_money_batch(bigint[], bigint[], bigint[], text[], text[], text[], text[], text[]);
DROP FUNCTION move_money(bigint, bigint, bigint, text, text, text, bigint, text, text, bigint);
DROP FUNCTION movement_verdict(text, text, bigint, text, bigint, text, text, text, text, bigint, bigint, bigint, bigint, text, text, text, bigint);
DROP TYPE money_movement;
