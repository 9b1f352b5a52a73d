"""Who may do what: principals, credentials, grants and the one policy that decides."""
