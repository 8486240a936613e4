-- `ledger.post_one`: one transaction in one round trip, what a single posting runs, so that the accounts it
-- locks stay locked for as short a time as possible (the hot-account case). Same rules as the bulk planner in
-- Python (ledger/_plan.py), and the same canonical encoding as ledger/chain.py, built here with to_json()
-- (which escapes strings exactly as Python's json module does) and hashed with sha256(). Refusals write
-- nothing and are returned in `result` rather than raised, leaving the caller's transaction usable. It probes
-- only the partial unique index that applies to a resolution or reversal, updates the locked accounts by
-- primary key, and tries the caller's preferred stripe with one probe first.
--
-- One definition: migration 0002_ledger installs it, and 0007_ledger_write_paths installs it again on
-- databases made before (it replaced a definition with the same rules and slower plans).

CREATE OR REPLACE FUNCTION ledger.post_one(
    p_id uuid, p_key text, p_kind text, p_phase text, p_pending_id uuid, p_reverses_id uuid,
    p_refs jsonb, p_description text, p_accounts uuid[], p_amounts bigint[],
    p_release_accounts uuid[], p_release_amounts bigint[], p_stripe integer,
    OUT result text, OUT bad_account uuid, OUT bad_code text,
    OUT tx_currency text, OUT tx_posted_at timestamptz, OUT tx_chain smallint, OUT tx_seq bigint,
    OUT tx_prev_hash bytea, OUT tx_hash bytea,
    OUT entry_codes text[], OUT entry_seqs bigint[], OUT entry_balances bigint[]
) LANGUAGE plpgsql AS $$
    DECLARE
        ids uuid[];
        a_code text[];
        a_currency text[];
        a_flags integer[];
        a_posted bigint[];
        a_debits bigint[];
        a_credits bigint[];
        a_seq bigint[];
        last_at timestamptz;
        chain_last timestamptz;
        posts boolean := p_phase IN ('posted', 'post_pending');
        i integer;
        j integer;
        amount bigint;
        entries_text text;
        refs_text text;
    BEGIN
        SELECT array_agg(a.id ORDER BY a.id), array_agg(a.code ORDER BY a.id),
               array_agg(a.currency ORDER BY a.id), array_agg(a.flags ORDER BY a.id),
               array_agg(a.posted ORDER BY a.id), array_agg(a.pending_debits ORDER BY a.id),
               array_agg(a.pending_credits ORDER BY a.id), array_agg(a.entry_seq ORDER BY a.id),
               max(a.last_posted_at)
          INTO ids, a_code, a_currency, a_flags, a_posted, a_debits, a_credits, a_seq, last_at
          FROM (SELECT * FROM ledger.accounts x
                 WHERE x.id = ANY (p_accounts || p_release_accounts)
                 ORDER BY x.id
                   FOR UPDATE) a;
        FOR i IN 1 .. cardinality(p_accounts) LOOP
            IF array_position(ids, p_accounts[i]) IS NULL THEN
                result := 'missing';
                bad_account := p_accounts[i];
                RETURN;
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM ledger.transactions t WHERE t.key = p_key) THEN
            result := 'exists';
            RETURN;
        END IF;
        IF p_pending_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM ledger.transactions t WHERE t.pending_id = p_pending_id)
           OR p_reverses_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM ledger.transactions t WHERE t.reverses_id = p_reverses_id) THEN
            result := 'resolved';
            RETURN;
        END IF;
        tx_currency := a_currency[array_position(ids, p_accounts[1])];
        FOR i IN 1 .. cardinality(p_release_accounts) LOOP
            j := array_position(ids, p_release_accounts[i]);
            IF p_release_amounts[i] < 0 THEN
                a_debits[j] := a_debits[j] + p_release_amounts[i];
            ELSE
                a_credits[j] := a_credits[j] - p_release_amounts[i];
            END IF;
        END LOOP;
        entry_codes := '{}';
        entry_seqs := '{}';
        entry_balances := '{}';
        FOR i IN 1 .. cardinality(p_accounts) LOOP
            j := array_position(ids, p_accounts[i]);
            amount := p_amounts[i];
            IF a_currency[j] <> tx_currency THEN
                result := 'currency';
                bad_account := ids[j];
                RETURN;
            END IF;
            IF posts THEN
                a_posted[j] := a_posted[j] + amount;
            ELSIF p_phase = 'pending' THEN
                IF amount < 0 THEN
                    a_debits[j] := a_debits[j] - amount;
                ELSE
                    a_credits[j] := a_credits[j] + amount;
                END IF;
            END IF;
            a_seq[j] := a_seq[j] + 1;
            entry_codes := entry_codes || a_code[j];
            entry_seqs := entry_seqs || a_seq[j];
            entry_balances := entry_balances || a_posted[j];
        END LOOP;
        FOR i IN 1 .. cardinality(p_accounts) LOOP
            j := array_position(ids, p_accounts[i]);
            -- Counters stay within 2^62 and amounts within 2^53, so no sum above can overflow bigint.
            IF abs(a_posted[j]) > 4611686018427387904 OR a_debits[j] > 4611686018427387904
               OR a_credits[j] > 4611686018427387904 THEN
                result := 'overflow';
                bad_account := ids[j];
                bad_code := a_code[j];
                RETURN;
            END IF;
            IF (a_flags[j] & 1 <> 0 AND a_posted[j] - a_debits[j] < 0)
               OR (a_flags[j] & 2 <> 0 AND a_posted[j] + a_credits[j] > 0) THEN
                result := 'insufficient';
                bad_account := ids[j];
                bad_code := a_code[j];
                RETURN;
            END IF;
        END LOOP;

        -- Stripe chosen as in begin_posting.
        SELECT c.chain, c.seq + 1, c.head_hash, c.last_posted_at
          INTO tx_chain, tx_seq, tx_prev_hash, chain_last
          FROM ledger.chains c
         WHERE c.chain = p_stripe % 64
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT c.chain, c.seq + 1, c.head_hash, c.last_posted_at
              INTO tx_chain, tx_seq, tx_prev_hash, chain_last
              FROM ledger.chains c
             ORDER BY c.chain < p_stripe % 64, c.chain
             LIMIT 1
               FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND THEN
            SELECT c.chain, c.seq + 1, c.head_hash, c.last_posted_at
              INTO tx_chain, tx_seq, tx_prev_hash, chain_last
              FROM ledger.chains c
             WHERE c.chain = p_stripe % 64
               FOR UPDATE;
        END IF;
        tx_posted_at := greatest(clock_timestamp(), last_at, chain_last);

        SELECT (SELECT string_agg(format('[%s,%s,%s]', to_json(x.code)::text, x.amount,
                                         to_json(tx_currency)::text), ','
                                  ORDER BY x.code COLLATE "C", x.amount)
                  FROM unnest(entry_codes, p_amounts) AS x(code, amount)),
               (SELECT coalesce(string_agg(to_json(r.key)::text || ':' || to_json(r.value)::text, ','
                                           ORDER BY r.key COLLATE "C"), '')
                  FROM jsonb_each_text(p_refs) AS r(key, value))
          INTO entries_text, refs_text;
        tx_hash := sha256(convert_to(
            '{"chain":' || tx_chain
            || ',"entries":[' || entries_text
            || '],"id":"' || p_id
            || '","key":' || to_json(p_key)::text
            || ',"kind":' || to_json(p_kind)::text
            || ',"phase":' || to_json(p_phase)::text
            || ',"posted_at":"' || to_char(tx_posted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            || '","prev_hash":"' || encode(tx_prev_hash, 'hex')
            || '","references":{' || refs_text
            || '},"related_id":' || coalesce('"' || coalesce(p_pending_id, p_reverses_id) || '"', 'null')
            || ',"seq":' || tx_seq
            || ',"v":' || 1  -- the encoding's version (ledger.chain.FORMAT_VERSION)
            || '}',
            'UTF8'));

        INSERT INTO ledger.transactions
            (id, key, kind, phase, pending_id, reverses_id, currency, refs, description, posted_at, chain, seq,
             prev_hash, hash)
        VALUES (p_id, p_key, p_kind, p_phase, p_pending_id, p_reverses_id, tx_currency, p_refs, p_description,
                tx_posted_at, tx_chain, tx_seq, tx_prev_hash, tx_hash)
        ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            -- Another transaction committed this key while we waited for it.
            result := 'exists';
            RETURN;
        END IF;
        INSERT INTO ledger.entries
            (tx_id, idx, account_id, amount, currency, posted, posted_at, account_seq, balance_after)
        SELECT p_id, (x.ord - 1)::smallint, x.account_id, x.amount, tx_currency, posts, tx_posted_at, x.seq,
               x.balance
          FROM unnest(p_accounts, p_amounts, entry_seqs, entry_balances) WITH ORDINALITY
               AS x(account_id, amount, seq, balance, ord);
        UPDATE ledger.accounts a
           SET posted = a_posted[array_position(ids, a.id)],
               pending_debits = a_debits[array_position(ids, a.id)],
               pending_credits = a_credits[array_position(ids, a.id)],
               entry_seq = a_seq[array_position(ids, a.id)],
               last_posted_at = tx_posted_at
         WHERE a.id = ANY (ids);
        UPDATE ledger.chains c
           SET seq = tx_seq, head_hash = tx_hash, last_posted_at = tx_posted_at
         WHERE c.chain = tx_chain;
        result := 'posted';
    END $$;
