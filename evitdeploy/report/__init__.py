"""Split by job so each verb imports only what it renders: `rows` (results to rows), `tables` (terminal), `writers` (files)."""
