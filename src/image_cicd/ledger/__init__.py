"""The ledger: the DynamoDB store of promotions, approvals and releases, and its records."""
