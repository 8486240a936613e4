-- Revision 0002_ledger: at commit, against the row as it stands then, the entry numbered `entry_seq` is the
-- account's last (posted at `last_posted_at`) and its running balance is the `posted` counter. One probe of
-- entries_account_posted_at_idx per event; the writers insert the entries before they move the counters,
-- but the check being deferred, any statement order within a transaction is judged by its outcome.
--
-- Replaced by 0007_account_counters.sql, whose downgrade runs this file again (hence OR REPLACE).

CREATE OR REPLACE FUNCTION ledger.check_account_counters() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        acc record;
    BEGIN
        PERFORM 1
           FROM ledger.accounts a
          WHERE a.id = NEW.id
            AND (a.entry_seq = 0 AND a.posted = 0
                 OR EXISTS (SELECT 1 FROM ledger.entries e
                             WHERE e.account_id = a.id AND e.posted_at = a.last_posted_at
                               AND e.account_seq = a.entry_seq AND e.balance_after = a.posted));
        IF NOT FOUND THEN
            SELECT a.code, a.posted, a.entry_seq INTO acc FROM ledger.accounts a WHERE a.id = NEW.id;
            RAISE EXCEPTION 'ledger account %: posted balance % (entry %) is not the running balance of its last entry',
                acc.code, acc.posted, acc.entry_seq
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$;

CREATE CONSTRAINT TRIGGER accounts_counters_match_entries AFTER UPDATE ON ledger.accounts
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.posted IS DISTINCT FROM OLD.posted OR NEW.entry_seq IS DISTINCT FROM OLD.entry_seq)
    EXECUTE FUNCTION ledger.check_account_counters();
