"""imagent's brain: sessions, the critique loop, prompt expansion, the gallery and front doors.

Nothing heavy is imported here: models, clients and connections are created by entry points.
"""
