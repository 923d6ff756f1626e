"""AOS, the Agent Operating System: perpetual, purpose-driven agents on Azure Functions."""

__version__ = "0.1.0"
