-- `ledger.begin_posting`: the locks and counters a bulk posting plans against, trying the caller's preferred
-- stripe with one probe first.
--
-- One definition: migration 0002_ledger installs it, and 0007_ledger_write_paths installs it again on
-- databases made before (it replaced a definition with the same rules and slower plans).

CREATE OR REPLACE FUNCTION ledger.begin_posting(
    p_accounts uuid[], p_keys text[], p_stripe integer,
    OUT account_ids uuid[], OUT codes text[], OUT currencies text[], OUT flags integer[],
    OUT posted bigint[], OUT pending_debits bigint[], OUT pending_credits bigint[],
    OUT entry_seqs bigint[], OUT chain smallint, OUT chain_seq bigint, OUT chain_hash bytea,
    OUT posted_at timestamptz, OUT existing_keys text[]
) LANGUAGE plpgsql AS $$
    DECLARE
        accounts_last timestamptz;
        chain_last timestamptz;
    BEGIN
        SELECT array_agg(a.id ORDER BY a.id), array_agg(a.code ORDER BY a.id),
               array_agg(a.currency ORDER BY a.id), array_agg(a.flags ORDER BY a.id),
               array_agg(a.posted ORDER BY a.id), array_agg(a.pending_debits ORDER BY a.id),
               array_agg(a.pending_credits ORDER BY a.id), array_agg(a.entry_seq ORDER BY a.id),
               max(a.last_posted_at)
          INTO account_ids, codes, currencies, flags, posted, pending_debits, pending_credits,
               entry_seqs, accounts_last
          FROM (SELECT * FROM ledger.accounts WHERE id = ANY (p_accounts) ORDER BY id FOR UPDATE) a;

        -- The caller's preferred stripe if it is free (one probe), else the next free one after it, so
        -- concurrent writers spread out; else wait for the preferred one.
        SELECT c.chain, c.seq, c.head_hash, c.last_posted_at INTO chain, chain_seq, chain_hash, chain_last
          FROM ledger.chains c
         WHERE c.chain = p_stripe % 64
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT c.chain, c.seq, c.head_hash, c.last_posted_at INTO chain, chain_seq, chain_hash, chain_last
              FROM ledger.chains c
             ORDER BY c.chain < p_stripe % 64, c.chain
             LIMIT 1
               FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND THEN
            SELECT c.chain, c.seq, c.head_hash, c.last_posted_at INTO chain, chain_seq, chain_hash, chain_last
              FROM ledger.chains c
             WHERE c.chain = p_stripe % 64
               FOR UPDATE;
        END IF;

        posted_at := greatest(clock_timestamp(), accounts_last, chain_last);

        SELECT array_agg(t.key) INTO existing_keys FROM ledger.transactions t WHERE t.key = ANY (p_keys);
    END $$;
