"""sovereign-llm gateway: the PHI boundary between Magento and the models."""
