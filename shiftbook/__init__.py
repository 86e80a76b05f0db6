"""shiftbook: compressed CNNs to multiplier-free shift-accumulate hardware."""

__version__ = "0.1.0"
