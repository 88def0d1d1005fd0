"""The embedded local stack: everything that stands in for AWS on one machine."""
