"""Ledger write paths: index probes only, and the counter guard checked once per statement.

- `ledger.post_one` looked for an earlier resolution of the same pending transaction, or reversal of the
  same transaction, with one `pending_id = $1 OR reverses_id = $2` condition, for which the planner could
  (and, on a table without fresh statistics, did) scan the whole transactions table at every posting. It
  now probes only the partial unique index that applies, and only when the posting resolves or reverses
  something.
- `ledger.post_one` moved the account counters with a join that the planner could turn into a scan of
  every account; it now updates the locked accounts by primary key.
- `ledger.post_one` and `ledger.begin_posting` first try the caller's preferred chain stripe with one
  probe, and search (and sort) the stripes only when another transaction holds it.
- The guard that an account's counters are the running balance of its last entry ran at commit, one
  trigger call per updated account (a thousand calls at the commit of a bulk posting over a thousand
  accounts). It is now one set-based query at the end of each UPDATE of accounts, over the updated rows
  (a transition table). Both writers insert the entries before they move the counters; a write that
  moves the counters first is now refused at once rather than at commit.

Revision ID: 0007_ledger_write_paths
Revises: 0006_audit_reports
Create Date: 2026-11-22 11:00:00
"""

from collections.abc import Sequence

from alembic import context, op

revision: str = "0007_ledger_write_paths"
down_revision: str | Sequence[str] | None = "0006_audit_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POST_ONE = """
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
    END $$

"""

BEGIN_POSTING = """
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
    END $$

"""

COUNTERS_CHECK = """
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
    END $$
"""

COUNTERS_TRIGGER = """
    CREATE TRIGGER accounts_counters_match_entries AFTER UPDATE ON ledger.accounts
        REFERENCING NEW TABLE AS moved
        FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_account_counters()
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER accounts_counters_match_entries ON ledger.accounts")
    for statement in (COUNTERS_CHECK, COUNTERS_TRIGGER, POST_ONE, BEGIN_POSTING):
        op.execute(statement)


def downgrade() -> None:
    """Back to the definitions of 0002_ledger, read from that migration rather than copied here."""
    previous = context.script.get_revision("0002_ledger").module.STATEMENTS
    op.execute("DROP TRIGGER accounts_counters_match_entries ON ledger.accounts")
    for beginning in (
        "CREATE FUNCTION ledger.check_account_counters(",
        "CREATE CONSTRAINT TRIGGER accounts_counters_match_entries ",
        "CREATE FUNCTION ledger.post_one(",
        "CREATE FUNCTION ledger.begin_posting(",
    ):
        (statement,) = [s for s in previous if s.strip().startswith(beginning)]
        op.execute(statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
