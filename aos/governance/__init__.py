"""Governance: policies checked before every agent action, the audit hash chain, who may call
the admin API, and secrets from Key Vault."""
