"""Compliance evidence of a region stack (``sovereign evidence``): every control's claims computed
over the plan, the config and the recorded test results, rendered, signed and verified."""
