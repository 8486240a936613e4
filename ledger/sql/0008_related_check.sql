-- Revision 0008_ledger_related_check: a transaction's pending or reversed transaction checked by a row
-- trigger, only where it names one, in place of the two foreign keys.

CREATE FUNCTION ledger.check_related_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.pending_id IS NOT NULL THEN
            PERFORM 1 FROM ledger.transactions t WHERE t.id = NEW.pending_id AND t.phase = 'pending';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'ledger transaction % resolves %, which is not a pending transaction',
                    NEW.id, NEW.pending_id
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
        END IF;
        IF NEW.reverses_id IS NOT NULL THEN
            PERFORM 1 FROM ledger.transactions t
             WHERE t.id = NEW.reverses_id AND t.phase IN ('posted', 'post_pending');
            IF NOT FOUND THEN
                RAISE EXCEPTION 'ledger transaction % reverses %, which is not a posted transaction',
                    NEW.id, NEW.reverses_id
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
        END IF;
        RETURN NULL;
    END $$;

CREATE TRIGGER transactions_related_exist AFTER INSERT ON ledger.transactions FOR EACH ROW
    WHEN (NEW.pending_id IS NOT NULL OR NEW.reverses_id IS NOT NULL)
    EXECUTE FUNCTION ledger.check_related_transaction();
