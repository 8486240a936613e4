-- Revision 0002_ledger: the ledger's tables, in the PostgreSQL schema `ledger` so that the `ledger`
-- package stays usable on its own.

CREATE SCHEMA IF NOT EXISTS ledger;

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
);

CREATE TABLE ledger.chains (
    chain smallint PRIMARY KEY,
    seq bigint NOT NULL DEFAULT 0,
    head_hash bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
    last_posted_at timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT chains_seq_check CHECK (seq >= 0),
    CONSTRAINT chains_head_hash_check CHECK (octet_length(head_hash) = 32)
);

-- Writers pick a stripe as `preference % 64` (ledger.begin_posting, ledger.post_one).
INSERT INTO ledger.chains (chain) SELECT generate_series(0, 63);

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
);

-- One resolution per pending transaction, one reversal per transaction: the race-safe guard.
CREATE UNIQUE INDEX transactions_pending_id_key ON ledger.transactions (pending_id)
    WHERE pending_id IS NOT NULL;

CREATE UNIQUE INDEX transactions_reverses_id_key ON ledger.transactions (reverses_id)
    WHERE reverses_id IS NOT NULL;

CREATE INDEX transactions_posted_at_idx ON ledger.transactions (posted_at);

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
);

-- Serves an account's history in order (keyset pagination) and its balance as of a time: posted_at
-- never decreases along an account's entries, so the last entry at or before t carries the balance.
CREATE INDEX entries_account_posted_at_idx ON ledger.entries (account_id, posted_at, account_seq);

CREATE TABLE ledger.balance_checks (
    tx_id uuid NOT NULL
);
