"""Replays of recorded feeds: the pure schedule (``schedule.py``) and the feed adapter."""
