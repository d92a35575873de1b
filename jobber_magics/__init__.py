"""IPython extension for jobber (see load_ipython_extension)."""
