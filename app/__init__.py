"""BackPath: a FHIR R4 server for low-back-pain care pathways."""

__version__ = "0.1.0"
