"""The PHI filter: context minimisation, detection, tokenisation, restoration."""

from gateway.phi.compiled import activate

# the modules compiled from these very sources, if built (gateway/phi/compiled.py)
activate(__path__)
