"""Policy rules over the rendered resources (see rules.py); ``__main__.py`` is the policy pack."""
