"""sovereign-llm infrastructure: the Pulumi program, the local stack and the CLI."""
