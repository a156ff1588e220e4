"""Input data for parity and calibration: real photos by default, the model's own preprocessing."""
