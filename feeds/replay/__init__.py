"""Replays of recorded feeds as a feed adapter (the pacing: ``ticker/recording/schedule.py``)."""
