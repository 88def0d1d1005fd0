"""OCI distribution client, authentication and the copy engine."""
