"""The capture stage: sources that decode video into frames, and the process that sends them to the detector."""
