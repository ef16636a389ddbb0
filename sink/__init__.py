"""The sink stage: joins frames with their emotions and writes annotated video, events and a window."""
