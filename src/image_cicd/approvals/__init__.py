"""Approvals: the decision logic, the HTTP endpoint the approval links open, and its pages."""
