"""Ledger: accounts, append-only transactions and entries, striped hash chains, database guards.

Everything lives in the PostgreSQL schema `ledger` so the `ledger` package stays usable on its own.

Guards enforced by the database itself, whatever code writes:
- transactions and entries refuse UPDATE, DELETE and TRUNCATE (history is append-only);
- accounts refuse DELETE and any change of identity (code, currency, kind, flags); only the balance
  counters move, and CHECK constraints keep them within the account's flags;
- the balance counters cannot be set apart from the entries: an account starts at zero, its counters move
  only together with `entry_seq` (i.e. with a new entry), and a DEFERRABLE INITIALLY DEFERRED constraint
  trigger checks at commit that the account's last entry (found with one probe of the entries index by
  account, `last_posted_at` and `entry_seq`) exists and carries `balance_after` = `posted`. An UPDATE of
  `posted` alone is therefore refused; `Ledger.verify_balances` re-adds every account's entries for audits;
- every INSERT statement into entries is checked set-wise (account exists, currencies agree, transaction
  exists); a statement that leaves some transaction unbalanced queues that transaction in
  `ledger.balance_checks`, whose DEFERRABLE INITIALLY DEFERRED constraint trigger re-checks the sum at
  commit and refuses the commit if it is still not zero. Balanced bulk writes therefore pay one set-based
  check per statement instead of one trigger call per row.

Functions used by the `ledger` package: `ledger.post_one` (a whole single posting in one round trip) and
`ledger.begin_posting` (the locks and counters a bulk posting plans against). Hash chains are 64 stripes
(`ledger.chains`); see `ledger/chain.py` for the canonical encoding both sides hash.

Revision ID: 0002_ledger
Revises: 0001_foundation
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_ledger"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHAIN_STRIPES = 64

STATEMENTS = [
    "CREATE SCHEMA IF NOT EXISTS ledger",
    """
    CREATE TABLE ledger.accounts (
        id uuid PRIMARY KEY,
        code text COLLATE "C" NOT NULL,
        currency text NOT NULL,
        kind text NOT NULL,
        flags integer NOT NULL DEFAULT 0,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        posted bigint NOT NULL DEFAULT 0,
        pending_debits bigint NOT NULL DEFAULT 0,
        pending_credits bigint NOT NULL DEFAULT 0,
        entry_seq bigint NOT NULL DEFAULT 0,
        last_posted_at timestamptz NOT NULL DEFAULT '-infinity',
        CONSTRAINT accounts_code_key UNIQUE (code),
        CONSTRAINT accounts_code_check CHECK (length(code) BETWEEN 1 AND 200),
        CONSTRAINT accounts_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
        CONSTRAINT accounts_kind_check
            CHECK (kind IN ('asset', 'liability', 'equity', 'income', 'expense')),
        CONSTRAINT accounts_flags_check CHECK (flags BETWEEN 0 AND 2),
        CONSTRAINT accounts_pending_check CHECK (pending_debits >= 0 AND pending_credits >= 0),
        CONSTRAINT accounts_debits_within_credits CHECK (flags & 1 = 0 OR posted - pending_debits >= 0),
        CONSTRAINT accounts_credits_within_debits CHECK (flags & 2 = 0 OR posted + pending_credits <= 0)
    )
    """,
    """
    CREATE TABLE ledger.chains (
        chain smallint PRIMARY KEY,
        seq bigint NOT NULL DEFAULT 0,
        head_hash bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
        last_posted_at timestamptz NOT NULL DEFAULT '-infinity',
        CONSTRAINT chains_seq_check CHECK (seq >= 0),
        CONSTRAINT chains_head_hash_check CHECK (octet_length(head_hash) = 32)
    )
    """,
    # Writers pick a stripe as `preference % 64` (ledger.begin_posting, ledger.post_one).
    f"INSERT INTO ledger.chains (chain) SELECT generate_series(0, {CHAIN_STRIPES - 1})",
    """
    CREATE TABLE ledger.transactions (
        id uuid PRIMARY KEY,
        key text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        phase text NOT NULL,
        pending_id uuid REFERENCES ledger.transactions (id),
        reverses_id uuid REFERENCES ledger.transactions (id),
        currency text NOT NULL,
        refs jsonb NOT NULL DEFAULT '{}'::jsonb,
        description text NOT NULL DEFAULT '',
        posted_at timestamptz NOT NULL,
        chain smallint NOT NULL,
        seq bigint NOT NULL,
        prev_hash bytea NOT NULL,
        hash bytea NOT NULL,
        CONSTRAINT transactions_key_key UNIQUE (key),
        CONSTRAINT transactions_chain_seq_key UNIQUE (chain, seq),
        CONSTRAINT transactions_key_check CHECK (length(key) BETWEEN 1 AND 200),
        CONSTRAINT transactions_phase_check
            CHECK (phase IN ('posted', 'pending', 'post_pending', 'void_pending')),
        CONSTRAINT transactions_pending_id_check
            CHECK ((phase IN ('post_pending', 'void_pending')) = (pending_id IS NOT NULL)),
        CONSTRAINT transactions_reverses_id_check CHECK (reverses_id IS NULL OR phase = 'posted'),
        CONSTRAINT transactions_seq_check CHECK (seq >= 1),
        CONSTRAINT transactions_hash_check CHECK (octet_length(hash) = 32 AND octet_length(prev_hash) = 32)
    )
    """,
    # One resolution per pending transaction, one reversal per transaction: the race-safe guard.
    """
    CREATE UNIQUE INDEX transactions_pending_id_key ON ledger.transactions (pending_id)
        WHERE pending_id IS NOT NULL
    """,
    """
    CREATE UNIQUE INDEX transactions_reverses_id_key ON ledger.transactions (reverses_id)
        WHERE reverses_id IS NOT NULL
    """,
    "CREATE INDEX transactions_posted_at_idx ON ledger.transactions (posted_at)",
    """
    CREATE TABLE ledger.entries (
        tx_id uuid NOT NULL,
        idx smallint NOT NULL,
        account_id uuid NOT NULL,
        amount bigint NOT NULL,
        currency text NOT NULL,
        posted boolean NOT NULL,
        posted_at timestamptz NOT NULL,
        account_seq bigint NOT NULL,
        balance_after bigint NOT NULL,
        CONSTRAINT entries_pkey PRIMARY KEY (tx_id, idx),
        CONSTRAINT entries_amount_check CHECK (amount <> 0),
        CONSTRAINT entries_idx_check CHECK (idx >= 0)
    )
    """,
    # Serves an account's history in order (keyset pagination) and its balance as of a time: posted_at
    # never decreases along an account's entries, so the last entry at or before t carries the balance.
    """
    CREATE INDEX entries_account_posted_at_idx ON ledger.entries (account_id, posted_at, account_seq)
    """,
    """
    CREATE TABLE ledger.balance_checks (
        tx_id uuid NOT NULL
    )
    """,
    """
    CREATE FUNCTION ledger.refuse_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% on %.% refused: the ledger is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.transactions
        FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change()
    """,
    """
    CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.entries
        FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change()
    """,
    """
    CREATE TRIGGER accounts_not_deleted BEFORE DELETE OR TRUNCATE ON ledger.accounts
        FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change()
    """,
    """
    CREATE TRIGGER chains_not_deleted BEFORE DELETE OR TRUNCATE ON ledger.chains
        FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_history_change()
    """,
    """
    CREATE FUNCTION ledger.refuse_identity_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '%.% %: identity columns are immutable', TG_TABLE_SCHEMA, TG_TABLE_NAME, OLD
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER accounts_identity_immutable BEFORE UPDATE ON ledger.accounts FOR EACH ROW
        WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.code IS DISTINCT FROM NEW.code
              OR OLD.currency IS DISTINCT FROM NEW.currency OR OLD.kind IS DISTINCT FROM NEW.kind
              OR OLD.flags IS DISTINCT FROM NEW.flags OR OLD.created_at IS DISTINCT FROM NEW.created_at
              OR NEW.entry_seq < OLD.entry_seq OR NEW.last_posted_at < OLD.last_posted_at)
        EXECUTE FUNCTION ledger.refuse_identity_change()
    """,
    """
    CREATE FUNCTION ledger.refuse_counter_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger account %: balance counters move only with new entries, through the ledger', NEW.code
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER accounts_start_at_zero BEFORE INSERT ON ledger.accounts FOR EACH ROW
        WHEN (NEW.posted <> 0 OR NEW.pending_debits <> 0 OR NEW.pending_credits <> 0 OR NEW.entry_seq <> 0)
        EXECUTE FUNCTION ledger.refuse_counter_change()
    """,
    # Cheap (evaluated in the WHEN clause, no query): counters never move unless entry_seq does.
    """
    CREATE TRIGGER accounts_counters_move_with_entries BEFORE UPDATE ON ledger.accounts FOR EACH ROW
        WHEN (NEW.entry_seq = OLD.entry_seq
              AND (NEW.posted, NEW.pending_debits, NEW.pending_credits, NEW.last_posted_at)
                  IS DISTINCT FROM (OLD.posted, OLD.pending_debits, OLD.pending_credits, OLD.last_posted_at))
        EXECUTE FUNCTION ledger.refuse_counter_change()
    """,
    # At commit, against the row as it stands then: the entry numbered `entry_seq` is the account's last
    # (posted at `last_posted_at`) and its running balance is the `posted` counter. One probe of
    # entries_account_posted_at_idx per event; the writers insert the entries before they move the counters,
    # but the check being deferred, any statement order within a transaction is judged by its outcome.
    """
    CREATE FUNCTION ledger.check_account_counters() RETURNS trigger LANGUAGE plpgsql AS $$
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
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER accounts_counters_match_entries AFTER UPDATE ON ledger.accounts
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW
        WHEN (NEW.posted IS DISTINCT FROM OLD.posted OR NEW.entry_seq IS DISTINCT FROM OLD.entry_seq)
        EXECUTE FUNCTION ledger.check_account_counters()
    """,
    """
    CREATE TRIGGER chains_forward_only BEFORE UPDATE ON ledger.chains FOR EACH ROW
        WHEN (OLD.chain IS DISTINCT FROM NEW.chain OR NEW.seq < OLD.seq
              OR NEW.last_posted_at < OLD.last_posted_at)
        EXECUTE FUNCTION ledger.refuse_identity_change()
    """,
    # Set-based and per statement: one index probe per distinct account and per transaction, never a
    # trigger call per row. Hash and merge joins are disabled inside it because its plans are cached per
    # session: a plan made for a large COPY chunk while the tables were small would otherwise go on
    # scanning the whole transactions table for every later statement of that session.
    """
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
    END $$
    """,
    """
    CREATE TRIGGER entries_checked AFTER INSERT ON ledger.entries
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_inserted_entries()
    """,
    """
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
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER balance_checks_sum_zero AFTER INSERT ON ledger.balance_checks
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION ledger.check_transaction_balanced()
    """,
    # Locks what a bulk posting needs in one round trip and in a fixed order (accounts by id, then one
    # chain stripe that no other transaction holds), so concurrent postings never deadlock on each other.
    """
    CREATE FUNCTION ledger.begin_posting(
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

        -- Start the search at the caller's preferred stripe so concurrent writers spread out.
        SELECT c.chain, c.seq, c.head_hash, c.last_posted_at INTO chain, chain_seq, chain_hash, chain_last
          FROM ledger.chains c
         ORDER BY c.chain < p_stripe % 64, c.chain
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT c.chain, c.seq, c.head_hash, c.last_posted_at INTO chain, chain_seq, chain_hash, chain_last
              FROM ledger.chains c
             WHERE c.chain = p_stripe % 64
               FOR UPDATE;
        END IF;

        posted_at := greatest(clock_timestamp(), accounts_last, chain_last);

        SELECT array_agg(t.key) INTO existing_keys FROM ledger.transactions t WHERE t.key = ANY (p_keys);
    END $$
    """,
    # One transaction in one round trip: what a single posting runs, so that the accounts it locks stay
    # locked for as short a time as possible (the hot-account case). Same rules as the bulk planner in
    # Python (ledger/_posting.py), and the same canonical encoding as ledger/chain.py, built here with
    # to_json() (which escapes strings exactly as Python's json module does) and hashed with sha256().
    # Refusals write nothing and are returned in `result` rather than raised, leaving the caller's
    # transaction usable.
    """
    CREATE FUNCTION ledger.post_one(
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
        SELECT CASE
                 WHEN EXISTS (SELECT 1 FROM ledger.transactions t WHERE t.key = p_key) THEN 'exists'
                 WHEN EXISTS (SELECT 1 FROM ledger.transactions t
                               WHERE t.pending_id = p_pending_id OR t.reverses_id = p_reverses_id)
                   THEN 'resolved'
               END
          INTO result;
        IF result IS NOT NULL THEN
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

        SELECT c.chain, c.seq + 1, c.head_hash, c.last_posted_at
          INTO tx_chain, tx_seq, tx_prev_hash, chain_last
          FROM ledger.chains c
         ORDER BY c.chain < p_stripe % 64, c.chain
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
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
           SET posted = u.posted, pending_debits = u.debits, pending_credits = u.credits, entry_seq = u.seq,
               last_posted_at = tx_posted_at
          FROM unnest(ids, a_posted, a_debits, a_credits, a_seq) AS u(id, posted, debits, credits, seq)
         WHERE a.id = u.id;
        UPDATE ledger.chains c
           SET seq = tx_seq, head_hash = tx_hash, last_posted_at = tx_posted_at
         WHERE c.chain = tx_chain;
        result := 'posted';
    END $$
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP SCHEMA ledger CASCADE")
