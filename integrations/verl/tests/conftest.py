"""The plugin's tests run in the plugin's own environment (integrations/verl/README section of the
root README); the root's ``python -m pytest -q`` never collects them (its testpaths = tests)."""
