-- Revision 0007_ledger_write_paths: the guard that an account's counters are the running balance of its
-- last entry, once per UPDATE statement over the updated rows (a transition table) instead of once per
-- account at commit. Replaces 0002_account_counters.sql.

CREATE OR REPLACE FUNCTION ledger.check_account_counters() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        bad record;
    BEGIN
        -- A LATERAL probe per row, which the planner cannot turn into a hash of every entry.
        SELECT m.code, m.posted, m.entry_seq INTO bad
          FROM moved m
          LEFT JOIN LATERAL (SELECT true AS found FROM ledger.entries e
                              WHERE e.account_id = m.id AND e.posted_at = m.last_posted_at
                                AND e.account_seq = m.entry_seq AND e.balance_after = m.posted
                              LIMIT 1) last ON true
         WHERE last.found IS NULL AND NOT (m.entry_seq = 0 AND m.posted = 0)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger account %: posted balance % (entry %) is not the running balance of its last entry',
                bad.code, bad.posted, bad.entry_seq
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$;

CREATE TRIGGER accounts_counters_match_entries AFTER UPDATE ON ledger.accounts
    REFERENCING NEW TABLE AS moved
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_account_counters();
