-- Browser sign-in. A session is a random token in an HttpOnly cookie; only its SHA-256 is
-- kept. Its CSRF token is sent back by pages with every change. Signing out ends it here,
-- for every server at once. A login in flight (OpenID Connect's authorization code with
-- PKCE) keeps its state, verifier and nonce here for a few minutes, keyed by the state's
-- hash, so any server may take the issuer's answer.
CREATE TABLE onemap.sessions (
    token_hash   bytea PRIMARY KEY,
    principal_id bigint NOT NULL REFERENCES onemap.principals (id),
    csrf         text NOT NULL,
    via          text NOT NULL CHECK (via IN ('oidc', 'key')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz
);
CREATE INDEX sessions_by_principal ON onemap.sessions (principal_id);

CREATE TABLE onemap.logins (
    state_hash bytea PRIMARY KEY,
    verifier   text NOT NULL,
    nonce      text NOT NULL,
    next       text NOT NULL DEFAULT '/',
    created_at timestamptz NOT NULL DEFAULT now()
);
