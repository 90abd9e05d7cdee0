"""MedCoT: serve Medical-Diagnosis-COT-Gemma3-270M (research only, not for clinical use)."""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research demo, not for clinical use: this small model can be wrong and must not guide diagnosis or treatment."
)
