"""kubectl-record: record every kubectl invocation."""
__version__ = "0.1.0"
