"""Reconciliation: our ledger, the gateways and the bank, matched; what differs, worked by hand."""
