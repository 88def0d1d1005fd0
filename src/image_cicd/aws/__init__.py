"""AWS adapters: Step Functions and ECR behind the core's ports, the wiring that builds
the services, a deployed stack as clients see it and the operations on it."""
