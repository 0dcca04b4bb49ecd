"""The PHI filter: context minimisation, detection, tokenisation, restoration."""
