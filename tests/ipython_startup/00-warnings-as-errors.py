"""Run by every kernel the notebook tests start (the Makefile points IPYTHONDIR at a fresh
profile whose startup folder holds this file): a warning raised from jobber's own modules,
whichever library raises it, fails the cell instead of reaching a user's notebook."""
import warnings

warnings.filterwarnings("error", module=r"jobber(_magics)?(\.|$)")
