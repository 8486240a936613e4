-- Revision 0002_ledger: guards that hold whatever code writes. Transactions and entries refuse UPDATE,
-- DELETE and TRUNCATE; accounts refuse DELETE and any change of identity, and their counters start at zero
-- and move only together with `entry_seq`; a chain stripe only moves forward.

CREATE FUNCTION ledger.refuse_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% on %.% refused: the ledger is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$;

CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change();

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change();

CREATE TRIGGER accounts_not_deleted BEFORE DELETE OR TRUNCATE ON ledger.accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change();

CREATE TRIGGER chains_not_deleted BEFORE DELETE OR TRUNCATE ON ledger.chains
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change();

CREATE FUNCTION ledger.refuse_identity_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '%.% %: identity columns are immutable', TG_TABLE_SCHEMA, TG_TABLE_NAME, OLD
            USING ERRCODE = 'insufficient_privilege';
    END $$;

CREATE TRIGGER accounts_identity_immutable BEFORE UPDATE ON ledger.accounts FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.code IS DISTINCT FROM NEW.code
          OR OLD.currency IS DISTINCT FROM NEW.currency OR OLD.kind IS DISTINCT FROM NEW.kind
          OR OLD.flags IS DISTINCT FROM NEW.flags OR OLD.created_at IS DISTINCT FROM NEW.created_at
          OR NEW.entry_seq < OLD.entry_seq OR NEW.last_posted_at < OLD.last_posted_at)
    EXECUTE FUNCTION ledger.refuse_identity_change();

CREATE FUNCTION ledger.refuse_counter_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger account %: balance counters move only with new entries, through the ledger', NEW.code
            USING ERRCODE = 'insufficient_privilege';
    END $$;

CREATE TRIGGER accounts_start_at_zero BEFORE INSERT ON ledger.accounts FOR EACH ROW
    WHEN (NEW.posted <> 0 OR NEW.pending_debits <> 0 OR NEW.pending_credits <> 0 OR NEW.entry_seq <> 0)
    EXECUTE FUNCTION ledger.refuse_counter_change();

-- Cheap (evaluated in the WHEN clause, no query): counters never move unless entry_seq does.
CREATE TRIGGER accounts_counters_move_with_entries BEFORE UPDATE ON ledger.accounts FOR EACH ROW
    WHEN (NEW.entry_seq = OLD.entry_seq
          AND (NEW.posted, NEW.pending_debits, NEW.pending_credits, NEW.last_posted_at)
              IS DISTINCT FROM (OLD.posted, OLD.pending_debits, OLD.pending_credits, OLD.last_posted_at))
    EXECUTE FUNCTION ledger.refuse_counter_change();

CREATE TRIGGER chains_forward_only BEFORE UPDATE ON ledger.chains FOR EACH ROW
    WHEN (OLD.chain IS DISTINCT FROM NEW.chain OR NEW.seq < OLD.seq
          OR NEW.last_posted_at < OLD.last_posted_at)
    EXECUTE FUNCTION ledger.refuse_identity_change();
