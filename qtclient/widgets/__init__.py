"""The windows and widgets; they only talk to the model."""
