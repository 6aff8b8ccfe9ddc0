"""Training with Composer on a CIS mixture: the train entry point, data loaders, callbacks, config checks."""
