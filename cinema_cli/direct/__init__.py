"""Online directing (`cinema direct`): the film grows shot by shot as lines are typed,
forward in time, watchable as a stream while it is made.

`lines` reads what a line means, `session` makes and commits each shot (and repairs
after a kill), `stream` keeps the HLS stream, `routing` logs each shot's memory, and
`signals` keeps Ctrl-C from landing between a shot's files.
"""
