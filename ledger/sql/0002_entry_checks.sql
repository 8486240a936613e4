-- Revision 0002_ledger: every INSERT statement into entries is checked set-wise (account exists, currencies
-- agree, transaction exists); a statement that leaves some transaction unbalanced queues it in
-- `ledger.balance_checks`, whose deferred constraint trigger re-checks the sum at commit.

-- Set-based and per statement: one index probe per distinct account and per transaction, never a
-- trigger call per row. Hash and merge joins are disabled inside it because its plans are cached per
-- session: a plan made for a large COPY chunk while the tables were small would otherwise go on
-- scanning the whole transactions table for every later statement of that session.
CREATE FUNCTION ledger.check_inserted_entries() RETURNS trigger LANGUAGE plpgsql
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    DECLARE
        bad record;
    BEGIN
        SELECT x.account_id INTO bad
          FROM (SELECT DISTINCT e.account_id, e.currency FROM inserted e) x
          LEFT JOIN ledger.accounts a ON a.id = x.account_id
         WHERE a.id IS NULL OR a.currency <> x.currency
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger entry on account % names no account of its currency', bad.account_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        FOR bad IN
            SELECT p.tx_id,
                   (t.id IS NULL OR t.currency <> p.currency OR t.posted_at <> p.first_at
                    OR t.posted_at <> p.last_at OR p.posted_all <> p.posted_any
                    OR p.posted_all <> (t.phase IN ('posted', 'post_pending'))) AS mismatch
              FROM (SELECT e.tx_id, e.currency, sum(e.amount) AS total, min(e.posted_at) AS first_at,
                           max(e.posted_at) AS last_at, bool_and(e.posted) AS posted_all,
                           bool_or(e.posted) AS posted_any
                      FROM inserted e
                     GROUP BY e.tx_id, e.currency) p
              LEFT JOIN ledger.transactions t ON t.id = p.tx_id
             WHERE p.total <> 0 OR t.id IS NULL OR t.currency <> p.currency OR t.posted_at <> p.first_at
                OR t.posted_at <> p.last_at OR p.posted_all <> p.posted_any
                OR p.posted_all <> (t.phase IN ('posted', 'post_pending'))
        LOOP
            IF bad.mismatch THEN
                RAISE EXCEPTION 'ledger entries of transaction % do not match their transaction', bad.tx_id
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            -- Not balanced by this statement alone: re-checked at commit.
            INSERT INTO ledger.balance_checks (tx_id) VALUES (bad.tx_id);
        END LOOP;
        RETURN NULL;
    END $$;

CREATE TRIGGER entries_checked AFTER INSERT ON ledger.entries
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_inserted_entries();

CREATE FUNCTION ledger.check_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        bad record;
    BEGIN
        SELECT e.currency, sum(e.amount) AS total INTO bad
          FROM ledger.entries e
         WHERE e.tx_id = NEW.tx_id
         GROUP BY e.currency
        HAVING sum(e.amount) <> 0
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger transaction % does not sum to zero: % %', NEW.tx_id, bad.total, bad.currency
                USING ERRCODE = 'check_violation';
        END IF;
        DELETE FROM ledger.balance_checks WHERE tx_id = NEW.tx_id;
        RETURN NULL;
    END $$;

CREATE CONSTRAINT TRIGGER balance_checks_sum_zero AFTER INSERT ON ledger.balance_checks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger.check_transaction_balanced();
